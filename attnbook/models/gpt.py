"""A GPT-style causal language model with a KV cache (chapter 06).

The model is GPT-2's decoder :cite:`radford2019language` -- token and learned position embeddings, pre-norm
blocks ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))`` with a tanh-GELU MLP of width ``4E``, a final LayerNorm and
an output head tied to the token embedding (weight tying, :cite:`press2017using`) -- so weights from
``transformers``' ``GPT2LMHeadModel`` load into it exactly (:func:`load_gpt2_state_dict`).

Attention is not written again here: each block's :class:`CausalSelfAttention` owns a
:class:`~attnbook.attention.core.MultiHeadAttention` (its projections and head splitting) and calls its
:class:`~attnbook.attention.core.AttentionCore`. ``attn_backend`` picks the core's path: ``"fused"``
(PyTorch's SDPA kernel), ``"manual"`` (the readable ``softmax(q k^T / sqrt(D)) v``) or ``"auto"``.

**Decoding with a KV cache** :cite:`pope2023efficiently`. A causal model's keys and values at position
``s`` never change once computed, because position ``s`` sees only ``x_{<=s}``. So generation can keep them
(:class:`KVCache`, ``2 * n_layer * G * d`` numbers per token, ``G = n_kv_head`` and ``d = n_embd / n_head``)
and, at each step, project only the newest token: ``q_t`` of shape ``(B, H, 1, d)``, ``k_t, v_t`` of shape
``(B, G, 1, d)``, append ``k_t, v_t`` to the cache and attend to ``K_{<=t}, V_{<=t}`` of shape
``(B, G, t, d)``. Compute per step falls from ``O(t)`` token-forwards to one;
what remains is reading the cache, ``O(t)`` memory traffic per token, which is what chapter 06 measures
(:class:`DecodeStats`) and what the Block Transformer (:mod:`attnbook.models.block_transformer`) reduces.

**Grouped-query attention** :cite:`ainslie2023gqa`. ``n_kv_head = G`` key-value heads are shared by the
``H`` query heads, ``H / G`` queries per group (query head ``h`` reads key-value head ``h // (H / G)``):
``G = H`` is multi-head attention, ``G = 1`` multi-query attention :cite:`shazeer2019fast`. The cache
stores ``G`` heads, so it is ``H / G`` times smaller, and so are the reads of every step.

**Choosing the next token.** :func:`sample_next_token` draws from ``softmax(z / tau)`` restricted to the
top-``kappa`` logits and/or the nucleus, the smallest set of tokens whose probability is at least ``p``
:cite:`holtzman2020curious`; :func:`beam_search` keeps the ``beam_width`` most probable continuations
instead, reordering the KV cache as beams are chosen.

Context window: positions are learned up to ``block_size``. :meth:`GPT.generate` keeps a window of at most
``block_size`` tokens; when it would overflow, the window restarts on its last ``block_size // 2`` tokens
(a fresh prefill). Cached and uncached generation follow the same rule, so they give the same tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.core import AttentionCore, MultiHeadAttention
from attnbook.attention.local import SlidingWindowPattern
from attnbook.attention.masks import causal_mask
from attnbook.models.pointer import IGNORE_INDEX  # -100, PyTorch's convention, shared by every loss of the book

__all__ = [
    "GPTConfig",
    "GPT",
    "Block",
    "CausalSelfAttention",
    "DecoderStack",
    "KVCache",
    "DecodeStats",
    "sample_next_token",
    "filter_logits",
    "beam_search",
    "check_token_ids",
    "check_sampling_args",
    "ATTN_BACKENDS",
    "ACTIVATIONS",
    "load_gpt2_state_dict",
]

ATTN_BACKENDS = ("auto", "fused", "manual")
#: The MLP's nonlinearity: GPT-2's tanh approximation of GELU (``"gelu_tanh"``) or the exact GELU (``"gelu"``).
ACTIVATIONS = ("gelu_tanh", "gelu")


@dataclass
class GPTConfig:
    """Size of a :class:`GPT`.

    Args:
        vocab_size: number of token ids ``V``.
        block_size: longest context ``T`` (the number of learned positions).
        n_layer: number of blocks.
        n_head: attention (query) heads per block ``H``; must divide ``n_embd``.
        n_kv_head: key-value heads ``G`` (grouped-query attention); must divide ``n_head``. ``None`` (the
            default) means ``n_head`` (multi-head attention); ``1`` is multi-query attention.
        n_embd: model width ``E``.
        dropout: dropout on embeddings, attention weights and residual branches (training only).
        bias: biases in the linear layers and LayerNorms (GPT-2 has them).
        attn_backend: ``"auto"``, ``"fused"`` (SDPA kernel) or ``"manual"`` (readable path).
        activation: the MLP's GELU: ``"gelu_tanh"`` (GPT-2's tanh approximation, the default, needed to
            reproduce GPT-2's weights) or ``"gelu"`` (the exact ``x Phi(x)``; on a CPU its kernels are faster,
            which shortens a small model's training step, see ``benchmarks/step_time.py``).
        attn_window: ``None`` (the default) lets every position see all earlier ones; an int ``w`` restricts each
            query to the ``w`` most recent positions, itself included (causal sliding-window attention,
            :class:`~attnbook.attention.local.SlidingWindowPattern`, chapter 08); ``L`` layers then reach
            ``L (w - 1) + 1`` positions back.
    """

    vocab_size: int
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    attn_backend: str = "auto"
    n_kv_head: int | None = None
    activation: str = "gelu_tanh"
    attn_window: int | None = None

    def __post_init__(self) -> None:
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "n_kv_head"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig.n_head={self.n_head} must divide n_embd={self.n_embd}")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"GPTConfig.n_kv_head={self.n_kv_head} must divide n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.attn_backend not in ATTN_BACKENDS:
            raise ValueError(f"GPTConfig.attn_backend must be one of {ATTN_BACKENDS}, got {self.attn_backend!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"GPTConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        window = self.attn_window
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window <= 0):
            raise ValueError(f"GPTConfig.attn_window must be a positive int or None, got {window!r}")


@dataclass
class DecodeStats:
    """What a generation call read from its KV caches, counted in code.

    ``kv_rows_read`` counts, summed over layers, the cached positions whose key and value attention loaded
    (one row = one position's ``k`` and ``v`` across all heads, for one sequence); ``kv_bytes_read`` is the
    same traffic in bytes for the whole batch. ``rows_per_step`` holds the rows read by each forward call.
    """

    kv_rows_read: int = 0
    kv_bytes_read: int = 0
    tokens_generated: int = 0
    rows_per_step: list[int] = field(default_factory=list)

    def rows_per_token(self) -> float:
        """Average cached rows read per generated token."""
        return self.kv_rows_read / max(self.tokens_generated, 1)


class KVCache:
    """Preallocated keys and values of every layer for the tokens decoded so far.

    Shapes: ``k, v`` are ``(n_layer, B, G, max_len, d)`` with ``G = n_head`` the key-value heads stored (the
    model's ``n_kv_head``; all ``H`` heads for multi-head attention). :meth:`update` writes the newest ``T``
    positions of one layer and returns that layer's keys and values up to them, ``(B, G, length + T, d)``.
    After all layers have run, :meth:`advance` moves ``length`` on by ``T``. The read counters add up what
    attention loaded. :meth:`select` keeps (and repeats) sequences of the batch, as beam search needs.
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        head_dim: int,
        max_len: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        sizes = {"n_layer": n_layer, "batch_size": batch_size, "n_head": n_head, "head_dim": head_dim}
        for name, value in {**sizes, "max_len": max_len}.items():
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"KVCache {name} must be a positive int, got {value!r}")
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, G, max_len, d)
        self.v = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, G, max_len, d)
        self.max_len = max_len
        self.length = 0
        self.rows_read = 0
        self.bytes_read = 0

    @property
    def n_layer(self) -> int:
        return self.k.shape[0]

    @property
    def batch_size(self) -> int:
        return self.k.shape[1]

    @property
    def bytes_per_token(self) -> int:
        """Cache memory per token for the whole batch: ``2 * n_layer * B * G * d * element size``."""
        n_layer, batch, heads, _, dim = self.k.shape
        return 2 * n_layer * batch * heads * dim * self.k.element_size()

    def update(self, layer: int, k_new: Tensor, v_new: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``k_new, v_new (B, G, T, d)`` for ``layer``; return keys and values ``(B, G, length + T, d)``."""
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < self.n_layer:
            raise ValueError(f"KVCache.update: layer must be an int in [0, {self.n_layer}), got {layer!r}")
        _, batch, heads, _, dim = self.k.shape
        for name, t in (("k_new", k_new), ("v_new", v_new)):
            if t.ndim != 4 or (t.shape[0], t.shape[1], t.shape[3]) != (batch, heads, dim):
                raise ValueError(
                    f"KVCache.update: {name} has shape {tuple(t.shape)}, this cache holds (B, G, T, d) = "
                    f"({batch}, {heads}, T, {dim})"
                )
        if v_new.shape != k_new.shape:
            raise ValueError(f"KVCache.update: v_new {tuple(v_new.shape)} differs from k_new {tuple(k_new.shape)}")
        end = self.length + k_new.shape[-2]
        if end > self.max_len:
            raise ValueError(f"KVCache is full: {self.length} + {k_new.shape[-2]} positions > max_len={self.max_len}")
        self.k[layer, :, :, self.length : end] = k_new
        self.v[layer, :, :, self.length : end] = v_new
        k_all = self.k[layer, :, :, :end]  # (B, G, length + T, d)
        v_all = self.v[layer, :, :, :end]  # (B, G, length + T, d)
        self.rows_read += end
        self.bytes_read += 2 * k_all.numel() * k_all.element_size()
        return k_all, v_all

    def advance(self, steps: int) -> None:
        self.length += steps

    def select(self, batch_indices: Tensor) -> None:
        """Keep the sequences ``batch_indices (B_new,)`` (repeats allowed): the batch becomes ``B_new``."""
        if not isinstance(batch_indices, Tensor) or batch_indices.ndim != 1 or batch_indices.dtype != torch.long:
            raise TypeError(f"KVCache.select: batch_indices must be a 1-D torch.long tensor, got {batch_indices!r}")
        if len(batch_indices) and not 0 <= int(batch_indices.min()) <= int(batch_indices.max()) < self.batch_size:
            raise ValueError(f"KVCache.select: batch_indices must lie in [0, {self.batch_size}), got {batch_indices}")
        self.k = self.k.index_select(1, batch_indices)  # (L, B_new, G, max_len, d)
        self.v = self.v.index_select(1, batch_indices)  # (L, B_new, G, max_len, d)


class CausalSelfAttention(nn.Module):
    """Masked multi-head (or grouped-query) self-attention of a decoder block, with an optional KV cache.

    The projections, head split/merge and the attention itself come from
    :class:`~attnbook.attention.core.MultiHeadAttention` and its :class:`~attnbook.attention.core.AttentionCore`;
    this module only decides which keys the new queries see. Without a cache the ``T`` queries are positions
    ``0..T-1`` and the core applies ``is_causal``. With a cache holding ``P`` positions, the queries are
    positions ``P..P+T-1``, the keys ``0..P+T-1``, and query ``P+i`` sees keys ``<= P+i``
    (a causal mask with offset ``P``; a single new query sees every key, so it needs no mask).

    With ``n_kv_head = G < H`` (grouped-query attention :cite:`ainslie2023gqa`; ``G = 1`` is multi-query
    attention :cite:`shazeer2019fast`) the inner :class:`MultiHeadAttention` has ``num_kv_heads=G``: ``k_proj``
    and ``v_proj`` map ``E -> G d``; the cache stores the ``G`` heads, and each is repeated for its ``H / G``
    query heads just before the core.
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        *,
        n_kv_head: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        backend: str = "auto",
        window: int | None = None,
    ):
        super().__init__()
        if n_kv_head is not None and (isinstance(n_kv_head, bool) or not isinstance(n_kv_head, int) or n_kv_head <= 0):
            raise ValueError(f"n_kv_head must be a positive int, got {n_kv_head!r}")
        if n_kv_head is not None and n_head % n_kv_head:
            raise ValueError(f"n_kv_head={n_kv_head} must divide n_head={n_head}")
        # A sliding window is a pattern of the core: it reads the positions, so it holds with a cache too.
        self.window = window
        pattern = SlidingWindowPattern(window, causal=True) if window is not None else None
        core = AttentionCore(dropout=dropout, backend=backend, pattern=pattern)
        self.mha = MultiHeadAttention(n_embd, n_head, bias=bias, core=core, num_kv_heads=n_kv_head)
        self.n_kv_head = self.mha.num_kv_heads
        self.resid_dropout = nn.Dropout(dropout)

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``q (B, T, E)``, ``k, v (B, T, G d)`` from ``x (B, T, E)`` in one matrix multiply.

        The weights stay ``mha.q_proj``, ``k_proj``, ``v_proj`` (state dicts and GPT-2 loading are unchanged);
        they are stacked into one ``(E + 2 G d, E)`` matrix per call, so the three projections are one GEMM
        forward and one backward: on one CPU thread at the book's sizes that is a little faster than three smaller
        GEMMs, even with the copy the stacking costs (part of the ``book`` row of ``benchmarks/step_time.py``).
        """
        mha = self.mha
        projections = (mha.q_proj, mha.k_proj, mha.v_proj)
        weight = torch.cat([p.weight for p in projections])  # (E + 2 G d, E)
        bias = None if mha.q_proj.bias is None else torch.cat([p.bias for p in projections])  # (E + 2 G d,)
        widths = [p.out_features for p in projections]
        q, k, v = F.linear(x, weight, bias).split(widths, dim=-1)  # (B, T, E), (B, T, G d), (B, T, G d)
        return q, k, v

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        """``x (B, T, E)`` -> ``(B, T, E)``."""
        mha = self.mha
        q, k, v = self.project_qkv(x)
        q = mha.split_heads(q)  # (B, H, T, d)
        k, v = mha.split_kv_heads(k), mha.split_kv_heads(v)  # (B, G, T, d) each
        T = x.shape[1]
        if cache is None:
            k, v = mha.repeat_kv_heads(k), mha.repeat_kv_heads(v)  # (B, H, T, d)
            out, _ = mha.core(q, k, v, is_causal=self.window is None)  # (B, H, T, d); a window is causal itself
        else:
            past = cache.length
            k, v = cache.update(layer, k, v)  # (B, G, past + T, d): the cache holds G heads
            k, v = mha.repeat_kv_heads(k), mha.repeat_kv_heads(v)  # (B, H, past + T, d)
            mask = None if T == 1 else causal_mask(T, past + T, offset=past, device=x.device)  # (T, past + T)
            q_pos = torch.arange(past, past + T, device=x.device)  # (T,)
            k_pos = torch.arange(past + T, device=x.device)  # (past + T,)
            out, _ = mha.core(q, k, v, mask, q_pos=q_pos, k_pos=k_pos)  # (B, H, T, d)
        return self.resid_dropout(mha.out_proj(mha.merge_heads(out)))  # (B, T, E)


class MLP(nn.Module):
    """Position-wise feed-forward ``W_2 GELU(W_1 x)``, width ``4E``; GPT-2's tanh-approximate GELU (``gelu_new``)
    by default, the exact one with ``activation="gelu"``."""

    def __init__(self, n_embd: int, *, dropout: float = 0.0, bias: bool = True, activation: str = "gelu_tanh") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.approximate = "tanh" if activation == "gelu_tanh" else "none"

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))  # (B, T, E)


class Block(nn.Module):
    """Pre-norm decoder block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        *,
        n_kv_head: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        backend: str = "auto",
        activation: str = "gelu_tanh",
        window: int | None = None,
    ):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(
            n_embd, n_head, n_kv_head=n_kv_head, dropout=dropout, bias=bias, backend=backend, window=window
        )
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout=dropout, bias=bias, activation=activation)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache, layer)  # (B, T, E)
        return x + self.mlp(self.ln_2(x))  # (B, T, E)


