"""The Block Transformer: global-to-local decoding (chapter 06).

Block Transformer: Global-to-Local Language Modeling for Fast Inference (Ho et al., 2024,
:cite:`ho2024block`). In a vanilla decoder every generated token reads the KV cache of the *whole*
context in *every* layer: ``n_layer * t`` cached rows at position ``t``. The Block Transformer splits the
work in two:

* **Embedder**: each block of ``L_B`` tokens becomes one block embedding, by looking up the ``L_B`` token
  embeddings and projecting their concatenation, ``e_b = W_emb [x_{b L_B}; ...; x_{b L_B + L_B - 1}]``.
* **Block decoder** (global, coarse): a causal transformer over block embeddings. Its input at block
  position ``b`` is ``e_{b-1}`` (a learned start embedding at ``b = 0``), so its output ``c_b`` summarises
  blocks ``< b``. It runs once per *block*, and its cache has one row per block: ``t / L_B`` rows.
* **Token decoder** (local, fine): a causal transformer over one block at a time, whose input is
  ``n_prefix`` prefix vectors projected from ``c_b`` followed by the block's tokens. It never attends
  outside the block, so its cache holds at most ``n_prefix + L_B - 1`` rows, whatever the context length.

Logits convention: ``logits[:, t]`` is the distribution of ``idx[:, t]`` given ``idx[:, :t]`` (the first
token is predicted from the start embedding alone). ``T`` must be a multiple of ``block_len`` in
:meth:`BlockTransformer.forward`; :meth:`BlockTransformer.generate` handles any prompt length.

Shapes: ``B`` batch, ``N`` blocks, ``L_B`` = ``block_len``, ``P`` = ``n_prefix``, ``E`` width, ``V`` vocab.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.models.gpt import (
    ATTN_BACKENDS,
    GPT,
    DecoderStack,
    DecodeStats,
    KVCache,
    check_sampling_args,
    check_token_ids,
    sample_next_token,
)

__all__ = ["BlockTransformerConfig", "BlockTransformer"]


@dataclass
class BlockTransformerConfig:
    """Size of a :class:`BlockTransformer`.

    Args:
        vocab_size: number of token ids ``V``.
        block_len: tokens per block ``L_B``.
        max_blocks: longest context in blocks (positions of the block decoder).
        block_n_layer, token_n_layer: layers of the block (global) and token (local) decoders.
        n_head: heads in both decoders; must divide ``n_embd``.
        n_embd: width ``E`` of both decoders.
        n_prefix: prefix vectors ``P`` the token decoder gets from the block decoder's context embedding.
        dropout, bias, attn_backend: as in :class:`~attnbook.models.gpt.GPTConfig`.
    """

    vocab_size: int
    block_len: int = 4
    max_blocks: int = 16
    block_n_layer: int = 2
    token_n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    n_prefix: int = 1
    dropout: float = 0.0
    bias: bool = True
    attn_backend: str = "auto"

    def __post_init__(self) -> None:
        names = (
            "vocab_size",
            "block_len",
            "max_blocks",
            "block_n_layer",
            "token_n_layer",
            "n_head",
            "n_embd",
            "n_prefix",
        )
        for name in names:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"BlockTransformerConfig.{name} must be a positive int, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"BlockTransformerConfig.n_head={self.n_head} must divide n_embd={self.n_embd}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BlockTransformerConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.attn_backend not in ATTN_BACKENDS:
            raise ValueError(
                f"BlockTransformerConfig.attn_backend must be one of {ATTN_BACKENDS}, got {self.attn_backend!r}"
            )

    @property
    def context_len(self) -> int:
        """Longest context in tokens, ``max_blocks * block_len``."""
        return self.max_blocks * self.block_len


class BlockTransformer(nn.Module):
    """Global-to-local language model :cite:`ho2024block`; see the module docstring."""

    def __init__(self, config: BlockTransformerConfig) -> None:
        super().__init__()
        if not isinstance(config, BlockTransformerConfig):
            raise TypeError(f"config must be a BlockTransformerConfig, got {type(config).__name__}")
        self.config = c = config
        kw = dict(dropout=c.dropout, bias=c.bias, backend=c.attn_backend)
        self.token_embedding = nn.Embedding(c.vocab_size, c.n_embd)
        self.embedder = nn.Linear(c.block_len * c.n_embd, c.n_embd, bias=c.bias)
        self.start_block = nn.Parameter(torch.zeros(c.n_embd))
        self.block_decoder = DecoderStack(c.block_n_layer, c.n_embd, c.n_head, c.max_blocks, **kw)
        self.prefix = nn.Linear(c.n_embd, c.n_prefix * c.n_embd, bias=c.bias)
        self.token_decoder = DecoderStack(c.token_n_layer, c.n_embd, c.n_head, c.n_prefix + c.block_len - 1, **kw)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight
        self.apply(GPT._init_weights)
        nn.init.normal_(self.start_block, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- the three parts -------------------------------------------------------------------------------
    def embed_blocks(self, idx: Tensor) -> Tensor:
        """``idx (B, N * L_B)`` -> block embeddings ``(B, N, E)`` (lookup and concatenate, then project)."""
        B, T = idx.shape
        c = self.config
        tok = self.token_embedding(idx)  # (B, N * L_B, E)
        return self.embedder(tok.reshape(B, T // c.block_len, c.block_len * c.n_embd))  # (B, N, E)

    def block_inputs(self, block_emb: Tensor) -> Tensor:
        """Shift right: ``[start, e_0, ..., e_{N-2}]`` so that output ``b`` sees only blocks ``< b``; ``(B, N, E)``."""
        B = block_emb.shape[0]
        start = self.start_block.expand(B, 1, -1)  # (B, 1, E)
        return torch.cat([start, block_emb[:, :-1]], dim=1)  # (B, N, E)

    def prefix_vectors(self, context: Tensor) -> Tensor:
        """Block decoder outputs ``(..., E)`` -> token decoder prefixes ``(..., P, E)``."""
        return self.prefix(context).unflatten(-1, (self.config.n_prefix, self.config.n_embd))  # (..., P, E)

    def decode_tokens(self, prefix: Tensor, tokens: Tensor, cache: KVCache | None = None) -> Tensor:
        """Token decoder over ``[prefix (M, P, E); tok(tokens) (M, r, E)]``; logits ``(M, P + r, V)``."""
        x = torch.cat([prefix, self.token_embedding(tokens)], dim=1)  # (M, P + r, E)
        return self.lm_head(self.token_decoder(x, cache))  # (M, P + r, V)

    # -- training / scoring ----------------------------------------------------------------------------
    def forward(self, idx: Tensor, *, per_block_loop: bool = False) -> Tensor:
        """Logits ``(B, T, V)``; ``logits[:, t]`` predicts ``idx[:, t]`` from ``idx[:, :t]``.

        ``per_block_loop=True`` runs the token decoder block by block (the definition) instead of on all
        blocks at once as a batch of ``B * N`` short sequences; both give the same logits.
        """
        c = self.config
        check_token_ids(
            idx, "idx", max_len=c.context_len, vocab_size=c.vocab_size, max_len_name="max_blocks * block_len"
        )
        B, T = idx.shape
        if T % c.block_len:
            raise ValueError(f"idx length T={T} must be a multiple of block_len={c.block_len}")
        N, P = T // c.block_len, c.n_prefix
        context = self.block_decoder(self.block_inputs(self.embed_blocks(idx)))  # (B, N, E)
        prefix = self.prefix_vectors(context)  # (B, N, P, E)
        blocks = idx.view(B, N, c.block_len)  # (B, N, L_B)
        if per_block_loop:
            logits = torch.stack(
                [self.decode_tokens(prefix[:, b], blocks[:, b, :-1])[:, P - 1 :] for b in range(N)], dim=1
            )  # (B, N, L_B, V)
        else:
            flat = self.decode_tokens(
                prefix.reshape(B * N, P, c.n_embd),  # (B N, P, E)
                blocks.reshape(B * N, c.block_len)[:, :-1],  # (B N, L_B - 1)
            )  # (B N, P + L_B - 1, V)
            logits = flat[:, P - 1 :].reshape(B, N, c.block_len, -1)  # (B, N, L_B, V)
        return logits.reshape(B, T, -1)  # (B, T, V)

    def loss(self, idx: Tensor) -> Tensor:
        """Mean cross-entropy of predicting every token of ``idx (B, T)`` from the tokens before it."""
        logits = self(idx)  # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx.reshape(-1))

    # -- generation ------------------------------------------------------------------------------------
    def _next_logits_uncached(self, window: Tensor) -> Tensor:
        """Next-token logits ``(B, V)`` for a window starting at a block boundary, recomputed from scratch."""
        c = self.config
        B, T = window.shape
        n_full = T // c.block_len
        emb = self.embed_blocks(window[:, : n_full * c.block_len])  # (B, n_full, E)
        start = self.start_block.expand(B, 1, -1)  # (B, 1, E)
        context = self.block_decoder(torch.cat([start, emb], dim=1))[:, -1]  # (B, E): summary of the full blocks
        prefix = self.prefix_vectors(context)  # (B, P, E)
        partial = window[:, n_full * c.block_len :]  # (B, r)
        return self.decode_tokens(prefix, partial)[:, -1]  # (B, V)

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
        """Continue ``idx (B, T)`` by ``max_new_tokens`` tokens; returns ``(B, T + new)``. Arguments as in GPT.

        With the cache, the block decoder runs one step per completed block (its cache grows by one row per
        block) and the token decoder one step per token (its cache is emptied at every block boundary).
        The context window holds at most ``max_blocks`` blocks; when full it restarts on its last half.
        """
        c = self.config
        check_token_ids(idx, "idx", vocab_size=c.vocab_size)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
        check_sampling_args(temperature, top_k)
        keep_blocks = c.max_blocks // 2
        was_training = self.training
        self.eval()
        out, start = idx, 0
        block_cache: KVCache | None = None
        token_cache: KVCache | None = None
        try:
            for _ in range(max_new_tokens):
                T = out.shape[1]
                if (T - start) // c.block_len + 1 > c.max_blocks:  # block window full: restart on its last half
                    start = (T // c.block_len - keep_blocks) * c.block_len
                    block_cache = token_cache = None
                if not use_cache:
                    logits = self._next_logits_uncached(out[:, start:])  # (B, V)
                else:
                    block_cache, token_cache, logits = self._cached_step(
                        out[:, start:], block_cache, token_cache, stats
                    )
                next_token = sample_next_token(logits, temperature, top_k, generator)  # (B, 1)
                out = torch.cat([out, next_token], dim=1)  # (B, T + 1)
                if stats is not None:
                    stats.tokens_generated += 1
        finally:
            self.train(was_training)
        return out

    def _cached_step(
        self,
        window: Tensor,
        block_cache: KVCache | None,
        token_cache: KVCache | None,
        stats: DecodeStats | None,
    ) -> tuple[KVCache, KVCache, Tensor]:
        """One decoding step with caches; returns the (possibly new) caches and next-token logits ``(B, V)``.

        Cases: a fresh window (prefill both decoders), the first token of a new block (one block decoder
        step on the block just completed, then a fresh token decoder prefilled with the prefix), or a token
        inside a block (one token decoder step).
        """
        c = self.config
        B, T = window.shape
        n_full, r = divmod(T, c.block_len)
        w = self.token_embedding.weight
        rows = nbytes = 0

        def count(cache: KVCache, before: tuple[int, int]) -> None:
            nonlocal rows, nbytes
            rows += cache.rows_read - before[0]
            nbytes += cache.bytes_read - before[1]

        if block_cache is None:  # prefill the block decoder on the window's full blocks
            block_cache = self.block_decoder.new_cache(B, dtype=w.dtype, device=w.device)
            emb = self.embed_blocks(window[:, : n_full * c.block_len])  # (B, n_full, E)
            start = self.start_block.expand(B, 1, -1)  # (B, 1, E)
            before = (block_cache.rows_read, block_cache.bytes_read)
            context = self.block_decoder(torch.cat([start, emb], dim=1), block_cache)[:, -1]  # (B, E)
            count(block_cache, before)
            token_cache = None
        elif r == 0:  # a block was just completed: one block decoder step on its embedding
            emb = self.embed_blocks(window[:, -c.block_len :])  # (B, 1, E)
            before = (block_cache.rows_read, block_cache.bytes_read)
            context = self.block_decoder(emb, block_cache)[:, -1]  # (B, E)
            count(block_cache, before)
            token_cache = None
        else:
            context = None
        if token_cache is None:  # prefill the token decoder: prefix and the block's tokens so far
            assert context is not None
            token_cache = self.token_decoder.new_cache(B, dtype=w.dtype, device=w.device)
            before = (token_cache.rows_read, token_cache.bytes_read)
            logits = self.decode_tokens(self.prefix_vectors(context), window[:, n_full * c.block_len :], token_cache)
            count(token_cache, before)
        else:
            before = (token_cache.rows_read, token_cache.bytes_read)
            logits = self.lm_head(self.token_decoder(self.token_embedding(window[:, -1:]), token_cache))  # (B, 1, V)
            count(token_cache, before)
        if stats is not None:
            stats.kv_rows_read += rows
            stats.kv_bytes_read += nbytes
            stats.rows_per_step.append(rows)
        return block_cache, token_cache, logits[:, -1]
