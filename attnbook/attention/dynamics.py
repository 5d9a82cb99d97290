"""How attention learns: the one-layer model of *Scan and Snap* (Tian et al., 2023, ``tian2023scan``), chapter 23.

A sequence has context tokens ``x_1 .. x_{T-1}``, a query token ``x_T`` (the last one) and a next token
``x_{T+1}`` to predict; there are no positions. A pairwise logit matrix ``Z`` (vocabulary x vocabulary) takes the
place of ``W_Q W_K^T``: the query ``m = x_T`` attends to context token ``x_t`` with weight

    b_t = exp(z_{m, x_t}) / sum_{t'} exp(z_{m, x_t'}),

the attended embedding is normalised, ``f = sum_t b_t u_{x_t}``, ``f~ = f / ||f||``, and the next-token logits are
``Y^T f~``, trained with softmax cross-entropy. ``U`` (rows ``u_l``) is a fixed embedding table; the paper's analysis
takes orthonormal embeddings, and one-hot embeddings (``U = I``, the default here) are its simplest case.

* :func:`token_attention` -- the weights ``b`` (N, T-1);
* :func:`scan_snap_layer` -- the next-token logits (N, M), optionally with ``b``;
* :func:`scan_snap_gradients` -- the closed-form gradients of the mean loss with respect to ``Z`` and ``Y``;
* :func:`expected_attention` and :func:`attention_entropy` -- the population attention of each fact
  ``c_{l|n} ~ P(l | m, n) exp(z_{m l})`` and its entropy;
* :func:`train_scan_snap` -- full-batch gradient descent with two learning rates (``eta_Y`` for ``Y``, ``eta_Z``
  for ``Z``), recording ``Z`` along the way.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "token_attention",
    "scan_snap_layer",
    "scan_snap_gradients",
    "expected_attention",
    "attention_entropy",
    "token_counts",
    "count_attention",
    "ScanSnapRun",
    "train_scan_snap",
]


def _check_inputs(z: Tensor, query: Tensor, context: Tensor, where: str) -> None:
    if not isinstance(z, Tensor) or z.ndim != 2 or z.shape[0] != z.shape[1]:
        raise ValueError(f"{where}: z must be a square (M, M) tensor, got {getattr(z, 'shape', type(z))}")
    if not isinstance(context, Tensor) or context.ndim != 2 or context.shape[1] < 1:
        raise ValueError(f"{where}: context must be (N, T-1) with T-1 >= 1, got {getattr(context, 'shape', None)}")
    if not isinstance(query, Tensor) or query.shape != context.shape[:1]:
        raise ValueError(
            f"{where}: query must be (N,) = {tuple(context.shape[:1])}, got {getattr(query, 'shape', None)}"
        )
    for name, tokens in (("query", query), ("context", context)):
        if tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{where}: {name} must hold integer token ids, got {tokens.dtype}")
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= z.shape[0]):
            raise ValueError(f"{where}: {name} has tokens outside [0, {z.shape[0]}) (the rows of z)")


def _embeddings(embeddings: Tensor | None, z: Tensor, where: str) -> Tensor:
    if embeddings is None:
        return torch.eye(z.shape[0], dtype=z.dtype, device=z.device)  # one-hot: u_l = e_l
    if embeddings.ndim != 2 or embeddings.shape[0] != z.shape[0]:
        raise ValueError(f"{where}: embeddings must be (M, d) with M = {z.shape[0]}, got {tuple(embeddings.shape)}")
    return embeddings


def token_attention(z: Tensor, query: Tensor, context: Tensor) -> Tensor:
    """Scan and Snap's attention of the query token over the context, ``b_t = softmax_t(z_{x_T, x_t})``.

    ``z (M, M)`` pairwise logits; ``query (N,)`` the last tokens ``x_T``; ``context (N, T-1)`` the context tokens.
    Returns ``b (N, T-1)``; each row sums to one. With ``z = 0`` the attention is uniform."""
    _check_inputs(z, query, context, "token_attention")
    scores = z[query[:, None], context]  # (N, T-1): z_{x_T, x_t}
    return scores.softmax(-1)


def scan_snap_layer(
    z: Tensor,
    y: Tensor,
    query: Tensor,
    context: Tensor,
    embeddings: Tensor | None = None,
    need_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The one-layer model: ``f = sum_t b_t u_{x_t}``, ``logits = Y^T f / ||f||``.

    ``z (M, M)``; ``y (d, M)`` the decoder; ``query (N,)``, ``context (N, T-1)`` token ids; ``embeddings (M, d)``
    the rows ``u_l`` (default one-hot, ``d = M``). Returns ``logits (N, M)``, and ``b (N, T-1)`` if
    ``need_weights``."""
    _check_inputs(z, query, context, "scan_snap_layer")
    u = _embeddings(embeddings, z, "scan_snap_layer")
    if y.ndim != 2 or y.shape != (u.shape[1], z.shape[0]):
        raise ValueError(f"scan_snap_layer: y must be (d, M) = ({u.shape[1]}, {z.shape[0]}), got {tuple(y.shape)}")
    b = token_attention(z, query, context)  # (N, T-1)
    f = torch.einsum("nt,ntd->nd", b, u[context])  # (N, d)
    logits = (f / f.norm(dim=-1, keepdim=True)) @ y  # (N, M)
    return (logits, b) if need_weights else logits


