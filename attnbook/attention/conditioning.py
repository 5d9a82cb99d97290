"""Conditioning with cross-attention: the parts that let one stream of tokens steer another (ch. 18).

* :func:`reference_attention` / :class:`ReferenceAttention` -- self-attention whose keys and values also hold a
  second image's tokens, ``softmax(Q [K; K_ref]^T / sqrt(d) + bias) [V; V_ref]`` (IDM-VTON's garment fusion,
  :cite:`choi2024improving`; DreamTuner's self-subject attention, :cite:`hua2023dreamtuner`; Dual Cross-Attention
  Learning's pair-wise cross-attention, :cite:`zhu2022dual`, is the same operation with the paired image).
* :class:`DecoupledCrossAttention` -- IP-Adapter style cross-attention: separate key/value projections for image
  tokens, the two attention outputs added with a scale (IDM-VTON's image-prompt branch).
* :func:`region_attention_loss` -- attention-region supervision that keeps subjects apart (MultiCrafter,
  :cite:`wu2025multicrafter`; a reconstruction).
* :func:`global_local_cross_attention` -- Dual Cross-Attention Learning's global-local cross-attention, which ranks
  patches by the class token's row of the attention rollout (:func:`attnbook.attention.rollout.attention_rollout`).
* :func:`proxy_affinity_attention`, :func:`splice_then_aggregate` -- ProxyCLIP's affinity attention and Trident's
  splice-then-aggregate step :cite:`shi2024harnessing` (the global step is a reconstruction).
* :func:`closed_form_edit` -- the regularised least-squares edit of one projection used by Diff-QuickFix
  :cite:`basu2023localizing` (a reconstruction).

Shapes: functions on split heads take ``q (B, H, T_q, d)``, ``k, v (B, H, T_k, d)``; modules take ``(B, T, D)``.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.core import MultiHeadAttention
from attnbook.attention.functional import check_mask, check_qkv, masked_softmax, scaled_dot_product_attention
from attnbook.attention.masks import to_additive

__all__ = [
    "reference_attention",
    "ReferenceAttention",
    "DecoupledCrossAttention",
    "region_attention_loss",
    "global_local_cross_attention",
    "proxy_affinity_attention",
    "splice_then_aggregate",
    "closed_form_edit",
]


def _check_tensor(name: str, t: object, ndim: int, where: str) -> Tensor:
    if not isinstance(t, Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != ndim:
        raise ValueError(f"{where}: {name} must be {ndim}-D, got shape {tuple(t.shape)}")
    return t


def reference_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    k_ref: Tensor,
    v_ref: Tensor,
    ref_bias: Tensor | None = None,
    *,
    need_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention whose keys and values are the own tokens' followed by a reference's.

    ``out = softmax(q [k; k_ref]^T / sqrt(d) + [0, ref_bias]) [v; v_ref]``: one softmax over ``T_k + T_r`` keys,
    so the reference competes with the image itself for every query's weight (IDM-VTON, DreamTuner, DCAL's PWCA).

    Args:
        q: ``(B, H, T_q, d)``; k, v: ``(B, H, T_k, d)``, ``(B, H, T_k, d_v)``, the own keys and values.
        k_ref, v_ref: ``(B, H, T_r, d)``, ``(B, H, T_r, d_v)``, the reference's keys and values.
        ref_bias: optional mask on the reference keys, broadcastable to ``(B, H, T_q, T_r)`` (e.g.
            ``(B, 1, 1, T_r)``): additive logits of the query dtype (DreamTuner's foreground weighting is
            ``log(weight)`` there, ``-inf`` drops a key) or bool (``True`` = may attend).
        need_weights: also return the weights ``(B, H, T_q, T_k + T_r)``.
    """
    check_qkv(q, k, v, name="reference_attention")
    check_qkv(q, k_ref, v_ref, name="reference_attention (k = k_ref, v = v_ref)")
    if k_ref.shape[:-2] != k.shape[:-2] or v_ref.shape[-1] != v.shape[-1]:
        raise ValueError(
            f"reference_attention: k_ref{tuple(k_ref.shape)}/v_ref{tuple(v_ref.shape)} must match the batch and head "
            f"dims of k{tuple(k.shape)} and the value width of v{tuple(v.shape)}"
        )
    keys = torch.cat([k, k_ref], dim=-2)  # (B, H, T_k + T_r, d)
    values = torch.cat([v, v_ref], dim=-2)  # (B, H, T_k + T_r, d_v)
    mask = None
    if ref_bias is not None:
        shape = (*q.shape[:-1], k_ref.shape[-2])
        check_mask(ref_bias, shape, q.dtype, name="reference_attention: ref_bias")
        own = torch.zeros(*q.shape[:-1], k.shape[-2], dtype=q.dtype, device=q.device)  # (B, H, T_q, T_k)
        mask = torch.cat([own, to_additive(ref_bias, q.dtype).expand(shape)], dim=-1)  # (B, H, T_q, T_k + T_r)
    return scaled_dot_product_attention(q, keys, values, mask, need_weights=need_weights)


