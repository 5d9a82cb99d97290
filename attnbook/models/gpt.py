"""A GPT-style causal language model with a KV cache (chapter 06).

The model is GPT-2's decoder :cite:`radford2019language` -- token and learned position embeddings, pre-norm
blocks ``x + attn(ln_1(x))``, ``x + mlp(ln_2(x))`` with a tanh-GELU MLP of width ``4E``, a final LayerNorm and
an output head tied to the token embedding -- so weights from ``transformers``' ``GPT2LMHeadModel`` load
into it exactly (:func:`load_gpt2_state_dict`).

Attention is not written again here: each block's :class:`CausalSelfAttention` owns a
:class:`~attnbook.attention.core.MultiHeadAttention` (its projections and head splitting) and calls its
:class:`~attnbook.attention.core.AttentionCore`. ``attn_backend`` picks the core's path: ``"fused"``
(PyTorch's SDPA kernel), ``"manual"`` (the readable ``softmax(q k^T / sqrt(D)) v``) or ``"auto"``.

**Decoding with a KV cache** :cite:`pope2023efficiently`. A causal model's keys and values at position
``s`` never change once computed, because position ``s`` sees only ``x_{<=s}``. So generation can keep them
(:class:`KVCache`, ``2 * n_layer * n_embd`` numbers per token) and, at each step, project only the newest
token: ``q_t, k_t, v_t`` of shape ``(B, H, 1, D)``, append ``k_t, v_t`` to the cache and attend to
``K_{<=t}, V_{<=t}`` of shape ``(B, H, t, D)``. Compute per step falls from ``O(t)`` token-forwards to one;
what remains is reading the cache, ``O(t)`` memory traffic per token, which is what chapter 06 measures
(:class:`DecodeStats`) and what the Block Transformer (:mod:`attnbook.models.block_transformer`) reduces.

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
from attnbook.attention.masks import causal_mask

__all__ = [
    "GPTConfig",
    "GPT",
    "Block",
    "CausalSelfAttention",
    "DecoderStack",
    "KVCache",
    "DecodeStats",
    "sample_next_token",
    "check_token_ids",
    "check_sampling_args",
    "ATTN_BACKENDS",
    "load_gpt2_state_dict",
]

ATTN_BACKENDS = ("auto", "fused", "manual")


@dataclass
class GPTConfig:
    """Size of a :class:`GPT`.

    Args:
        vocab_size: number of token ids ``V``.
        block_size: longest context ``T`` (the number of learned positions).
        n_layer: number of blocks.
        n_head: attention heads per block; must divide ``n_embd``.
        n_embd: model width ``E``.
        dropout: dropout on embeddings, attention weights and residual branches (training only).
        bias: biases in the linear layers and LayerNorms (GPT-2 has them).
        attn_backend: ``"auto"``, ``"fused"`` (SDPA kernel) or ``"manual"`` (readable path).
    """

    vocab_size: int
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    attn_backend: str = "auto"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig.n_head={self.n_head} must divide n_embd={self.n_embd}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.attn_backend not in ATTN_BACKENDS:
            raise ValueError(f"GPTConfig.attn_backend must be one of {ATTN_BACKENDS}, got {self.attn_backend!r}")


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

    Shapes: ``k, v`` are ``(n_layer, B, H, max_len, D)``; :meth:`update` writes the newest ``T`` positions of
    one layer and returns that layer's keys and values up to them, ``(B, H, length + T, D)``. After all layers
    have run, :meth:`advance` moves ``length`` on by ``T``. The read counters add up what attention loaded.
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
        shape = (n_layer, batch_size, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, H, max_len, D)
        self.v = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, H, max_len, D)
        self.max_len = max_len
        self.length = 0
        self.rows_read = 0
        self.bytes_read = 0

    @property
    def bytes_per_token(self) -> int:
        """Cache memory per token for the whole batch: ``2 * n_layer * B * H * D * element size``."""
        n_layer, batch, heads, _, dim = self.k.shape
        return 2 * n_layer * batch * heads * dim * self.k.element_size()

    def update(self, layer: int, k_new: Tensor, v_new: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``k_new, v_new (B, H, T, D)`` for ``layer``; return keys and values ``(B, H, length + T, D)``."""
        end = self.length + k_new.shape[-2]
        if end > self.max_len:
            raise ValueError(f"KVCache is full: {self.length} + {k_new.shape[-2]} positions > max_len={self.max_len}")
        self.k[layer, :, :, self.length : end] = k_new
        self.v[layer, :, :, self.length : end] = v_new
        k_all = self.k[layer, :, :, :end]  # (B, H, length + T, D)
        v_all = self.v[layer, :, :, :end]  # (B, H, length + T, D)
        self.rows_read += end
        self.bytes_read += 2 * k_all.numel() * k_all.element_size()
        return k_all, v_all

    def advance(self, steps: int) -> None:
        self.length += steps