def scan_snap_gradients(
    z: Tensor, y: Tensor, query: Tensor, context: Tensor, target: Tensor, embeddings: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Closed-form gradients of the mean cross-entropy of :func:`scan_snap_layer` (chapter 23, eq. ``eq-grad-z``).

    With ``g = softmax(logits) - e_{x_{T+1}}`` per sequence, ``f~ = f / ||f||`` and
    ``g_f = (I - f~ f~^T) Y g / ||f||``::

        dL/dY        = mean_n f~ g^T                                   (d, M)
        dL/dz_{m l}  = mean_n 1[x_T = m] sum_t 1[x_t = l] b_t (u_l - f) . g_f   (M, M)

    Returns ``(grad_z (M, M), grad_y (d, M))``; ``target (N,)`` holds the next tokens."""
    logits, b = scan_snap_layer(z, y, query, context, embeddings, need_weights=True)
    if target.shape != query.shape:
        raise ValueError(f"scan_snap_gradients: target must be (N,) = {tuple(query.shape)}, got {tuple(target.shape)}")
    u = _embeddings(embeddings, z, "scan_snap_gradients")
    n = len(query)
    g = logits.softmax(-1) - torch.nn.functional.one_hot(target, z.shape[0]).to(z.dtype)  # (N, M)
    u_ctx = u[context]  # (N, T-1, d)
    f = torch.einsum("nt,ntd->nd", b, u_ctx)  # (N, d)
    norm = f.norm(dim=-1, keepdim=True)  # (N, 1)
    f_unit = f / norm
    grad_y = f_unit.T @ g / n  # (d, M)
    h = g @ y.T  # (N, d): dL/df~
    g_f = (h - (h * f_unit).sum(-1, keepdim=True) * f_unit) / norm  # (N, d): dL/df
    g_score = b * torch.einsum("ntd,nd->nt", u_ctx - f[:, None], g_f)  # (N, T-1): dL/dz_{x_T, x_t}
    grad_z = torch.zeros_like(z)
    grad_z.index_put_((query[:, None].expand_as(context), context), g_score / n, accumulate=True)
    return grad_z, grad_y


def expected_attention(z: Tensor, probs: Tensor, query: Tensor) -> Tensor:
    """The population attention of each fact: ``c_{l|n} = P(l|m,n) exp(z_{m l}) / sum_l' P(l'|m,n) exp(z_{m l'})``.

    For long contexts, token ``l`` appears in a fraction ``P(l|m,n)`` of the positions, so ``c_{l|n}`` is the total
    weight ``b`` puts on all copies of ``l``. ``z (M, M)``; ``probs (F, M)`` the context distributions; ``query
    (F,)`` each fact's query token; ``z`` may carry leading axes (a recorded run, ``(S, M, M)``). Returns
    ``c (..., F, M)``, rows summing to one."""
    if probs.ndim != 2 or probs.shape[1] != z.shape[-1] or query.shape != probs.shape[:1]:
        raise ValueError(
            f"expected_attention: need probs (F, M) with M = {z.shape[-1]} and query (F,), "
            f"got {tuple(probs.shape)} and {tuple(query.shape)}"
        )
    logits = z[..., query, :] + probs.log()  # (..., F, M); log 0 = -inf drops absent tokens
    return logits.softmax(-1)


def attention_entropy(c: Tensor) -> Tensor:
    """Entropy in nats of attention distributions along the last axis (``0 log 0 = 0``): ``(..., M) -> (...)``."""
    if (c < 0).any():
        raise ValueError("attention_entropy: c must be non-negative")
    return -torch.special.xlogy(c, c).sum(-1)


def token_counts(context: Tensor, vocab_size: int) -> Tensor:
    """How often each token occurs in each context: ``context (N, T-1) -> counts (N, M)`` (float64)."""
    if context.ndim != 2 or context.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"token_counts: context must be integer (N, T-1), got {context.dtype} {tuple(context.shape)}")
    if context.numel() and (context.min() < 0 or context.max() >= vocab_size):
        raise ValueError(f"token_counts: context has tokens outside [0, {vocab_size})")
    counts = torch.zeros(len(context), vocab_size, dtype=torch.float64)
    return counts.scatter_add_(1, context.long(), torch.ones_like(context, dtype=torch.float64))


def count_attention(z: Tensor, query: Tensor, counts: Tensor) -> Tensor:
    """The attention summed over the copies of each token, ``a_l = n_l exp(z_{m l}) / sum_l' n_l' exp(z_{m l'})``.

    Without positions, ``b_t`` depends only on the token ``x_t``, so a context is its token counts ``n (N, M)`` and
    the layer costs ``O(M)`` per sequence, not ``O(T)``. With one-hot embeddings ``a`` *is* ``f``.
    ``z (M, M)``, ``query (N,)``, ``counts (N, M)``; returns ``a (N, M)``, rows summing to one."""
    if counts.ndim != 2 or counts.shape != (len(query), z.shape[0]) or (counts < 0).any():
        raise ValueError(
            f"count_attention: counts must be non-negative (N, M) = ({len(query)}, {z.shape[0]}), "
            f"got {tuple(counts.shape)}"
        )
    if (counts.sum(-1) <= 0).any():
        raise ValueError("count_attention: every context needs at least one token (a row of counts sums to 0)")
    return (z[query] + counts.log()).softmax(-1)  # log 0 = -inf: absent tokens get no weight


def _count_gradients(
    z: Tensor, y: Tensor, query: Tensor, counts: Tensor, target: Tensor, u: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Loss and gradients of the mean cross-entropy in the count form (one-hot or general embeddings ``u``)."""
    a = count_attention(z, query, counts)  # (N, M): weight on each token
    f = a @ u  # (N, d)
    norm = f.norm(dim=-1, keepdim=True)
    f_unit = f / norm
    logits = f_unit @ y  # (N, M)
    loss = torch.nn.functional.cross_entropy(logits, target)
    g = logits.softmax(-1)
    g[torch.arange(len(target)), target] -= 1.0  # (N, M): p - e_{x_{T+1}}
    n = len(target)
    h = g @ y.T  # (N, d)
    g_f = (h - (h * f_unit).sum(-1, keepdim=True) * f_unit) / norm  # (N, d)
    g_score = a * (g_f @ u.T - (f * g_f).sum(-1, keepdim=True))  # (N, M): a_l (u_l - f) . g_f
    grad_z = torch.zeros_like(z).index_add_(0, query, g_score / n)
    return loss, grad_z, f_unit.T @ g / n


class ScanSnapRun(NamedTuple):
    """A training run: ``z (S, M, M)`` and ``y (S, d, M)`` recorded at ``steps (S,)``; ``loss (num_steps,)``."""

    z: Tensor
    y: Tensor
    steps: Tensor
    loss: Tensor


def train_scan_snap(
    query: Tensor,
    context: Tensor,
    target: Tensor,
    vocab_size: int,
    lr_z: float,
    lr_y: float,
    num_steps: int,
    record_every: int = 1,
    embeddings: Tensor | None = None,
) -> ScanSnapRun:
    """Full-batch gradient descent on the mean cross-entropy, ``Z -= lr_z dL/dZ`` and ``Y -= lr_y dL/dY``, from
    ``Z = 0`` (uniform attention) and ``Y = 0``, in float64, with the gradients of :func:`scan_snap_gradients`
    computed in the count form (:func:`count_attention`). Records ``Z`` and ``Y`` every ``record_every`` steps
    (and at step 0 and at the end); ``loss[s]`` is the loss before update ``s + 1``."""
    if lr_z < 0 or lr_y < 0:
        raise ValueError(f"train_scan_snap: learning rates must be >= 0, got lr_z={lr_z}, lr_y={lr_y}")
    if num_steps < 1 or record_every < 1:
        raise ValueError(f"train_scan_snap: num_steps and record_every must be >= 1, got {num_steps}, {record_every}")
    z = torch.zeros(vocab_size, vocab_size, dtype=torch.float64)
    _check_inputs(z, query, context, "train_scan_snap")
    if target.shape != query.shape:
        raise ValueError(f"train_scan_snap: target must be (N,) = {tuple(query.shape)}, got {tuple(target.shape)}")
    u = _embeddings(embeddings, z, "train_scan_snap").to(torch.float64)
    y = torch.zeros(u.shape[1], vocab_size, dtype=torch.float64)
    counts = token_counts(context, vocab_size)  # (N, M)
    zs, ys, steps, losses = [z.clone()], [y.clone()], [0], []
    for step in range(1, num_steps + 1):
        loss, grad_z, grad_y = _count_gradients(z, y, query, counts, target, u)
        losses.append(loss.item())
        z -= lr_z * grad_z
        y -= lr_y * grad_y
        if step % record_every == 0 or step == num_steps:
            zs.append(z.clone())
            ys.append(y.clone())
            steps.append(step)
    return ScanSnapRun(torch.stack(zs), torch.stack(ys), torch.tensor(steps), torch.tensor(losses, dtype=torch.float64))