class ReferenceAttention(nn.Module):
    """Self-attention with a reference image's tokens joining the keys and values (shared projections).

    ``out = W_O softmax(X W_Q ([X; R] W_K)^T / sqrt(d) + bias) [X; R] W_V``, returned for the ``T`` rows of ``X``:
    IDM-VTON's garment fusion computes self-attention over the concatenation ``[X; G]`` and keeps the first ``T``
    rows, which is this (the reference rows' own outputs are never used). With ``reference=None`` it is plain
    self-attention, so a trained self-attention layer gains a reference without new weights.

    Args:
        embed_dim, num_heads: as :class:`~attnbook.attention.core.MultiHeadAttention` (whose weights it owns as
            ``self.attn``).
    """

    def __init__(self, embed_dim: int, num_heads: int, *, bias: bool = True) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(embed_dim, num_heads, bias=bias)

    def forward(
        self,
        x: Tensor,
        reference: Tensor | None = None,
        reference_bias: Tensor | None = None,
        *,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """``x (B, T, D)``, ``reference (B, T_r, D)``, ``reference_bias (B, T_r)`` additive logits (e.g. the log
        of a foreground weight) -> ``(out (B, T, D), weights (B, T, T + T_r) averaged over heads, or None)``."""
        _check_tensor("x", x, 3, "ReferenceAttention")
        if reference is None:
            if reference_bias is not None:
                raise ValueError("ReferenceAttention: reference_bias needs a reference")
            return self.attn(x, need_weights=need_weights)
        _check_tensor("reference", reference, 3, "ReferenceAttention")
        if reference.shape[0] != x.shape[0] or reference.shape[2] != x.shape[2]:
            raise ValueError(
                f"ReferenceAttention: reference must be (B, T_r, D) with B, D of x{tuple(x.shape)}, "
                f"got {tuple(reference.shape)}"
            )
        context = torch.cat([x, reference], dim=1)  # (B, T + T_r, D)
        mask = None
        if reference_bias is not None:
            _check_tensor("reference_bias", reference_bias, 2, "ReferenceAttention")
            if reference_bias.shape != reference.shape[:2]:
                raise ValueError(
                    f"ReferenceAttention: reference_bias must have shape (B, T_r)={tuple(reference.shape[:2])}, "
                    f"got {tuple(reference_bias.shape)}"
                )
            own = torch.zeros(x.shape[:2], dtype=x.dtype, device=x.device)  # (B, T)
            mask = torch.cat([own, reference_bias.to(x.dtype)], dim=1)[:, None, :]  # (B, 1, T + T_r)
            mask = mask.expand(x.shape[0], x.shape[1], context.shape[1])  # (B, T, T + T_r)
        return self.attn(x, context, attn_mask=mask, need_weights=need_weights)


class DecoupledCrossAttention(nn.Module):
    """IP-Adapter style decoupled cross-attention: text and image tokens get their own keys and values.

    ``out = W_O [softmax(Q K_t^T / sqrt(d)) V_t + scale * softmax(Q K_i^T / sqrt(d)) V_i]`` with ``Q = X W_Q``,
    ``K_t = C_t W_K``, ``V_t = C_t W_V`` (the text branch) and ``K_i = C_i W'_K``, ``V_i = C_i W'_V`` (the new image
    branch): two separate softmaxes, so the image tokens add to the text's output instead of competing with the
    text tokens for weight (IDM-VTON's image-prompt branch, as in diffusers' ``IPAdapterAttnProcessor2_0``).

    Args:
        embed_dim: ``D``, the width of the queries and of the output.
        num_heads: ``H``; must divide ``embed_dim``.
        text_dim, image_dim: widths of the text and image condition tokens.
        scale: the image branch's weight (``0`` gives text-only cross-attention).
    """

    def __init__(self, embed_dim: int, num_heads: int, text_dim: int, image_dim: int, scale: float = 1.0) -> None:
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads), ("text_dim", text_dim)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ValueError(f"DecoupledCrossAttention: {name} must be a positive int, got {value!r}")
        if isinstance(image_dim, bool) or not isinstance(image_dim, numbers.Integral) or image_dim <= 0:
            raise ValueError(f"DecoupledCrossAttention: image_dim must be a positive int, got {image_dim!r}")
        if embed_dim % num_heads:
            raise ValueError(f"DecoupledCrossAttention: num_heads={num_heads} must divide embed_dim={embed_dim}")
        self.num_heads, self.head_dim, self.scale = num_heads, embed_dim // num_heads, float(scale)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.k_proj = nn.Linear(text_dim, embed_dim, bias=False)
        self.v_proj = nn.Linear(text_dim, embed_dim, bias=False)
        self.k_image = nn.Linear(image_dim, embed_dim, bias=False)
        self.v_image = nn.Linear(image_dim, embed_dim, bias=False)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def _heads(self, x: Tensor) -> Tensor:
        B, L, _ = x.shape
        return x.reshape(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, d)

    def forward(self, x: Tensor, text: Tensor, image: Tensor | None = None, *, scale: float | None = None) -> Tensor:
        """``x (B, T, D)``, ``text (B, T_t, text_dim)``, ``image (B, T_i, image_dim)`` -> ``(B, T, D)``."""
        where = "DecoupledCrossAttention"
        for name, t, width in (
            ("x", x, self.q_proj.in_features),
            ("text", text, self.k_proj.in_features),
            ("image", image, self.k_image.in_features),
        ):
            if t is None and name == "image":
                continue
            _check_tensor(name, t, 3, where)
            if t.shape[-1] != width or t.shape[0] != x.shape[0]:
                raise ValueError(
                    f"{where}: {name} must be (B={x.shape[0]}, length, {width}), got shape {tuple(t.shape)}"
                )
        q = self._heads(self.q_proj(x))  # (B, H, T, d)
        out = scaled_dot_product_attention(q, self._heads(self.k_proj(text)), self._heads(self.v_proj(text)))
        scale = self.scale if scale is None else float(scale)
        if image is not None and scale != 0.0:
            image_out = scaled_dot_product_attention(
                q, self._heads(self.k_image(image)), self._heads(self.v_image(image))
            )  # (B, H, T, d)
            out = out + scale * image_out
        B, H, T, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, T, H * d))  # (B, T, D)


