"""Attention that reads a set out: learned queries, controllers, pointers, and the weights read as features (ch. 19).

Each piece here is attention whose *queries* are the point: a few learned or stateful queries read a larger set
(frames of speech, past decisions, objects in a scene), or the attention weights themselves are the output.

* :class:`WindowedQFormerProjector` -- Granite-speech's projector (Saon et al., 2025, :cite:`saon2025granite`):
  the frame sequence is cut into windows of ``w`` frames and, in every window, the same ``w / r`` learned queries
  run through a small BLIP-2-style query transformer (self-attention among the queries, cross-attention to the
  window's frames, a feed-forward network; post-LayerNorm), so ``T`` frames become ``T / r`` vectors.
* :class:`ModuleController` -- CVLNM's module controller (Yang et al., 2022, :cite:`yang2022learning`): the
  current state attends over the embeddings of the modules chosen at past steps, and a softmax gives soft weights
  over ``K`` attention modules whose context vectors are mixed.
* :func:`interaction_features` -- ViTGaze's interaction features (Song et al., 2024, :cite:`song2024vitgaze`):
  a ViT's self-attention maps, read from the rows of the person's head patches, as a map of what the person
  interacts with.
* :func:`object_pointer_logits` -- OAT's object attention (Fang et al., 2024, :cite:`fang2024oat`): a scaled dot
  product between a decoder state and every object token, plus a fixed zero logit for "stop", is the distribution
  of the next fixated object.
* :func:`row_correlation`, :func:`saliency_coverage` -- how far an attention map agrees with a gradient saliency
  map (Papi et al., 2025, :cite:`papi2025crossattention`).
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.core import MultiHeadAttention

__all__ = [
    "split_windows",
    "QFormerLayer",
    "WindowedQFormerProjector",
    "ModuleController",
    "interaction_features",
    "object_pointer_logits",
    "row_correlation",
    "saliency_coverage",
]


def _check_int(where: str, name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be an int, got {value!r} ({type(value).__name__})")
    if value < low:
        raise ValueError(f"{where}: {name} must be >= {low}, got {value}")
    return int(value)


def _check_tensor(where: str, name: str, value: object, ndim: int) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(value).__name__}")
    if value.ndim != ndim:
        raise ValueError(f"{where}: {name} must have {ndim} dimensions, got shape {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"{where}: {name} must be floating point, got {value.dtype}")
    return value


def split_windows(frames: Tensor, window_size: int) -> tuple[Tensor, Tensor]:
    """Cut ``frames (B, T, D)`` into ``n = ceil(T / w)`` windows, zero-padding the last one.

    Returns ``windows (B * n, w, D)`` (batch-major: the ``n`` windows of sequence 0 first) and ``real (B * n, w)``,
    a boolean mask that is ``False`` on the padding frames.
    """
    _check_tensor("split_windows", "frames", frames, 3)
    w = _check_int("split_windows", "window_size", window_size)
    B, T, D = frames.shape
    if T == 0:
        raise ValueError(f"split_windows: frames has no frames (shape {tuple(frames.shape)})")
    n = math.ceil(T / w)
    pad = n * w - T
    padded = F.pad(frames, (0, 0, 0, pad))  # (B, n w, D)
    real = (torch.arange(n * w, device=frames.device) < T).expand(B, n * w)  # (B, n w)
    return padded.reshape(B * n, w, D), real.reshape(B * n, w)  # (B n, w, D), (B n, w)


class QFormerLayer(nn.Module):
    """One query-transformer layer (BLIP-2's Q-Former, the layout of BERT): post-LayerNorm residual blocks.

    ``q <- LN(q + SelfAttn(q))``; if ``cross``: ``q <- LN(q + CrossAttn(q, frames))``; ``q <- LN(q + FFN(q))``,
    with ``FFN(x) = W_2 GELU(W_1 x)``. Queries are ``(N, Q, E)``, frames ``(N, w, D_f)``.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        frame_dim: int,
        intermediate_size: int,
        *,
        cross: bool = True,
        layer_norm_eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(hidden_size, num_heads)
        self.self_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.cross_attn = MultiHeadAttention(hidden_size, num_heads, kdim=frame_dim, vdim=frame_dim) if cross else None
        self.cross_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps) if cross else None
        self.ffn_in = nn.Linear(hidden_size, intermediate_size)
        self.ffn_out = nn.Linear(intermediate_size, hidden_size)
        self.ffn_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)

    def forward(
        self, queries: Tensor, frames: Tensor, frame_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Returns ``(queries (N, Q, E), cross-attention weights (N, H, Q, w) or None)``."""
        q = self.self_norm(queries + self.self_attn(queries)[0])
        weights = None
        if self.cross_attn is not None:
            attended, weights = self.cross_attn(
                q, frames, frames, key_mask=frame_mask, need_weights=True, average_attn_weights=False
            )
            q = self.cross_norm(q + attended)
        q = self.ffn_norm(q + self.ffn_out(F.gelu(self.ffn_in(q))))
        return q, weights


class WindowedQFormerProjector(nn.Module):
    """Granite-speech's windowed query-transformer projector (Saon et al., 2025, :cite:`saon2025granite`).

    The frames ``X (B, T, D_f)`` are zero-padded to ``n = ceil(T / w)`` windows of ``w`` frames. Every window is
    read by the same ``Q = w / r`` learned queries ``P (Q, E)``: after a LayerNorm they pass through
    ``num_layers`` :class:`QFormerLayer` s (cross-attention to the window's frames in every
    ``cross_attention_frequency``-th layer, starting with the first), and a linear map takes them to the output
    width. The output is ``(B, n Q, D_out)``: the sequence is ``r`` times shorter, and each output vector is tied
    to one window (a fixed number per window, in order).

    Granite-speech uses ``w = 15``, ``r = 5`` (3 queries per window, 10 vectors per second from 50 frames per
    second) and does not mask the zero padding of the last window (``mask_padding=False``, the default here,
    as in ``transformers``' ``GraniteSpeechEncoderProjector``); ``mask_padding=True`` hides it from the
    cross-attention instead.

    ``forward(frames, need_weights=False)`` returns the projected vectors, and with ``need_weights`` also the
    cross-attention weights of every cross-attention layer, a list of ``(B, n, H, Q, w)`` tensors.
    Introduced in chapter 19.
    """

    def __init__(
        self,
        frame_dim: int,
        hidden_size: int,
        out_dim: int,
        *,
        window_size: int = 15,
        downsample_rate: int = 5,
        num_layers: int = 1,
        num_heads: int = 1,
        intermediate_size: int | None = None,
        cross_attention_frequency: int = 1,
        layer_norm_eps: float = 1e-12,
        mask_padding: bool = False,
    ) -> None:
        super().__init__()
        where = "WindowedQFormerProjector"
        frame_dim, hidden_size, out_dim = (
            _check_int(where, name, value)
            for name, value in (("frame_dim", frame_dim), ("hidden_size", hidden_size), ("out_dim", out_dim))
        )
        self.window_size = _check_int(where, "window_size", window_size)
        self.downsample_rate = _check_int(where, "downsample_rate", downsample_rate)
        num_layers = _check_int(where, "num_layers", num_layers)
        num_heads = _check_int(where, "num_heads", num_heads)
        frequency = _check_int(where, "cross_attention_frequency", cross_attention_frequency)
        if self.window_size % self.downsample_rate:
            raise ValueError(
                f"{where}: downsample_rate={self.downsample_rate} must divide window_size={self.window_size} "
                "(each window is read by window_size / downsample_rate queries)"
            )
        if hidden_size % num_heads:
            raise ValueError(f"{where}: num_heads={num_heads} must divide hidden_size={hidden_size}")
        intermediate_size = 4 * hidden_size if intermediate_size is None else intermediate_size
        intermediate_size = _check_int(where, "intermediate_size", intermediate_size)
        self.frame_dim, self.hidden_size, self.num_heads = frame_dim, hidden_size, num_heads
        self.num_queries = self.window_size // self.downsample_rate
        self.mask_padding = bool(mask_padding)
        self.query = nn.Parameter(torch.randn(self.num_queries, hidden_size))  # P: (Q, E)
        self.query_norm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.layers = nn.ModuleList(
            QFormerLayer(
                hidden_size,
                num_heads,
                frame_dim,
                intermediate_size,
                cross=i % frequency == 0,
                layer_norm_eps=layer_norm_eps,
            )
            for i in range(num_layers)
        )
        self.out = nn.Linear(hidden_size, out_dim)

    def forward(self, frames: Tensor, need_weights: bool = False) -> Tensor | tuple[Tensor, list[Tensor]]:
        _check_tensor("WindowedQFormerProjector", "frames", frames, 3)
        if frames.shape[-1] != self.frame_dim:
            raise ValueError(
                f"WindowedQFormerProjector: frames must be (B, T, frame_dim={self.frame_dim}), "
                f"got {tuple(frames.shape)}"
            )
        if frames.dtype != self.query.dtype:
            raise TypeError(f"WindowedQFormerProjector: frames are {frames.dtype}, the module is {self.query.dtype}")
        B = frames.shape[0]
        windows, real = split_windows(frames, self.window_size)  # (B n, w, D_f), (B n, w)
        n = windows.shape[0] // B
        q = self.query_norm(self.query).expand(windows.shape[0], -1, -1)  # (B n, Q, E): the same queries everywhere
        weights = []
        for layer in self.layers:
            q, w = layer(q, windows, real if self.mask_padding else None)
            if w is not None:
                weights.append(w.reshape(B, n, *w.shape[1:]))  # (B, n, H, Q, w)
        out = self.out(q).reshape(B, n * self.num_queries, -1)  # (B, n Q, D_out): windows in order
        return (out, weights) if need_weights else out


class ModuleController(nn.Module):
    """CVLNM's self-attention module controller (Yang et al., 2022, :cite:`yang2022learning`).

    At step ``t`` the query ``h_t (B, E)`` attends (multi-head, ``num_heads``) over the module embeddings of the
    past steps ``m_0, m_1, ..., m_{t-1}`` (``m_0 = 0``, so step 1 has one key); a feed-forward network gives
    ``g = FFN(MHA(h_t, m, m))`` (no residual connection, as in the authors' ``Mod_Cont``), and the soft module
    weights are ``w_t = softmax(W_c g) (B, K)``. With the
    ``K`` modules' context vectors ``c (B, K, D_c)``, the fused context is ``sum_k w_tk c_k`` and this step's
    module embedding ``m_t = sum_k w_tk e_k`` (``e_k`` learned, ``(K, E)``), which joins the past for step ``t+1``.

    ``forward(state, contexts, past=None)`` returns ``(fused (B, D_c), weights (B, K), m_t (B, E),
    logits (B, K))``; ``past`` is ``(B, t - 1, E)``, the earlier ``m`` (``None`` or width 0 at the first step).
    The logits are also what CVLNM's part-of-speech loss reads (cross-entropy against the word's syntax class).
    """

    def __init__(self, embed_dim: int, num_modules: int = 4, num_heads: int = 1, ffn_dim: int | None = None) -> None:
        super().__init__()
        embed_dim = _check_int("ModuleController", "embed_dim", embed_dim)
        self.num_modules = _check_int("ModuleController", "num_modules", num_modules)
        ffn_dim = embed_dim if ffn_dim is None else _check_int("ModuleController", "ffn_dim", ffn_dim)
        self.embed_dim = embed_dim
        self.attn = MultiHeadAttention(embed_dim, _check_int("ModuleController", "num_heads", num_heads))
        self.ffn = nn.Sequential(nn.Linear(embed_dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, embed_dim))
        self.classifier = nn.Linear(embed_dim, self.num_modules)  # W_c
        self.module_embeddings = nn.Parameter(0.1 * torch.randn(self.num_modules, embed_dim))  # e_k: (K, E)
        self.register_buffer("start", torch.zeros(embed_dim))  # m_0 = 0: the memory's first entry

    def forward(
        self, state: Tensor, contexts: Tensor, past: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        _check_tensor("ModuleController", "state", state, 2)
        _check_tensor("ModuleController", "contexts", contexts, 3)
        B, E = state.shape
        if E != self.embed_dim:
            raise ValueError(f"ModuleController: state must be (B, {self.embed_dim}), got {tuple(state.shape)}")
        if contexts.shape[:2] != (B, self.num_modules):
            raise ValueError(
                f"ModuleController: contexts must be (B={B}, K={self.num_modules}, D_c), got {tuple(contexts.shape)}"
            )
        memory = self.start.expand(B, 1, E)  # (B, 1, E)
        if past is not None:
            _check_tensor("ModuleController", "past", past, 3)
            if past.shape[0] != B or past.shape[2] != E:
                raise ValueError(f"ModuleController: past must be (B={B}, t-1, E={E}), got {tuple(past.shape)}")
            memory = torch.cat([memory, past], dim=1)  # (B, t, E)
        attended = self.attn(state[:, None], memory, memory)[0][:, 0]  # (B, E)
        logits = self.classifier(self.ffn(attended))  # (B, K)
        weights = logits.softmax(dim=-1)  # (B, K): soft module choice
        fused = torch.einsum("bk,bkd->bd", weights, contexts)  # (B, D_c)
        embedding = weights @ self.module_embeddings  # (B, E): m_t
        return fused, weights, embedding, logits


def interaction_features(attention: Tensor, guidance: Tensor) -> Tensor:
    """ViTGaze's interaction features (Song et al., 2024, :cite:`song2024vitgaze`): ``F = sum_i w_i A[:, :, i, :]``.

    ``attention (B, C, N, N)``: softmax self-attention maps of ``C`` chosen layer-heads over ``N`` patches (row =
    query patch); ``guidance (B, N)``: non-negative weights on the query patches where the person's head is
    (ViTGaze predicts them with a softmax over patches). Returns ``(B, C, N)``: for every layer-head, how much
    the head region attends to each patch, the map the gaze decoder reads.
    """
    _check_tensor("interaction_features", "attention", attention, 4)
    _check_tensor("interaction_features", "guidance", guidance, 2)
    B, C, N, N2 = attention.shape
    if N != N2:
        raise ValueError(f"interaction_features: attention must be (B, C, N, N), got {tuple(attention.shape)}")
    if guidance.shape != (B, N):
        raise ValueError(f"interaction_features: guidance must be (B={B}, N={N}), got {tuple(guidance.shape)}")
    return torch.einsum("bn,bcnm->bcm", guidance, attention)  # (B, C, N)


def object_pointer_logits(
    decoder_queries: Tensor, object_keys: Tensor, object_mask: Tensor | None = None, end_logit: float = 0.0
) -> Tensor:
    """OAT's object attention (Fang et al., 2024, :cite:`fang2024oat`): the next fixation as a pointer.

    ``s_ti = q_t . k_i / sqrt(d)`` between the decoder's projected state at step ``t``, ``decoder_queries (B, T, d)``,
    and the projected encoder token of every object, ``object_keys (B, N, d)``; a constant ``end_logit`` is
    appended as the logit of "stop". Returns ``(B, T, N + 1)`` logits; a softmax over the last axis is the
    distribution of the next fixated object (index ``N`` = end). ``object_mask (B, N)`` (``True`` = a real object)
    sets padded objects to ``-inf``.
    """
    _check_tensor("object_pointer_logits", "decoder_queries", decoder_queries, 3)
    _check_tensor("object_pointer_logits", "object_keys", object_keys, 3)
    B, _, d = decoder_queries.shape
    if object_keys.shape[0] != B or object_keys.shape[2] != d:
        raise ValueError(
            f"object_pointer_logits: object_keys must be (B={B}, N, d={d}), got {tuple(object_keys.shape)}"
        )
    scores = decoder_queries @ object_keys.transpose(1, 2) / math.sqrt(d)  # (B, T, N)
    if object_mask is not None:
        if object_mask.dtype != torch.bool or object_mask.shape != object_keys.shape[:2]:
            raise ValueError(
                f"object_pointer_logits: object_mask must be bool (B, N)={tuple(object_keys.shape[:2])}, "
                f"got {object_mask.dtype} {tuple(object_mask.shape)}"
            )
        scores = scores.masked_fill(~object_mask[:, None, :], float("-inf"))
    end = scores.new_full((*scores.shape[:2], 1), float(end_logit))  # (B, T, 1): "stop"
    return torch.cat([scores, end], dim=-1)  # (B, T, N + 1)


def row_correlation(a: Tensor, b: Tensor, method: str = "pearson") -> Tensor:
    """Correlation of ``a`` and ``b`` along the last axis, one value per row: ``(..., T), (..., T) -> (...)``.

    ``method="pearson"`` on the values, ``"spearman"`` on their ranks (ties broken by position). Rows that are
    constant give NaN, as a correlation is undefined there.
    """
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, Tensor) or not t.is_floating_point() or t.ndim < 1:
            raise TypeError(f"row_correlation: {name} must be a floating-point tensor with >= 1 dimension")
    if a.shape != b.shape:
        raise ValueError(
            f"row_correlation: a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[-1] < 2:
        raise ValueError(f"row_correlation: rows need at least 2 entries, got shape {tuple(a.shape)}")
    if method == "spearman":
        a, b = (t.argsort(dim=-1).argsort(dim=-1).to(t.dtype) for t in (a, b))
    elif method != "pearson":
        raise ValueError(f"row_correlation: method must be 'pearson' or 'spearman', got {method!r}")
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def saliency_coverage(attention: Tensor, saliency: Tensor, k: int) -> Tensor:
    """The share of the saliency mass on the ``k`` positions the attention weights most: ``(..., T) -> (...)``.

    ``saliency`` must be non-negative (e.g. ``|gradient x input|``). 1 means the attention's top ``k`` hold all the
    relevance; a uniform saliency gives ``k / T``.
    """
    if not isinstance(attention, Tensor) or not isinstance(saliency, Tensor):
        raise TypeError("saliency_coverage: attention and saliency must be torch.Tensors")
    if attention.shape != saliency.shape:
        raise ValueError(
            f"saliency_coverage: attention and saliency must have the same shape, got "
            f"{tuple(attention.shape)} and {tuple(saliency.shape)}"
        )
    k = _check_int("saliency_coverage", "k", k)
    if k > attention.shape[-1]:
        raise ValueError(f"saliency_coverage: k={k} exceeds the row length {attention.shape[-1]}")
    if (saliency < 0).any():
        raise ValueError("saliency_coverage: saliency must be non-negative (take |gradient x input|)")
    top = attention.topk(k, dim=-1).indices
    return saliency.gather(-1, top).sum(-1) / saliency.sum(-1)