class CausalSelfAttention(nn.Module):
    """Masked multi-head self-attention of a decoder block, with an optional KV cache.

    The projections, head split/merge and the attention itself come from
    :class:`~attnbook.attention.core.MultiHeadAttention` and its :class:`~attnbook.attention.core.AttentionCore`;
    this module only decides which keys the new queries see. Without a cache the ``T`` queries are positions
    ``0..T-1`` and the core applies ``is_causal``. With a cache holding ``P`` positions, the queries are
    positions ``P..P+T-1``, the keys ``0..P+T-1``, and query ``P+i`` sees keys ``<= P+i``
    (a causal mask with offset ``P``; a single new query sees every key, so it needs no mask).
    """

    def __init__(self, n_embd: int, n_head: int, *, dropout: float = 0.0, bias: bool = True, backend: str = "auto"):
        super().__init__()
        core = AttentionCore(dropout=dropout, backend=backend)
        self.mha = MultiHeadAttention(n_embd, n_head, bias=bias, core=core)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        """``x (B, T, E)`` -> ``(B, T, E)``."""
        mha = self.mha
        q = mha.split_heads(mha.q_proj(x))  # (B, H, T, D)
        k = mha.split_heads(mha.k_proj(x))  # (B, H, T, D)
        v = mha.split_heads(mha.v_proj(x))  # (B, H, T, D)
        T = x.shape[1]
        if cache is None:
            out, _ = mha.core(q, k, v, is_causal=True)  # (B, H, T, D)
        else:
            past = cache.length
            k, v = cache.update(layer, k, v)  # (B, H, past + T, D)
            mask = None if T == 1 else causal_mask(T, past + T, offset=past, device=x.device)  # (T, past + T)
            q_pos = torch.arange(past, past + T, device=x.device)  # (T,)
            k_pos = torch.arange(past + T, device=x.device)  # (past + T,)
            out, _ = mha.core(q, k, v, mask, q_pos=q_pos, k_pos=k_pos)  # (B, H, T, D)
        return self.resid_dropout(mha.out_proj(mha.merge_heads(out)))  # (B, T, E)


class MLP(nn.Module):
    """Position-wise feed-forward ``W_2 GELU_tanh(W_1 x)``, width ``4E`` (GPT-2's ``gelu_new``)."""

    def __init__(self, n_embd: int, *, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate="tanh")))  # (B, T, E)


class Block(nn.Module):
    """Pre-norm decoder block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, n_embd: int, n_head: int, *, dropout: float = 0.0, bias: bool = True, backend: str = "auto"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout=dropout, bias=bias, backend=backend)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout=dropout, bias=bias)

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
        dropout: float = 0.0,
        bias: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.n_layer, self.n_embd, self.n_head, self.max_len = n_layer, n_embd, n_head, max_len
        self.position_embedding = nn.Embedding(max_len, n_embd)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(n_embd, n_head, dropout=dropout, bias=bias, backend=backend) for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)

    def new_cache(self, batch_size: int, *, dtype: torch.dtype, device: torch.device) -> KVCache:
        return KVCache(
            self.n_layer, batch_size, self.n_head, self.n_embd // self.n_head, self.max_len, dtype=dtype, device=device
        )

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        """``x (B, T, E)`` embeddings -> hidden states ``(B, T, E)`` after the final LayerNorm."""
        past = cache.length if cache is not None else 0
        T = x.shape[1]
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
        low, high = int(idx.min()), int(idx.max())
        if low < 0 or high >= vocab_size:
            raise ValueError(f"{name} holds ids in [{low}, {high}], outside [0, {vocab_size})")


def check_sampling_args(temperature: float, top_k: int | None) -> None:
    """Validate sampling arguments: ``temperature`` a positive finite number, ``top_k`` a positive int or None."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if not math.isfinite(temperature):
        raise ValueError(f"temperature must be finite, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")