def region_attention_loss(weights: Tensor, subject_of_key: Tensor, regions: Tensor, eps: float = 1e-8) -> Tensor:
    """Attention-region supervision (reconstruction of MultiCrafter's positional supervision).

    For each subject ``s``, ``M_s`` is the attention from the image queries to subject ``s``'s tokens, averaged
    over heads and over those tokens and normalised over the image positions; the loss is the mean over subjects
    and batch of ``-log sum_{i in R_s} M_s[i]``, the log of the mass that falls outside the subject's region.

    Args:
        weights: ``(B, H, T_img, T_k)`` attention weights of image queries over condition/reference keys.
        subject_of_key: ``(T_k,)`` integer subject index of each key, ``-1`` for keys of no subject.
        regions: ``(B, S, T_img)`` bool, ``True`` where subject ``s`` belongs.
    """
    where = "region_attention_loss"
    _check_tensor("weights", weights, 4, where)
    _check_tensor("subject_of_key", subject_of_key, 1, where)
    _check_tensor("regions", regions, 3, where)
    B, _, T_img, T_k = weights.shape
    if subject_of_key.shape[0] != T_k or subject_of_key.dtype in (torch.bool,) or subject_of_key.is_floating_point():
        raise ValueError(f"{where}: subject_of_key must be an integer tensor of shape (T_k,)=({T_k},)")
    if regions.dtype != torch.bool or regions.shape[0] != B or regions.shape[2] != T_img:
        raise ValueError(
            f"{where}: regions must be a bool tensor (B, S, T_img)=({B}, S, {T_img}), got "
            f"{regions.dtype} {tuple(regions.shape)}"
        )
    S = regions.shape[1]
    if int(subject_of_key.max()) >= S or int(subject_of_key.min()) < -1:
        raise ValueError(f"{where}: subject_of_key values must lie in -1..{S - 1} for {S} regions")
    one_hot = (subject_of_key[:, None] == torch.arange(S, device=weights.device)).to(weights.dtype)  # (T_k, S)
    if (one_hot.sum(0) == 0).any():
        raise ValueError(f"{where}: every subject 0..{S - 1} needs at least one key in subject_of_key")
    per_subject = weights.mean(1) @ (one_hot / one_hot.sum(0))  # (B, T_img, S): mean over heads and its keys
    maps = per_subject / per_subject.sum(1, keepdim=True).clamp_min(eps)  # (B, T_img, S): normalised over pixels
    inside = (maps * regions.transpose(1, 2).to(maps.dtype)).sum(1)  # (B, S): mass inside each region
    return -torch.log(inside.clamp_min(eps)).mean()


