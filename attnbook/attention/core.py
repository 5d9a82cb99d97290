"""The attention core with pluggable parts, and multi-head attention built on it.

Every mechanism in the book is the same pipeline with one part swapped::

    q, k  --positions.rotate-->  q', k'                      (e.g. RoPE)
    logits = scores(q', k')                                   (dot product, additive, ...)
           + positions.bias(q', k')                           (Shaw / ALiBi / T5-style biases)
           + mask  (+ pattern: which keys each query sees)    (causal, padding, windows, ...)
    weights = normalizer(logits)                              (softmax, or a variant)
    out = dropout(weights) @ v

:class:`AttentionCore` owns that pipeline. A new mechanism subclasses the one part that is new
(:class:`Scores`, :class:`PositionPart`, :class:`Pattern` or :class:`Normalizer`) and passes it in.
When the parts are the standard ones (dot-product scores, softmax) the core takes the fused
:func:`torch.nn.functional.scaled_dot_product_attention` kernel, with biases and patterns folded into
its mask; otherwise it runs the readable manual pipeline. :class:`FunctionCore` wraps a whole mechanism given
as a function ``fn(q, k, v) -> out`` (the long-input mechanisms of chapters 07-10 decide for themselves which keys
each query sees), so that it too drops into every model of the book.

Shapes: the core works on heads already split, ``q (B, H, T_q, D)``, ``k (B, H, T_k, D)``,
``v (B, H, T_k, D_v)``. :class:`MultiHeadAttention` does the projections and the splitting.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import Tensor, nn

from attnbook.attention.functional import (
    attention_dropout,
    check_input_dtype,
    check_mask,
    check_qkv,
    masked_softmax,
    scaled_dot_product_attention,
)
from attnbook.attention.masks import causal_mask, combine_masks, key_mask_to_attn_mask

__all__ = [
    "Scores",
    "DotProductScores",
    "PositionPart",
    "Pattern",
    "CausalPattern",
    "Normalizer",
    "SoftmaxNormalizer",
    "AttentionCore",
    "FunctionCore",
    "MultiHeadAttention",
]


class Scores(nn.Module):
    """Part 1: the compatibility logits of queries and keys, ``(B, H, T_q, D), (B, H, T_k, D) -> (B, H, T_q, T_k)``."""

    def forward(self, q: Tensor, k: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class DotProductScores(Scores):
    """``q k^T * scale`` with ``scale = 1/sqrt(D)`` by default (chapter 03)."""

    def __init__(self, scale: float | None = None) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        scale = 1.0 / math.sqrt(q.shape[-1]) if self.scale is None else self.scale
        if q.dtype in (torch.float16, torch.bfloat16):  # accumulate half-precision logits in float32: no overflow
            q, k = q.float(), k.float()
        return (q * scale) @ k.transpose(-2, -1)  # (B, H, T_q, T_k)


class PositionPart(nn.Module):
    """Part 2: position information. Override ``rotate`` (transform q and k) and/or ``bias`` (additive logits).

    ``q_pos``/``k_pos`` are integer positions ``(T_q,)``/``(T_k,)``; by default ``0..L-1``, and the core passes
    offsets when decoding with a cache. The identity part adds nothing.
    """

    def rotate(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor) -> tuple[Tensor, Tensor]:
        return q, k

    def bias(self, q: Tensor, k: Tensor, q_pos: Tensor, k_pos: Tensor) -> Tensor | None:
        """Additive logits broadcastable to ``(B, H, T_q, T_k)``, or ``None``."""
        return None


class Pattern(nn.Module):
    """Part 3: which keys each query may see, as a boolean ``(T_q, T_k)`` mask (``True`` = visible)."""

    def forward(self, q_pos: Tensor, k_pos: Tensor) -> Tensor | None:  # pragma: no cover - abstract
        raise NotImplementedError


class CausalPattern(Pattern):
    """Query at position ``i`` sees keys at positions ``<= i``: works with cache offsets through the positions."""

    def forward(self, q_pos: Tensor, k_pos: Tensor) -> Tensor:
        return k_pos[None, :] <= q_pos[:, None]


class Normalizer(nn.Module):
    """Part 4: logits ``(B, H, T_q, T_k)`` and a boolean/additive mask to weights of the same shape."""

    def forward(self, logits: Tensor, mask: Tensor | None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class SoftmaxNormalizer(Normalizer):
    """Stable softmax over keys; fully masked rows give zeros."""

    def forward(self, logits: Tensor, mask: Tensor | None) -> Tensor:
        return masked_softmax(logits, mask)


class AttentionCore(nn.Module):
    """Attention over split heads, with pluggable scores, positions, pattern and normaliser.

    Args:
        scores: the logits part; :class:`DotProductScores` by default.
        positions: the position part; none by default.
        pattern: which keys each query sees (applied on top of any mask passed to ``forward``).
        normalizer: :class:`SoftmaxNormalizer` by default.
        dropout: dropout on the weights after the normaliser (zero each with this probability, scale the rest
            by ``1/(1 - dropout)``), applied in training mode only; ``eval()`` turns it off.
        backend: ``"auto"`` (fused kernel when the parts allow it and no weights are asked for),
            ``"fused"`` or ``"manual"``.

    Second derivatives (double backward) need ``backend="manual"``: PyTorch's fused CPU kernel has no
    derivative of its backward pass, and ``"auto"`` picks that kernel for the standard parts.
    """

    def __init__(
        self,
        scores: Scores | None = None,
        positions: PositionPart | None = None,
        pattern: Pattern | None = None,
        normalizer: Normalizer | None = None,
        dropout: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise TypeError(f"AttentionCore: dropout must be a number in [0, 1), got {type(dropout).__name__}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"AttentionCore: dropout must be in [0, 1), got {dropout}")
        if backend not in ("auto", "fused", "manual"):
            raise ValueError(f"backend must be 'auto', 'fused' or 'manual', got {backend!r}")
        self.scores = scores if scores is not None else DotProductScores()
        self.positions = positions
        self.pattern = pattern
        self.normalizer = normalizer if normalizer is not None else SoftmaxNormalizer()
        self.dropout = dropout
        self.backend = backend

    def can_fuse(self) -> bool:
        """Whether the parts are the standard ones that PyTorch's fused kernel computes."""
        return type(self.scores) is DotProductScores and type(self.normalizer) is SoftmaxNormalizer

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None = None,
        *,
        is_causal: bool = False,
        need_weights: bool = False,
        q_pos: Tensor | None = None,
        k_pos: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend. Returns ``(output (B, H, T_q, D_v), weights (B, H, T_q, T_k) or None)``."""
        check_qkv(q, k, v, name=type(self).__name__)
        logits_shape = (*q.shape[:-1], k.shape[-2])
        if mask is not None:
            check_mask(mask, logits_shape, q.dtype)
        T_q, T_k = q.shape[-2], k.shape[-2]
        if self.positions is not None or self.pattern is not None or q_pos is not None or k_pos is not None:
            # Positions are made only for the parts that read them (none on the plain softmax path).
            q_pos = torch.arange(T_q, device=q.device) if q_pos is None else q_pos
            k_pos = torch.arange(T_k, device=q.device) if k_pos is None else k_pos
            if q_pos.shape != (T_q,) or k_pos.shape != (T_k,):
                raise ValueError(
                    f"q_pos/k_pos must have shapes ({T_q},)/({T_k},), got {tuple(q_pos.shape)}/{tuple(k_pos.shape)}"
                )
        bias = None
        if self.positions is not None:
            q, k = self.positions.rotate(q, k, q_pos, k_pos)
            bias = self.positions.bias(q, k, q_pos, k_pos)
            if bias is not None:
                try:
                    fits = torch.broadcast_shapes(bias.shape, logits_shape) == torch.Size(logits_shape)
                except RuntimeError:
                    fits = False
                if not fits:
                    raise ValueError(
                        f"{type(self.positions).__name__}.bias returned shape {tuple(bias.shape)}, which does not "
                        f"broadcast to the logits' shape {tuple(logits_shape)} = (B, H, T_q, T_k)"
                    )
        pattern = self.pattern(q_pos, k_pos) if self.pattern is not None else None
        dropout_p = self.dropout if self.training else 0.0

        fuse = self.backend != "manual" and self.can_fuse() and not need_weights
        if self.backend == "fused" and not fuse:
            raise ValueError("backend='fused' needs dot-product scores, a softmax normaliser and need_weights=False")
        if fuse:
            full = combine_masks(mask, pattern, bias, dtype=q.dtype)
            out = scaled_dot_product_attention(
                q, k, v, full, is_causal=is_causal, dropout_p=dropout_p, scale=self.scores.scale, backend="fused"
            )
            return out, None

        logits = self.scores(q, k)  # (B, H, T_q, T_k)
        if bias is not None:
            logits = logits + bias
        if is_causal:
            pattern = combine_masks(pattern, causal_mask(T_q, T_k, device=q.device))
        full = combine_masks(mask, pattern, dtype=logits.dtype)
        weights = self.normalizer(logits, full).to(v.dtype)  # (B, H, T_q, T_k)
        attn = attention_dropout(weights, dropout_p)  # (B, H, T_q, T_k)
        return attn @ v, (weights if need_weights else None)  # (B, H, T_q, D_v)


class FunctionCore(AttentionCore):
    """An attention core that is one function ``fn(q, k, v) -> out`` on split heads ``(B, H, T, d)``.

    For the mechanisms that choose their own keys (tiled, sliding-window, blocked, axial, Combiner, routing
    attention): ``MultiHeadAttention(..., core=FunctionCore(fn))`` gives them the projections, and any block of
    :mod:`attnbook.models.transformer` the rest. ``fn`` is called as ``fn(q, k, v)``; it has no parameters of its
    own (a module with parameters works too and is registered). Masks, ``is_causal`` and ``need_weights`` are
    refused with a ``ValueError`` naming ``name``: the function decides which keys each query sees.
    """

    def __init__(self, fn: Callable[[Tensor, Tensor, Tensor], Tensor], name: str | None = None) -> None:
        super().__init__()
        if not callable(fn):
            raise TypeError(f"FunctionCore: fn must be callable, got {type(fn).__name__}")
        self.fn, self.name = fn, name or getattr(fn, "__name__", type(fn).__name__)

    def can_fuse(self) -> bool:
        return False

    def extra_repr(self) -> str:
        return f"fn={self.name}"

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None = None,
        *,
        is_causal: bool = False,
        need_weights: bool = False,
        q_pos: Tensor | None = None,
        k_pos: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``fn(q, k, v)``; returns ``(output (B, H, T_q, D_v), None)``."""
        check_qkv(q, k, v, name=f"FunctionCore({self.name})")
        refused = [n for n, given in (("mask", mask is not None), ("is_causal", is_causal),
                                      ("need_weights", need_weights)) if given]  # fmt: skip
        if refused or q_pos is not None or k_pos is not None:
            raise ValueError(
                f"FunctionCore({self.name}) chooses its own keys: it takes no {', '.join(refused) or 'positions'}"
            )
        out = self.fn(q, k, v)
        expected = (*q.shape[:-1], v.shape[-1])
        if not isinstance(out, Tensor) or tuple(out.shape) != expected:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"FunctionCore({self.name}): fn returned {got}, expected shape {expected}")
        return out, None