class DecoderStack(nn.Module):
    """Learned positions, ``n_layer`` causal :class:`Block` s and a final LayerNorm, on embeddings ``(B, T, E)``.

    The shared trunk of :class:`GPT` and of both decoders of the Block Transformer. With a cache the inputs
    are the positions after the ``cache.length`` already stored.
    """

    def __init__(
        self,
        n_layer: int,
        n_embd: int,
        n_head: int,
        max_len: int,
        *,
        n_kv_head: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        backend: str = "auto",
        activation: str = "gelu_tanh",
        window: int | None = None,
    ) -> None:
        super().__init__()
        self.n_layer, self.n_embd, self.n_head, self.max_len = n_layer, n_embd, n_head, max_len
        self.n_kv_head = n_head if n_kv_head is None else n_kv_head
        self.position_embedding = nn.Embedding(max_len, n_embd)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(
                n_embd,
                n_head,
                n_kv_head=n_kv_head,
                dropout=dropout,
                bias=bias,
                backend=backend,
                activation=activation,
                window=window,
            )
            for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)

    def new_cache(self, batch_size: int, *, dtype: torch.dtype, device: torch.device) -> KVCache:
        head_dim = self.n_embd // self.n_head
        return KVCache(self.n_layer, batch_size, self.n_kv_head, head_dim, self.max_len, dtype=dtype, device=device)

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        """``x (B, T, E)`` embeddings -> hidden states ``(B, T, E)`` after the final LayerNorm."""
        past = cache.length if cache is not None else 0
        T = x.shape[1]
        if cache is not None and (cache.batch_size, cache.n_layer) != (x.shape[0], self.n_layer):
            raise ValueError(
                f"cache holds batch_size={cache.batch_size} sequences of n_layer={cache.n_layer} layers, but the "
                f"input has shape {tuple(x.shape)} (B, T, E) and the stack has {self.n_layer} layers"
            )
        if past + T > self.max_len:
            raise ValueError(f"sequence of {past} cached + {T} new positions exceeds max_len={self.max_len}")
        pos = torch.arange(past, past + T, device=x.device)  # (T,)
        x = self.dropout(x + self.position_embedding(pos))  # (B, T, E)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)  # (B, T, E)
        if cache is not None:
            cache.advance(T)
        return self.ln_f(x)  # (B, T, E)