def global_local_cross_attention(
    q: Tensor, k: Tensor, v: Tensor, rollout: Tensor, ratio: float
) -> tuple[Tensor, Tensor]:
    """DCAL's global-local cross-attention: the ``R`` patch queries most attended by the class token attend to all.

    ``R = max(1, round(ratio * (T - 1)))`` patch tokens (positions ``1..T-1``) with the largest class-token row of
    the rollout are selected; ``out = softmax(Q_local K^T / sqrt(d)) V`` for those queries only.

    Args:
        q, k, v: ``(B, H, T, d)``, token 0 being the class token.
        rollout: ``(B, T, T)`` from :func:`attnbook.attention.rollout.attention_rollout`.
        ratio: fraction of patch tokens kept, in ``(0, 1]``.

    Returns:
        ``(out (B, H, R, d), index (B, R))``, the selected token positions in decreasing order of their score.
    """
    check_qkv(q, k, v, name="global_local_cross_attention")
    _check_tensor("rollout", rollout, 3, "global_local_cross_attention")
    B, H, T, d = q.shape
    if rollout.shape != (B, T, T):
        raise ValueError(
            f"global_local_cross_attention: rollout must be (B, T, T)=({B}, {T}, {T}), got {tuple(rollout.shape)}"
        )
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise ValueError(f"global_local_cross_attention: ratio must be in (0, 1], got {ratio!r}")
    if T < 2:
        raise ValueError("global_local_cross_attention: needs a class token and at least one patch token")
    R = max(1, round(ratio * (T - 1)))
    index = rollout[:, 0, 1:].topk(R, dim=-1).indices + 1  # (B, R): patch positions, skipping the class token
    q_local = q.gather(2, index[:, None, :, None].expand(B, H, R, d))  # (B, H, R, d)
    return scaled_dot_product_attention(q_local, k, v), index


def proxy_affinity_attention(features: Tensor, values: Tensor, beta: float = 1.2, gamma: float = 3.0) -> Tensor:
    """ProxyCLIP's affinity attention: a vision model's feature similarities mix another model's values.

    ``S = F_n F_n^T`` (cosine similarities of the L2-normalised features), ``S' = gamma (S - beta mean(S))``
    with the mean over the whole matrix, entries ``< 0`` set to ``-inf``, ``out = softmax(S') V``.

    Args:
        features: ``(B, N, C)`` proxy features (e.g. DINO) of ``N`` positions; values: ``(B, N, D_v)``.
    """
    where = "proxy_affinity_attention"
    _check_tensor("features", features, 3, where)
    _check_tensor("values", values, 3, where)
    if values.shape[:2] != features.shape[:2]:
        raise ValueError(
            f"{where}: values{tuple(values.shape)} must have the batch and length of features{tuple(features.shape)}"
        )
    normed = F.normalize(features, dim=-1)
    similarity = normed @ normed.transpose(1, 2)  # (B, N, N)
    similarity = gamma * (similarity - beta * similarity.mean(dim=(1, 2), keepdim=True))
    # Entries below zero are dropped (-inf in ProxyCLIP); a row with none left gets zero weights, not NaN.
    return masked_softmax(similarity, similarity >= 0) @ values  # (B, N, D_v)