def sample_next_token(
    logits: Tensor, temperature: float = 1.0, top_k: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    """Sample one token per row from ``logits (B, V)``; returns ``(B, 1)`` long.

    ``p = softmax(logits / temperature)`` restricted to the ``top_k`` largest logits (ties at the k-th
    value are kept). ``top_k=1`` is greedy decoding (argmax, no randomness used); lower temperatures
    sharpen the distribution towards it, higher ones flatten it towards uniform.
    """
    check_sampling_args(temperature, top_k)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (B, V), got {tuple(logits.shape)}")
    if top_k == 1:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = logits.float() / temperature  # (B, V)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)


class GPT(nn.Module):
    """A character (or any-token) GPT :cite:`radford2019language`; see the module docstring.

    ``forward(idx (B, T), targets (B, T) | None) -> (logits (B, T, V), loss | None)``, where ``logits[:, t]``
    predicts the token after ``idx[:, t]`` and ``loss`` is the mean cross-entropy against ``targets``
    (``-1`` entries are ignored).
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
            dropout=config.dropout,
            bias=config.bias,
            backend=config.attn_backend,
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # tied, as in GPT-2
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
        ``6 N + 12 L T E`` of the PaLM appendix.
        """
        c = self.config
        T = c.block_size if seq_len is None else seq_len
        n_matmul = c.n_layer * 12 * c.n_embd * c.n_embd + c.n_embd * c.vocab_size
        forward = 2 * n_matmul + 4 * c.n_layer * T * c.n_embd
        return 3 * forward if training else forward

    def kv_cache_bytes_per_token(self, dtype: torch.dtype | None = None) -> int:
        """KV cache memory per token and sequence: ``2 (k and v) * n_layer * n_embd * bytes per element``."""
        dtype = self.token_embedding.weight.dtype if dtype is None else dtype
        return 2 * self.config.n_layer * self.config.n_embd * torch.empty((), dtype=dtype).element_size()

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
        limit = "block_size" if cache is None else f"block_size - cached positions ({past})"
        check_token_ids(
            idx, "idx", max_len=self.config.block_size - past, vocab_size=self.config.vocab_size, max_len_name=limit
        )
        if targets is not None:
            if not isinstance(targets, Tensor) or targets.dtype != torch.long:
                raise TypeError(f"targets must be a torch.long tensor, got {getattr(targets, 'dtype', type(targets))}")
            if targets.shape != idx.shape:
                raise ValueError(f"targets must have the shape of idx {tuple(idx.shape)}, got {tuple(targets.shape)}")
        x = self.token_embedding(idx)  # (B, T, E)
        h = self.decoder(x, cache)  # (B, T, E)
        logits = self.lm_head(h)  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-1)
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
        stats: DecodeStats | None = None,
    ) -> Tensor:
        """Continue the prompts ``idx (B, T)`` by ``max_new_tokens`` sampled tokens; returns ``(B, T + new)``.

        Args:
            temperature, top_k, generator: see :func:`sample_next_token`; ``top_k=1`` is greedy.
            use_cache: keep keys and values in a :class:`KVCache` (one new token per forward) instead of
                re-running the whole window at every step. Both give the same tokens.
            stats: if given, filled with the KV-cache reads of this call (cached decoding only).

        The model runs in eval mode (no dropout) and is put back in its previous mode afterwards.
        """
        check_token_ids(idx, "idx", vocab_size=self.config.vocab_size)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
        check_sampling_args(temperature, top_k)
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
                next_token = sample_next_token(logits[:, -1], temperature, top_k, generator)  # (B, 1)
                out = torch.cat([out, next_token], dim=1)  # (B, T + 1)
                if stats is not None:
                    stats.tokens_generated += 1
        finally:
            self.train(was_training)
        return out


def load_gpt2_state_dict(model: GPT, hf_state_dict: dict[str, Tensor]) -> GPT:
    """Copy the weights of a ``transformers`` ``GPT2LMHeadModel`` (its ``state_dict()``) into ``model``.

    GPT-2 stores its projections as ``Conv1D`` with weight ``(in, out)``, the transpose of ``nn.Linear``'s
    ``(out, in)``, and fuses ``q, k, v`` into one ``c_attn`` of width ``3E`` (split in that order).
    Returns ``model``. Raises ``KeyError``/``ValueError`` if a tensor is missing or has the wrong shape.
    """
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