class MultiHeadAttention(nn.Module):
    """Multi-head attention :cite:`vaswani2017attention`: project, split into heads, attend with a core, merge.

    ``MultiHead(Q, K, V) = Concat(head_1, ..., head_H) W^O`` with ``head_h = Attention(Q W_h^Q, K W_h^K, V W_h^V)``.

    Args:
        embed_dim: model width ``E`` (of the queries and of the output).
        num_heads: ``H``; must divide ``embed_dim``.
        kdim, vdim: widths of the key and value inputs (cross-attention from another model); ``E`` by default.
        bias: whether the projections have biases.
        dropout: dropout on the attention weights; used only when ``core`` is None (a core carries its own).
        core: the :class:`AttentionCore` (pluggable parts); standard softmax attention by default.
        batch_first: inputs are ``(B, L, E)`` if True, else ``(L, B, E)``.
        num_kv_heads: ``G``, the number of key-value heads (grouped-query attention, Ainslie et al. 2023,
            :cite:`ainslie2023gqa`; ``G = 1`` is multi-query attention, :cite:`shazeer2019fast`): ``k_proj`` and
            ``v_proj`` map to ``G * D`` and each key-value head serves ``H / G`` query heads. ``H`` by default
            (ordinary multi-head attention); chapter 06 derives it.

    Masks follow the book's convention: boolean ``True`` = may attend. ``key_mask (B, T_k)`` marks real keys.
    A query that sees no key gets a zero attention output, so its result is ``out_proj``'s bias (PyTorch's
    :class:`torch.nn.MultiheadAttention` gives NaN there). Parameters are ``q_proj``, ``k_proj``, ``v_proj``
    (``E -> E``, ``kdim -> E``, ``vdim -> E``) and ``out_proj``; :meth:`load_torch` copies them from a
    :class:`torch.nn.MultiheadAttention`. Introduced in chapter 04.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        kdim: int | None = None,
        vdim: int | None = None,
        bias: bool = True,
        dropout: float = 0.0,
        core: AttentionCore | None = None,
        batch_first: bool = True,
        num_kv_heads: int | None = None,
    ) -> None:
        super().__init__()
        sizes = {
            "embed_dim": embed_dim,
            "num_heads": num_heads,
            "kdim": kdim,
            "vdim": vdim,
            "num_kv_heads": num_kv_heads,
        }
        for name, value in sizes.items():
            if value is None and name in ("kdim", "vdim", "num_kv_heads"):
                continue
            # bool is an int subclass: MultiHeadAttention(16, True) would silently build one head
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"MultiHeadAttention: {name} must be an int, got {value!r} ({type(value).__name__})")
            if value <= 0:
                raise ValueError(f"MultiHeadAttention: {name} must be positive, got {value}")
        embed_dim, num_heads = int(embed_dim), int(num_heads)
        kdim, vdim = (None if dim is None else int(dim) for dim in (kdim, vdim))
        if embed_dim % num_heads:
            raise ValueError(f"MultiHeadAttention: num_heads={num_heads} must divide embed_dim={embed_dim}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.num_kv_heads = num_heads if num_kv_heads is None else int(num_kv_heads)
        if num_heads % self.num_kv_heads:
            raise ValueError(f"MultiHeadAttention: num_kv_heads={self.num_kv_heads} must divide num_heads={num_heads}")
        self.kdim = embed_dim if kdim is None else kdim
        self.vdim = embed_dim if vdim is None else vdim
        self.batch_first = batch_first
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        kv_width = self.num_kv_heads * self.head_dim  # G * D (= E unless grouped)
        self.k_proj = nn.Linear(self.kdim, kv_width, bias=bias)
        self.v_proj = nn.Linear(self.vdim, kv_width, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.core = core if core is not None else AttentionCore(dropout=dropout)

    def split_heads(self, x: Tensor) -> Tensor:
        """``(B, L, H * D) -> (B, H, L, D)``: head ``h`` owns features ``h*D .. (h+1)*D - 1``."""
        B, L, _ = x.shape
        return x.reshape(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, D)

    def split_kv_heads(self, x: Tensor) -> Tensor:
        """``(B, L, G * D) -> (B, G, L, D)``: the key-value heads (``G = H`` unless grouped)."""
        B, L, _ = x.shape
        return x.reshape(B, L, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, G, L, D)

    def repeat_kv_heads(self, x: Tensor) -> Tensor:
        """``(B, G, L, D) -> (B, H, L, D)``: key-value head ``g`` serves query heads ``g H/G .. (g+1) H/G - 1``."""
        B, G, L, D = x.shape
        group = self.num_heads // G
        if group == 1:
            return x
        return x[:, :, None].expand(B, G, group, L, D).reshape(B, G * group, L, D)  # (B, H, L, D)

    def merge_heads(self, x: Tensor) -> Tensor:
        """``(B, H, L, D) -> (B, L, H * D)``, the inverse of :meth:`split_heads` (the ``Concat`` of the heads)."""
        B, H, L, D = x.shape
        return x.transpose(1, 2).reshape(B, L, H * D)  # (B, L, E)

    @torch.no_grad()
    def load_torch(self, ref: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of a :class:`torch.nn.MultiheadAttention` of the same sizes into this module.

        PyTorch stores the three input projections stacked, ``in_proj_weight = cat(W_q, W_k, W_v)`` (or as
        separate ``q/k/v_proj_weight`` when ``kdim``/``vdim`` differ from ``embed_dim``). Returns ``self``.

        Raises ``ValueError`` when ``ref`` would compute something else on the same input: other sizes
        (``embed_dim``, ``num_heads``, ``kdim``, ``vdim``), ``add_bias_kv``, ``add_zero_attn``, a different
        ``bias`` or ``batch_first``. Dropout is a training setting, not a weight: it is not copied or compared
        (in ``eval()`` mode the two modules agree whatever their dropout; set this module's with its
        ``dropout`` argument or core). Masks still follow each module's own convention
        (:func:`~attnbook.attention.masks.from_torch_convention` converts).
        """
        if not isinstance(ref, nn.MultiheadAttention):
            raise TypeError(f"load_torch: ref must be a torch.nn.MultiheadAttention, got {type(ref).__name__}")
        if self.num_kv_heads != self.num_heads:
            raise ValueError(
                f"load_torch: this module groups its key-value heads (num_kv_heads={self.num_kv_heads}, "
                f"num_heads={self.num_heads}); torch.nn.MultiheadAttention has one key-value head per head"
            )
        sizes = (ref.embed_dim, ref.num_heads, ref.kdim, ref.vdim)
        if sizes != (self.embed_dim, self.num_heads, self.kdim, self.vdim):
            raise ValueError(
                f"load_torch: ref has (embed_dim, num_heads, kdim, vdim)={sizes}, this module has "
                f"{(self.embed_dim, self.num_heads, self.kdim, self.vdim)}"
            )
        # Options of ref that change its output: refuse them rather than load a module that computes something else.
        if ref.bias_k is not None or ref.bias_v is not None:
            raise ValueError("load_torch: ref uses add_bias_kv=True (a learned extra key and value)")
        if ref.add_zero_attn:
            raise ValueError("load_torch: ref uses add_zero_attn=True (an extra all-zero key and value)")
        ref_bias, own_bias = ref.in_proj_bias is not None, self.q_proj.bias is not None
        if ref_bias != own_bias:
            raise ValueError(f"load_torch: ref has bias={ref_bias}, this module has bias={own_bias}")
        if ref.batch_first != self.batch_first:
            raise ValueError(
                f"load_torch: ref has batch_first={ref.batch_first}, this module has batch_first={self.batch_first}: "
                "the same input would be read in different layouts"
            )
        if ref._qkv_same_embed_dim:
            weights = ref.in_proj_weight.chunk(3)
        else:
            weights = (ref.q_proj_weight, ref.k_proj_weight, ref.v_proj_weight)
        for proj, w in zip((self.q_proj, self.k_proj, self.v_proj), weights, strict=True):
            proj.weight.copy_(w)
        if ref.in_proj_bias is not None:
            for proj, b in zip((self.q_proj, self.k_proj, self.v_proj), ref.in_proj_bias.chunk(3), strict=True):
                proj.bias.copy_(b)
            self.out_proj.bias.copy_(ref.out_proj.bias)
        self.out_proj.weight.copy_(ref.out_proj.weight)
        return self

    def _check_attn_mask(self, mask: Tensor, B: int, T_q: int, T_k: int, dtype: torch.dtype) -> None:
        if not isinstance(mask, Tensor):
            raise TypeError(f"MultiHeadAttention: attn_mask must be a torch.Tensor or None, got {type(mask).__name__}")
        if mask.dtype != torch.bool and mask.dtype != dtype:
            raise TypeError(
                f"MultiHeadAttention: attn_mask must be bool (True = may attend) or additive of the query dtype "
                f"{dtype}, got {mask.dtype}"
            )
        allowed = {2: (T_q, T_k), 3: (B, T_q, T_k), 4: (B, self.num_heads, T_q, T_k)}
        want = allowed.get(mask.ndim)
        ok = want is not None and all(m in (1, w) for m, w in zip(mask.shape, want, strict=True))
        if not ok:
            raise ValueError(
                f"MultiHeadAttention: attn_mask must have shape (T_q, T_k)=({T_q}, {T_k}), (B, T_q, T_k) or "
                f"(B, H, T_q, T_k)=({B}, {self.num_heads}, {T_q}, {T_k}) (size-1 batch/head dims broadcast), "
                f"got {tuple(mask.shape)}"
            )

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        attn_mask: Tensor | None = None,
        key_mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
        average_attn_weights: bool = True,
        q_pos: Tensor | None = None,
        k_pos: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Self-attention when ``key``/``value`` are omitted, cross-attention otherwise.

        Args:
            query: ``(B, T_q, E)`` (or ``(T_q, B, E)`` if not ``batch_first``).
            key, value: ``(B, T_k, kdim)`` and ``(B, T_k, vdim)``; default to ``query``.
            attn_mask: ``(T_q, T_k)``, ``(B, T_q, T_k)`` or ``(B, H, T_q, T_k)``; bool (True = attend) or additive.
            key_mask: ``(B, T_k)`` bool, ``True`` for real keys (padding is ``False``).
            need_weights: return the weights, averaged over heads (``(B, T_q, T_k)``) unless
                ``average_attn_weights=False`` (``(B, H, T_q, T_k)``).

        Returns:
            ``(output (B, T_q, E), weights or None)``.
        """
        key = query if key is None else key
        value = key if value is None else value
        for name, t, width in (("query", query, self.embed_dim), ("key", key, self.kdim), ("value", value, self.vdim)):
            if not isinstance(t, Tensor):
                raise TypeError(f"MultiHeadAttention: {name} must be a torch.Tensor, got {type(t).__name__}")
            if t.ndim != 3:
                layout = "(B, L, width)" if self.batch_first else "(L, B, width)"
                raise ValueError(f"MultiHeadAttention: {name} must be a 3-D tensor {layout}, got {tuple(t.shape)}")
            if t.shape[-1] != width:
                raise ValueError(f"MultiHeadAttention: {name} must have last dim {width}, got shape {tuple(t.shape)}")
        check_input_dtype(self, "MultiHeadAttention", query=query, key=key, value=value)
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if key.shape[:2] != value.shape[:2] or key.shape[0] != query.shape[0]:
            raise ValueError(
                f"MultiHeadAttention: batch sizes and key/value lengths must agree, got query{tuple(query.shape)}, "
                f"key{tuple(key.shape)}, value{tuple(value.shape)}"
            )
        B, T_q, T_k = query.shape[0], query.shape[1], key.shape[1]
        mask = attn_mask
        if mask is not None:
            self._check_attn_mask(mask, B, T_q, T_k, query.dtype)
            if mask.ndim == 3:
                mask = mask[:, None]  # (B, 1, T_q, T_k)
        if key_mask is not None:
            if not isinstance(key_mask, Tensor) or key_mask.dtype != torch.bool:
                got = key_mask.dtype if isinstance(key_mask, Tensor) else type(key_mask).__name__
                raise TypeError(f"MultiHeadAttention: key_mask must be a bool tensor (True = real key), got {got}")
            if key_mask.shape != (B, T_k):
                raise ValueError(
                    f"MultiHeadAttention: key_mask must have shape (B, T_k)=({B}, {T_k}), got {tuple(key_mask.shape)}"
                )
            mask = combine_masks(mask, key_mask_to_attn_mask(key_mask), dtype=query.dtype)
        q = self.split_heads(self.q_proj(query))  # (B, H, T_q, D)
        k = self.repeat_kv_heads(self.split_kv_heads(self.k_proj(key)))  # (B, G, T_k, D) -> (B, H, T_k, D)
        v = self.repeat_kv_heads(self.split_kv_heads(self.v_proj(value)))  # (B, G, T_k, D) -> (B, H, T_k, D)
        out, weights = self.core(
            q, k, v, mask, is_causal=is_causal, need_weights=need_weights, q_pos=q_pos, k_pos=k_pos
        )  # (B, H, T_q, D), (B, H, T_q, T_k) or None
        out = self.out_proj(self.merge_heads(out))  # (B, T_q, E)
        if not self.batch_first:
            out = out.transpose(0, 1)
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)  # (B, T_q, T_k)
        return out, weights