def splice_then_aggregate(
    features: Tensor, values: Tensor, window: int, global_affinity: Tensor | None = None, **kwargs: float
) -> Tensor:
    """Trident's splice-then-aggregate: affinity attention inside each window, splice, then one global mixing.

    ``features (B, C, H, W)`` and ``values (B, D_v, H, W)`` are cut into non-overlapping ``window x window``
    sub-windows; :func:`proxy_affinity_attention` runs inside each; the outputs are spliced back into one
    ``(B, D_v, H, W)`` map; with ``global_affinity (B, HW, HW)`` (rows summing to one: Trident uses SAM's
    attention over the whole image) the spliced map is mixed once more, ``out = A_global X_spliced``.
    """
    where = "splice_then_aggregate"
    _check_tensor("features", features, 4, where)
    _check_tensor("values", values, 4, where)
    B, C, Hh, Ww = features.shape
    if values.shape[0] != B or values.shape[2:] != features.shape[2:]:
        raise ValueError(
            f"{where}: values{tuple(values.shape)} must share B, H, W with features{tuple(features.shape)}"
        )
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0 or Hh % window or Ww % window:
        raise ValueError(f"{where}: window must be a positive int dividing H={Hh} and W={Ww}, got {window!r}")
    Dv, n_h, n_w = values.shape[1], Hh // window, Ww // window

    def windows(x: Tensor) -> Tensor:  # (B, X, H, W) -> (B * n_h * n_w, window^2, X)
        X = x.shape[1]
        x = x.reshape(B, X, n_h, window, n_w, window).permute(0, 2, 4, 3, 5, 1)  # (B, n_h, n_w, w, w, X)
        return x.reshape(B * n_h * n_w, window * window, X)

    local = proxy_affinity_attention(windows(features), windows(values), **kwargs)  # (B n_h n_w, w^2, D_v)
    spliced = local.reshape(B, n_h, n_w, window, window, Dv).permute(0, 5, 1, 3, 2, 4).reshape(B, Dv, Hh, Ww)
    if global_affinity is None:
        return spliced
    _check_tensor("global_affinity", global_affinity, 3, where)
    if global_affinity.shape != (B, Hh * Ww, Hh * Ww):
        raise ValueError(
            f"{where}: global_affinity must be (B, HW, HW)=({B}, {Hh * Ww}, {Hh * Ww}), "
            f"got {tuple(global_affinity.shape)}"
        )
    mixed = global_affinity @ spliced.flatten(2).transpose(1, 2)  # (B, HW, D_v)
    return mixed.transpose(1, 2).reshape(B, Dv, Hh, Ww)


def closed_form_edit(weight: Tensor, keys: Tensor, targets: Tensor, strength: float = 1.0) -> Tensor:
    """The regularised least-squares edit of one linear map (Diff-QuickFix's closed form; reconstruction).

    Solves ``min_W sum_i ||W k_i - v_i||^2 + strength * ||W - W_0||_F^2``:
    ``W = (V^T K + strength W_0)(K^T K + strength I)^{-1} = W_0 + (V - K W_0^T)^T K (K^T K + strength I)^{-1}``,
    computed in float64 and returned in ``weight``'s dtype. When only one target differs from ``W_0 k_i`` the
    change has rank one (ROME-style edits).

    Args:
        weight: ``W_0 (D_out, D_in)`` (an ``nn.Linear`` weight: ``y = W k``).
        keys: ``K (n, D_in)``, the inputs the edit must remap; targets: ``V (n, D_out)``, their new outputs.
        strength: ``lambda > 0``; small values fit the targets, large values keep ``W_0``.
    """
    where = "closed_form_edit"
    _check_tensor("weight", weight, 2, where)
    _check_tensor("keys", keys, 2, where)
    _check_tensor("targets", targets, 2, where)
    D_out, D_in = weight.shape
    if keys.shape[1] != D_in or targets.shape != (keys.shape[0], D_out):
        raise ValueError(
            f"{where}: keys must be (n, D_in={D_in}) and targets (n, D_out={D_out}), got keys{tuple(keys.shape)} "
            f"and targets{tuple(targets.shape)}"
        )
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength > 0 or math.isinf(strength):
        raise ValueError(f"{where}: strength must be a finite number > 0, got {strength!r}")
    # Solved in float64 as the equivalent update W_0 + (V - K W_0^T)^T K (K^T K + rho I)^{-1}: the Gram matrix is
    # ill-conditioned for small rho, and keys whose targets are already W_0 k_i then add exactly nothing.
    w0, k64, v64 = weight.double(), keys.double(), targets.double()
    gram = k64.T @ k64 + strength * torch.eye(D_in, dtype=torch.float64, device=weight.device)  # (D_in, D_in), SPD
    residual = v64 - k64 @ w0.T  # (n, D_out): how far each target is from what W_0 gives
    update = torch.linalg.solve(gram, k64.T @ residual).T  # (D_out, D_in) = residual^T K gram^{-1}, gram symmetric
    return (w0 + update).to(weight.dtype)
