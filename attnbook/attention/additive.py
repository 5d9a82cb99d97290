"""Additive (Bahdanau) attention, as a pluggable score part and as a module (chapter 02).

Mechanism (*Neural Machine Translation by Jointly Learning to Align and Translate*, 2015,
:cite:`bahdanau2015neural`): a query ``q_i`` scores every key ``k_j`` with a one-hidden-layer network,

.. math::  e_{ij} = v^\\top \\tanh(W_1 k_j + W_2 q_i), \\qquad
           \\alpha_{ij} = \\operatorname{softmax}_j(e_{ij}), \\qquad c_i = \\sum_j \\alpha_{ij} v_j .

Shapes: ``query (B, T_q, D_q)`` (or ``(B, D_q)`` for one decoder step), ``keys (B, T_k, D_k)``,
``values (B, T_k, D_v)``, ``W_2: D_q -> A``, ``W_1: D_k -> A``, ``v: (A,)`` with ``A`` the attention
width; ``weights (B, T_q, T_k)``, ``context (B, T_q, D_v)``. Pointer Networks
(:cite:`vinyals2015pointer`, 2015) use ``alpha_i`` itself as the output distribution over inputs.

The book's design: the score is a :class:`~attnbook.attention.core.Scores` part, :class:`AdditiveScores`,
which works on queries and keys already projected to width ``A`` (``v^T tanh(q'_i + k'_j)``), so
``AttentionCore(scores=AdditiveScores(A))`` -- or multi-head additive attention,
``MultiHeadAttention(E, H, core=AttentionCore(scores=AdditiveScores(E // H)))`` -- needs no new pipeline.
:class:`AdditiveAttention` owns the projections ``W_1, W_2`` and calls the core; :func:`additive_attention`
is the same computation with explicit weight tensors.

Masks: boolean, ``True`` = may attend, in two arguments whose shapes cannot be confused:

* ``mask`` broadcasts (aligned from the right, as every mask in the book) to the weights' shape:
  ``(B, T_q, T_k)`` for a query ``(B, T_q, D_q)``, so a 2-D mask is always ``(T_q, T_k)`` (e.g. causal),
  whatever the batch size; for a single-step query ``(B, D_q)`` the weights are ``(B, T_k)`` and so is the mask.
* ``key_mask (B, T_k)``: which keys of each batch element are real (``False`` = padding), shared by all
  queries. Note the polarity: PyTorch's ``key_padding_mask`` is ``True`` at padding; this is ``True`` at keys.

Both may be given; a key is attended where both are ``True``. A 2-D ``mask`` of shape ``(B, T_k)`` that is
not an ``(T_q, T_k)`` mask raises a ``ValueError`` pointing to ``key_mask=`` (earlier versions read it as a
key mask, silently and wrongly so whenever ``B == T_q``).
A query that sees no key gets all-zero weights and a zero context, never NaN.

Cost: the ``tanh`` is taken on a ``(B, T_q, T_k, A)`` tensor, ``A`` times the memory of the
``(B, T_q, T_k)`` logits that dot-product attention needs -- the price of the extra hidden layer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnbook.attention.core import AttentionCore, Scores
from attnbook.attention.functional import check_input_dtype, masked_softmax

__all__ = ["AdditiveScores", "AdditiveAttention", "additive_attention", "additive_logits"]


def _check_tensor(name: str, t: object, ndims: tuple[int, ...], where: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{where}: {name} must be a floating tensor, got dtype {t.dtype}")
    if t.ndim not in ndims:
        raise ValueError(f"{where}: {name} must have {' or '.join(map(str, ndims))} dims, got shape {tuple(t.shape)}")
    return t


def additive_logits(query: Tensor, keys: Tensor, v: Tensor) -> Tensor:
    """``e_ij = v^T tanh(query_i + keys_j)`` for queries and keys already projected to the attention width ``A``.

    Args:
        query: ``(..., T_q, A)``.
        keys: ``(..., T_k, A)``.
        v: ``(A,)``.

    Returns:
        logits ``(..., T_q, T_k)``.
    """
    hidden = torch.tanh(query.unsqueeze(-2) + keys.unsqueeze(-3))  # (..., T_q, T_k, A)
    return hidden @ v  # (..., T_q, T_k)


class AdditiveScores(Scores):
    """The additive score as a pluggable part of :class:`~attnbook.attention.core.AttentionCore`.

    ``scores(q, k) = v^T tanh(q_i + k_j)`` on projected heads ``q (B, H, T_q, A)``, ``k (B, H, T_k, A)``,
    giving ``(B, H, T_q, T_k)``. Bahdanau et al., 2015 (:cite:`bahdanau2015neural`), eq. ``e = v^T tanh(W s + U h)``
    with the projections ``W, U`` done before the core (as multi-head attention projects before the core).

    Args:
        hidden_dim: the attention width ``A`` (the size of ``v``).
    """

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        if not isinstance(hidden_dim, int) or hidden_dim <= 0:
            raise ValueError(f"AdditiveScores: hidden_dim must be a positive int, got {hidden_dim!r}")
        self.hidden_dim = hidden_dim
        self.v = nn.Parameter(torch.empty(hidden_dim))
        nn.init.uniform_(self.v, -(hidden_dim**-0.5), hidden_dim**-0.5)

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        if q.shape[-1] != self.hidden_dim or k.shape[-1] != self.hidden_dim:
            raise ValueError(
                f"AdditiveScores: q and k must have last dim hidden_dim={self.hidden_dim}, "
                f"got q{tuple(q.shape)} and k{tuple(k.shape)}"
            )
        return additive_logits(q, k, self.v)  # (B, H, T_q, T_k)


def _check_bool(name: str, mask: object, where: str) -> Tensor:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{where}: {name} must be a bool tensor (True = attend), got dtype {mask.dtype}")
    return mask


def _normalise_mask(
    mask: Tensor | None, key_mask: Tensor | None, B: int, T_q: int, T_k: int, single: bool, where: str
) -> Tensor | None:
    """``mask`` and ``key_mask`` combined into one boolean mask that broadcasts to ``(B, T_q, T_k)``.

    ``mask`` broadcasts to the weights' shape: ``(B, T_q, T_k)``, or ``(B, T_k)`` for a single-step query
    (``single``, where ``T_q == 1``); ``key_mask`` is ``(B, T_k)``.
    """
    combined = None
    if mask is not None:
        mask = _check_bool("mask", mask, where)
        target = (B, T_k) if single else (B, T_q, T_k)
        try:
            ok = mask.ndim <= len(target) and torch.broadcast_shapes(mask.shape, target) == target
        except RuntimeError:
            ok = False
        if not ok:
            hint = ""
            if not single and tuple(mask.shape) == (B, T_k):
                hint = (
                    f"; a 2-D mask is (T_q, T_k) = ({T_q}, {T_k}): for a mask of the keys of each batch element, "
                    "(B, T_k), pass key_mask= instead"
                )
            raise ValueError(
                f"{where}: mask of shape {tuple(mask.shape)} must broadcast to the weights' shape "
                f"{'(B, T_k)' if single else '(B, T_q, T_k)'} = {target}{hint}"
            )
        combined = mask[..., None, :] if single and mask.ndim == 2 else mask  # (B, 1, T_k) for one step
    if key_mask is not None:
        key_mask = _check_bool("key_mask", key_mask, where)
        if tuple(key_mask.shape) != (B, T_k):
            raise ValueError(f"{where}: key_mask of shape {tuple(key_mask.shape)} must be (B, T_k) = ({B}, {T_k})")
        key_mask = key_mask[:, None, :]  # (B, 1, T_k)
        combined = key_mask if combined is None else combined & key_mask
    return combined


def _check_inputs(query: Tensor, keys: Tensor, values: Tensor, where: str) -> tuple[Tensor, bool]:
    """Validate and return the query as ``(B, T_q, D_q)`` plus whether it was a single step ``(B, D_q)``."""
    _check_tensor("query", query, (2, 3), where)
    _check_tensor("keys", keys, (3,), where)
    _check_tensor("values", values, (3,), where)
    single = query.ndim == 2
    query = query[:, None, :] if single else query  # (B, T_q, D_q)
    if not (query.dtype == keys.dtype == values.dtype):
        raise TypeError(
            f"{where}: query, keys, values must share a dtype, got {query.dtype}, {keys.dtype}, {values.dtype}"
        )
    if query.shape[0] != keys.shape[0] or keys.shape[0] != values.shape[0]:
        raise ValueError(
            f"{where}: batch sizes differ: query{tuple(query.shape)}, keys{tuple(keys.shape)}, "
            f"values{tuple(values.shape)}"
        )
    if keys.shape[1] != values.shape[1]:
        raise ValueError(
            f"{where}: keys and values must have the same length T_k, got {tuple(keys.shape)} and {tuple(values.shape)}"
        )
    if keys.shape[1] == 0 or query.shape[1] == 0:
        raise ValueError(f"{where}: empty sequence: query{tuple(query.shape)}, keys{tuple(keys.shape)}")
    return query, single


def additive_attention(
    query: Tensor,
    keys: Tensor,
    values: Tensor,
    W_q: Tensor,
    W_k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    key_mask: Tensor | None = None,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Additive attention with explicit weights: ``softmax_j(v^T tanh(W_k k_j + W_q q_i + b)) @ values``.

    Args:
        query: ``(B, T_q, D_q)`` or ``(B, D_q)``.
        keys: ``(B, T_k, D_k)``.
        values: ``(B, T_k, D_v)``.
        W_q: ``(A, D_q)`` (Bahdanau's ``W_a``, the paper's ``W_2`` in Pointer Networks).
        W_k: ``(A, D_k)`` (Bahdanau's ``U_a``, ``W_1`` in Pointer Networks).
        v: ``(A,)``.
        mask: bool, ``True`` = attend; broadcastable to the weights, ``(B, T_q, T_k)`` (so a 2-D mask is
            ``(T_q, T_k)``), or ``(B, T_k)`` for a 2-D query.
        key_mask: bool ``(B, T_k)``, ``True`` = a real key (``False``: padding), for every query.
        bias: optional ``(A,)`` added inside the ``tanh``.

    Returns:
        ``(context (B, T_q, D_v), weights (B, T_q, T_k))``; without the ``T_q`` dim for a 2-D query.
    """
    where = "additive_attention"
    query, single = _check_inputs(query, keys, values, where)
    B, T_q, D_q = query.shape
    T_k, D_k = keys.shape[1], keys.shape[2]
    _check_tensor("v", v, (1,), where)
    A = v.shape[0]
    for name, w, shape in (("W_q", W_q, (A, D_q)), ("W_k", W_k, (A, D_k))):
        _check_tensor(name, w, (2,), where)
        if tuple(w.shape) != shape:
            raise ValueError(
                f"{where}: {name} must have shape {shape} = (A, D) to match v{tuple(v.shape)}, "
                f"query{tuple(query.shape)}, keys{tuple(keys.shape)}; got {tuple(w.shape)}"
            )
    if bias is not None and tuple(bias.shape) != (A,):
        raise ValueError(f"{where}: bias must have shape ({A},), got {tuple(bias.shape)}")
    mask = _normalise_mask(mask, key_mask, B, T_q, T_k, single, where)
    q_proj = query @ W_q.T  # (B, T_q, A)
    k_proj = keys @ W_k.T  # (B, T_k, A)
    if bias is not None:
        k_proj = k_proj + bias
    logits = additive_logits(q_proj, k_proj, v)  # (B, T_q, T_k)
    weights = masked_softmax(logits, mask)  # (B, T_q, T_k)
    context = weights @ values  # (B, T_q, D_v)
    if single:
        return context[:, 0], weights[:, 0]
    return context, weights