def check_token_ids(
    idx: object,
    name: str = "idx",
    *,
    max_len: int | None = None,
    vocab_size: int | None = None,
    max_len_name: str = "block_size",
) -> None:
    """Validate a ``(B, T)`` tensor of token ids (dtype ``torch.long``, ``1 <= T <= max_len``, ids in range).

    ``max_len_name`` says in the error message where the limit comes from.
    """
    if not isinstance(idx, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(idx).__name__}")
    if idx.dtype != torch.long:
        raise TypeError(f"{name} must have dtype torch.long (token ids), got {idx.dtype}")
    if idx.ndim != 2:
        raise ValueError(f"{name} must have shape (B, T), got {tuple(idx.shape)}")
    if idx.shape[0] == 0 or idx.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(idx.shape)}")
    if max_len is not None and idx.shape[1] > max_len:
        raise ValueError(f"{name} has length T={idx.shape[1]} > {max_len_name}={max_len}, got shape {tuple(idx.shape)}")
    if vocab_size is not None and not torch.compiler.is_compiling():
        low, high = (int(v) for v in torch.aminmax(idx))
        if low < 0 or high >= vocab_size:
            raise ValueError(f"{name} holds ids in [{low}, {high}], outside [0, {vocab_size})")


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None = None) -> None:
    """Validate sampling arguments: ``temperature`` a positive finite number, ``top_k`` a positive int or None,
    ``top_p`` a number in ``(0, 1]`` or None."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if not math.isfinite(temperature):
        raise ValueError(f"temperature must be finite, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be a number in (0, 1] or None, got {top_p!r}")


def filter_logits(
    logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> Tensor:
    """The logits ``(B, V)`` that sampling draws from: divided by ``temperature``, then ``-inf`` outside the
    ``top_k`` largest (ties at the k-th value are kept), then ``-inf`` outside the nucleus.

    The nucleus :cite:`holtzman2020curious` is the smallest set of most probable tokens whose probability
    (under the temperature and top-k distribution) is at least ``top_p``: sorted by probability, a token is
    kept while the mass of the tokens before it is below ``top_p``, so the most probable token always is.
    Returns float32 (or float64) logits ``(B, V)``.
    """
    check_sampling_args(temperature, top_k, top_p)
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        raise ValueError(f"logits must be a tensor of shape (B, V), got {getattr(logits, 'shape', type(logits))}")
    z = (logits if logits.dtype == torch.float64 else logits.float()) / temperature  # (B, V)
    if top_k is not None and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[:, -1:]  # (B, 1)
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        probs, order = torch.softmax(z, dim=-1).sort(dim=-1, descending=True)  # (B, V) each
        before = torch.cumsum(probs, dim=-1) - probs  # (B, V): mass of the more probable tokens
        drop_sorted = before >= top_p  # (B, V), in sorted order
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)  # (B, V), in vocabulary order
        z = z.masked_fill(drop, float("-inf"))
    return z


def sample_next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    top_p: float | None = None,
) -> Tensor:
    """Sample one token per row from ``logits (B, V)``; returns ``(B, 1)`` long.

    ``p = softmax(logits / temperature)`` restricted to the ``top_k`` largest logits and to the nucleus of
    mass ``top_p`` (:func:`filter_logits`). ``top_k=1`` is greedy decoding (argmax, no randomness used); lower
    temperatures sharpen the distribution towards it, higher ones flatten it towards uniform.
    """
    check_sampling_args(temperature, top_k, top_p)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (B, V), got {tuple(logits.shape)}")
    if top_k == 1:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    probs = torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


class GPT(nn.Module):
    """A character (or any-token) GPT :cite:`radford2019language`; see the module docstring.

    ``forward(idx (B, T), targets (B, T) | None) -> (logits (B, T, V), loss | None)``, where ``logits[:, t]``
    predicts the token after ``idx[:, t]`` and ``loss`` is the mean cross-entropy against ``targets``
    (entries equal to ``IGNORE_INDEX = -100``, PyTorch's convention, are ignored).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.decoder = DecoderStack(
            config.n_layer,
            config.n_embd,
            config.n_head,
            config.block_size,
            n_kv_head=config.n_kv_head,
            dropout=config.dropout,
            bias=config.bias,
            backend=config.attn_backend,
            activation=config.activation,
            window=config.attn_window,
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # tied, as in GPT-2 (Press & Wolf 2017)
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 n_layer) so the residual stream's variance stays O(1).
        for name, p in self.named_parameters():
            if name.endswith("out_proj.weight") or name.endswith("mlp.proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Number of distinct parameters (the tied head counted once); without position embeddings if asked."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.decoder.position_embedding.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None, training: bool = True) -> int:
        """Matmul FLOPs per token, for an MFU estimate.

        Forward: ``2 N_mm + 4 n_layer T E``, with ``N_mm`` the weights of every matrix multiply (attention and
        MLP projections and the ``E x V`` head) and ``4 T E`` per layer for ``q k^T`` and ``weights v`` over a
        context of ``T`` (``block_size`` by default). Training (forward + backward) is three times that, the
        ``6 N + 12 L T E`` of the PaLM appendix. With ``G`` key-value heads the key and value projections
        have ``2 E G d`` weights instead of ``2 E^2``.
        """
        c = self.config
        T = c.block_size if seq_len is None else seq_len
        kv_width = c.n_kv_head * (c.n_embd // c.n_head)
        per_layer = 10 * c.n_embd * c.n_embd + 2 * c.n_embd * kv_width  # q, out, MLP (8 E^2); k, v
        n_matmul = c.n_layer * per_layer + c.n_embd * c.vocab_size
        forward = 2 * n_matmul + 4 * c.n_layer * T * c.n_embd
        return 3 * forward if training else forward

    def kv_cache_bytes_per_token(self, dtype: torch.dtype | None = None) -> int:
        """KV cache memory per token and sequence: ``2 (k and v) * n_layer * G * d * bytes per element``."""
        c = self.config
        dtype = self.token_embedding.weight.dtype if dtype is None else dtype
        kv_width = c.n_kv_head * (c.n_embd // c.n_head)
        return 2 * c.n_layer * kv_width * torch.empty((), dtype=dtype).element_size()

    def new_cache(self, batch_size: int) -> KVCache:
        """An empty :class:`KVCache` for ``batch_size`` sequences of up to ``block_size`` tokens."""
        w = self.token_embedding.weight
        return self.decoder.new_cache(batch_size, dtype=w.dtype, device=w.device)

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, *, cache: KVCache | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Logits ``(B, T, V)`` and, given ``targets (B, T)``, the mean cross-entropy.

        With ``cache``, ``idx`` holds the tokens after the ``cache.length`` positions already cached.
        """
        past = cache.length if cache is not None else 0
        if cache is not None and isinstance(idx, Tensor) and idx.ndim == 2 and cache.batch_size != idx.shape[0]:
            raise ValueError(
                f"cache holds batch_size={cache.batch_size} sequences, but idx has shape {tuple(idx.shape)}: "
                "make a cache for this batch with new_cache(batch_size)"
            )
        limit = "block_size" if cache is None else f"block_size - cached positions ({past})"
        check_token_ids(
            idx, "idx", max_len=self.config.block_size - past, vocab_size=self.config.vocab_size, max_len_name=limit
        )
        if targets is not None:
            if not isinstance(targets, Tensor) or targets.dtype != torch.long:
                raise TypeError(f"targets must be a torch.long tensor, got {getattr(targets, 'dtype', type(targets))}")
            if targets.shape != idx.shape:
                raise ValueError(f"targets must have the shape of idx {tuple(idx.shape)}, got {tuple(targets.shape)}")
            bad = (targets != IGNORE_INDEX) & ((targets < 0) | (targets >= self.config.vocab_size))
            if bool(bad.any()):
                raise ValueError(
                    f"targets must be token ids in [0, {self.config.vocab_size}) or IGNORE_INDEX={IGNORE_INDEX} "
                    f"(ignored positions), got {int(targets[bad][0])}"
                )
        x = self.token_embedding(idx)  # (B, T, E)
        h = self.decoder(x, cache)  # (B, T, E)
        logits = self.lm_head(h)  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
        *,
        top_p: float | None = None,
        stats: DecodeStats | None = None,
    ) -> Tensor:
        """Continue the prompts ``idx (B, T)`` by ``max_new_tokens`` sampled tokens; returns ``(B, T + new)``.

        Args:
            temperature, top_k, top_p, generator: see :func:`sample_next_token`; ``top_k=1`` is greedy.
            use_cache: keep keys and values in a :class:`KVCache` (one new token per forward) instead of
                re-running the whole window at every step. Both give the same tokens.
            stats: if given, filled with the KV-cache reads of this call (cached decoding only).

        The model runs in eval mode (no dropout) and is put back in its previous mode afterwards.
        """
        check_token_ids(idx, "idx", vocab_size=self.config.vocab_size)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
        check_sampling_args(temperature, top_k, top_p)
        block = self.config.block_size
        keep = max(block // 2, 1)
        was_training = self.training
        self.eval()
        out, start, cache = idx, 0, None
        try:
            for _ in range(max_new_tokens):
                if out.shape[1] - start > block:  # window full: restart it on its last `keep` tokens
                    start, cache = out.shape[1] - keep, None
                if not use_cache:
                    logits, _ = self(out[:, start:])  # (B, T_window, V)
                else:
                    fresh = cache is None
                    if fresh:
                        cache = self.new_cache(out.shape[0])
                    rows_before = cache.rows_read
                    bytes_before = cache.bytes_read
                    logits, _ = self(out[:, start:] if fresh else out[:, -1:], cache=cache)  # (B, T_in, V)
                    if stats is not None:
                        stats.rows_per_step.append(cache.rows_read - rows_before)
                        stats.kv_rows_read += cache.rows_read - rows_before
                        stats.kv_bytes_read += cache.bytes_read - bytes_before
                next_token = sample_next_token(logits[:, -1], temperature, top_k, generator, top_p)  # (B, 1)
                out = torch.cat([out, next_token], dim=1)  # (B, T + 1)
                if stats is not None:
                    stats.tokens_generated += 1
        finally:
            self.train(was_training)
        return out


@torch.no_grad()
def beam_search(model: GPT, prompt: Tensor, beam_width: int, max_new_tokens: int) -> tuple[Tensor, Tensor]:
    """The ``beam_width`` most probable continuations of each prompt found by beam search, with the KV cache.

    Each step extends every kept sequence (beam) by every token, scores the extensions by their total
    log-probability ``sum_t log p(x_t | x_<t)`` over the new tokens, and keeps the ``beam_width`` best per
    prompt; the cache follows the kept beams (:meth:`KVCache.select`). ``beam_width=1`` is greedy decoding; a
    width of ``V ** (max_new_tokens - 1)`` keeps every sequence and is exact. All continuations have the same
    length, so no length normalisation is needed. The whole sequence must fit in one window:
    ``T + max_new_tokens - 1 <= block_size``.

    Args:
        model: a :class:`GPT` (run in eval mode, then put back in its previous mode).
        prompt: ``(B, T)`` token ids.
        beam_width: beams kept per prompt ``W``.
        max_new_tokens: tokens to add.

    Returns:
        ``sequences (B, W, T + max_new_tokens)`` best first, and their scores ``(B, W)`` (total log-probability
        of the new tokens; ``-inf`` for beams that do not exist, when ``W`` exceeds the sequences there are).
    """
    if not isinstance(model, GPT):
        raise TypeError(f"model must be a GPT, got {type(model).__name__}")
    block, vocab = model.config.block_size, model.config.vocab_size
    check_token_ids(prompt, "prompt", max_len=block, vocab_size=vocab)
    for name, value, low in (("beam_width", beam_width, 1), ("max_new_tokens", max_new_tokens, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    B, T = prompt.shape
    if T + max_new_tokens - 1 > block:
        raise ValueError(
            f"beam search keeps one window: prompt length T={T} + max_new_tokens={max_new_tokens} - 1 exceeds "
            f"block_size={block}"
        )
    W = beam_width
    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache(B)
        logits, _ = model(prompt, cache=cache)  # (B, T, V): prefill once per prompt
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        log_probs = torch.log_softmax(logits[:, -1].to(dtype), dim=-1)[:, None].expand(B, W, vocab)  # (B, W, V)
        cache.select(torch.arange(B, device=prompt.device).repeat_interleave(W))  # batch B -> B * W
        sequences = prompt[:, None].expand(B, W, T)  # (B, W, T)
        scores = torch.full((B, W), float("-inf"), dtype=dtype, device=prompt.device)  # (B, W)
        scores[:, 0] = 0.0  # one live beam at the start: the copies must not be chosen twice
        for step in range(max_new_tokens):
            if step > 0:
                logits, _ = model(sequences[:, :, -1].reshape(B * W, 1), cache=cache)  # (B * W, 1, V)
                log_probs = torch.log_softmax(logits[:, -1].to(dtype), dim=-1).view(B, W, vocab)  # (B, W, V)
            total = scores[:, :, None] + log_probs  # (B, W, V): every beam extended by every token
            scores, flat = total.reshape(B, W * vocab).topk(W, dim=-1)  # (B, W) each, best first
            beam, token = flat // vocab, flat % vocab  # (B, W) each
            kept = sequences.gather(1, beam[:, :, None].expand(B, W, sequences.shape[-1]))  # (B, W, T + step)
            sequences = torch.cat([kept, token[:, :, None]], dim=-1)  # (B, W, T + step + 1)
            if step + 1 < max_new_tokens:
                rows = torch.arange(B, device=prompt.device)[:, None] * W + beam  # (B, W): rows of the cache
                cache.select(rows.reshape(-1))
    finally:
        model.train(was_training)
    return sequences, scores


def load_gpt2_state_dict(model: GPT, hf_state_dict: dict[str, Tensor]) -> GPT:
    """Copy the weights of a ``transformers`` ``GPT2LMHeadModel`` (its ``state_dict()``) into ``model``.

    GPT-2 stores its projections as ``Conv1D`` with weight ``(in, out)``, the transpose of ``nn.Linear``'s
    ``(out, in)``, and fuses ``q, k, v`` into one ``c_attn`` of width ``3E`` (split in that order).
    Returns ``model``. Raises ``KeyError``/``ValueError`` if a tensor is missing or has the wrong shape.
    """
    if model.config.n_kv_head != model.config.n_head:
        raise ValueError(
            f"GPT-2 has multi-head attention: model.config.n_kv_head={model.config.n_kv_head} must equal "
            f"n_head={model.config.n_head}"
        )
    sd = {k.removeprefix("transformer."): v for k, v in hf_state_dict.items()}
    E = model.config.n_embd

    def put(param: Tensor, value: Tensor, name: str) -> None:
        if param.shape != value.shape:
            raise ValueError(f"{name}: expected shape {tuple(param.shape)}, got {tuple(value.shape)}")
        param.copy_(value)

    with torch.no_grad():
        put(model.token_embedding.weight, sd["wte.weight"], "wte.weight")
        put(model.decoder.position_embedding.weight, sd["wpe.weight"], "wpe.weight")
        for i, block in enumerate(model.decoder.blocks):
            p = f"h.{i}."
            mha = block.attn.mha
            w = sd[p + "attn.c_attn.weight"].t()  # (3E, E): rows q, then k, then v
            for j, proj in enumerate((mha.q_proj, mha.k_proj, mha.v_proj)):
                put(proj.weight, w[j * E : (j + 1) * E], p + "attn.c_attn.weight")
                if proj.bias is not None:
                    put(proj.bias, sd[p + "attn.c_attn.bias"][j * E : (j + 1) * E], p + "attn.c_attn.bias")
            pairs = [
                (mha.out_proj, "attn.c_proj"),
                (block.mlp.fc, "mlp.c_fc"),
                (block.mlp.proj, "mlp.c_proj"),
            ]
            for linear, name in pairs:
                put(linear.weight, sd[p + name + ".weight"].t(), p + name + ".weight")
                if linear.bias is not None:
                    put(linear.bias, sd[p + name + ".bias"], p + name + ".bias")
            for ln, name in ((block.ln_1, "ln_1"), (block.ln_2, "ln_2")):
                put(ln.weight, sd[p + name + ".weight"], p + name + ".weight")
                if ln.bias is not None:
                    put(ln.bias, sd[p + name + ".bias"], p + name + ".bias")
        put(model.decoder.ln_f.weight, sd["ln_f.weight"], "ln_f.weight")
        if model.decoder.ln_f.bias is not None:
            put(model.decoder.ln_f.bias, sd["ln_f.bias"], "ln_f.bias")
    return model