class AdditiveAttention(nn.Module):
    """Additive (Bahdanau) attention :cite:`bahdanau2015neural`: ``e_ij = v^T tanh(W_k k_j + W_q q_i + b)``.

    The projections live here; the score is the :class:`AdditiveScores` part of an
    :class:`~attnbook.attention.core.AttentionCore` (one head), which normalises with a masked softmax.

    Args:
        query_dim: ``D_q``, width of the queries (e.g. the decoder state).
        key_dim: ``D_k``, width of the keys (e.g. the encoder states).
        hidden_dim: ``A``, the attention width.
        bias: a bias ``b`` inside the ``tanh`` (on the key projection).

    ``forward(query (B, T_q, D_q) or (B, D_q), keys (B, T_k, D_k), values (B, T_k, D_v) = keys, mask=None,
    key_mask=None)`` returns ``(context (B, T_q, D_v), weights (B, T_q, T_k))`` (no ``T_q`` dim for a 2-D
    query). ``mask`` broadcasts to the weights (a 2-D mask is ``(T_q, T_k)``); ``key_mask (B, T_k)`` marks
    each batch element's real keys (see the module docstring).
    :meth:`logits` gives the raw scores, which a pointer head normalises itself.
    """

    def __init__(self, query_dim: int, key_dim: int, hidden_dim: int, *, bias: bool = True) -> None:
        super().__init__()
        for name, value in (("query_dim", query_dim), ("key_dim", key_dim), ("hidden_dim", hidden_dim)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"AdditiveAttention: {name} must be a positive int, got {value!r}")
        self.query_dim, self.key_dim, self.hidden_dim = query_dim, key_dim, hidden_dim
        self.W_q = nn.Linear(query_dim, hidden_dim, bias=False)
        self.W_k = nn.Linear(key_dim, hidden_dim, bias=bias)
        self.core = AttentionCore(scores=AdditiveScores(hidden_dim))

    @property
    def v(self) -> nn.Parameter:
        """The score vector ``v (A,)``, held by the core's :class:`AdditiveScores` part."""
        return self.core.scores.v

    def _check_widths(self, query: Tensor, keys: Tensor) -> None:
        if query.shape[-1] != self.query_dim or keys.shape[-1] != self.key_dim:
            raise ValueError(
                f"AdditiveAttention: query must end in query_dim={self.query_dim} and keys in key_dim="
                f"{self.key_dim}, got query{tuple(query.shape)} and keys{tuple(keys.shape)}"
            )

    def logits(self, query: Tensor, keys: Tensor) -> Tensor:
        """Unnormalised scores ``e (B, T_q, T_k)`` (``(B, T_k)`` for a 2-D query): the pointer's logits."""
        where = "AdditiveAttention.logits"
        _check_tensor("query", query, (2, 3), where)
        _check_tensor("keys", keys, (3,), where)
        self._check_widths(query, keys)
        single = query.ndim == 2
        q = self.W_q(query[:, None] if single else query)  # (B, T_q, A)
        e = self.core.scores(q, self.W_k(keys))  # (B, T_q, T_k)
        return e[:, 0] if single else e

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        values: Tensor | None = None,
        mask: Tensor | None = None,
        *,
        key_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        values = keys if values is None else values
        where = "AdditiveAttention"
        query3, single = _check_inputs(query, keys, values, where)
        self._check_widths(query3, keys)
        check_input_dtype(self, where, query=query3, keys=keys, values=values)
        B, T_q, T_k = query3.shape[0], query3.shape[1], keys.shape[1]
        mask = _normalise_mask(mask, key_mask, B, T_q, T_k, single, where)
        q = self.W_q(query3)[:, None]  # (B, 1, T_q, A): one head
        k = self.W_k(keys)[:, None]  # (B, 1, T_k, A)
        core_mask = None if mask is None else mask.expand(B, T_q, T_k)[:, None]  # (B, 1, T_q, T_k)
        context, weights = self.core(q, k, values[:, None], core_mask, need_weights=True)
        context, weights = context[:, 0], weights[:, 0]  # (B, T_q, D_v), (B, T_q, T_k)
        if single:
            return context[:, 0], weights[:, 0]
        return context, weights
