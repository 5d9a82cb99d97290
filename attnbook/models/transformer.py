"""The Transformer: blocks, the encoder-decoder for token sequences, a TTS-style model, pair scorers (chapter 04).

Built on :class:`~attnbook.attention.core.MultiHeadAttention` (and through it on the pluggable
:class:`~attnbook.attention.core.AttentionCore`): every block takes a ``core`` factory argument, so a
variant of attention drops into a whole Transformer without touching this file.

Blocks :cite:`vaswani2017attention` come in both normalisation orders :cite:`xiong2020layer`:

* post-norm (``norm_first=False``, the 2017 original): ``x = LN(x + Sublayer(x))``;
* pre-norm (``norm_first=True``): ``x = x + Sublayer(LN(x))``, with a final ``LN`` after the stack.

Parameter names follow :class:`torch.nn.TransformerEncoderLayer`/``TransformerDecoderLayer`` (``self_attn``,
``linear1``, ``linear2``, ``norm1``..``norm3``; the decoder's cross-attention is ``cross_attn``), and
:func:`load_torch_layer` copies a PyTorch layer's weights in after checking that every setting matches.

**The encoder-decoder Transformer** (:class:`Transformer`) :cite:`vaswani2017attention`: token embeddings times
``sqrt(d_model)``, sinusoidal positions, the two stacks, a linear head; padding and causal masks from the ids;
label-smoothed loss (:meth:`Transformer.loss`) and greedy decoding (:meth:`Transformer.generate_greedy`). Its
defaults are the paper's base model; :meth:`Transformer.load_torch` copies a :class:`torch.nn.Transformer`.

**The encoder-decoder for training scripts** (:class:`EncoderDecoder`, a Transformer-TTS in miniature
:cite:`li2018neural`): symbols in, frames of a "spectrogram" out, plus a stop flag per frame.

* Constructor, scalar arguments only: ``EncoderDecoder(vocab_size, frame_dim, d_model=64, num_heads=4,
  num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=128, dropout=0.0, prenet_dropout=0.2,
  norm_first=True, max_len=512, stop_pos_weight=5.0)``. Symbol id ``0`` is padding.
* ``forward(symbols (B, S) long, frames_in (B, T, F), *, symbol_mask=None (B, S) bool,
  frame_mask=None (B, T) bool, need_weights=False) -> (frames_pred (B, T, F), stop_logits (B, T))``, and a
  list of per-layer cross-attention weights ``(B, H, T, S)`` as a third item when ``need_weights``.
  ``frames_in`` is the teacher-forced decoder input, i.e. :func:`shift_frames` of the targets.
* ``loss(symbols, frames, frame_mask, symbol_mask=None) -> scalar``: mean squared error on the real frames
  plus the stop token's weighted binary cross-entropy. The batches of
  :class:`attnbook.data.seq2seq.SymbolFramesTask` are dicts with exactly these keys, so
  ``model.loss(**batch)`` works (extra keys such as ``alignment`` are ignored).
* ``generate(symbols, *, symbol_mask=None, max_frames=None, stop_threshold=0.5) -> (frames (B, T, F),
  lengths (B,), cross_weights list of (B, H, T, S))``: greedy autoregressive decoding that stops each
  sequence at its first frame whose stop probability exceeds ``stop_threshold``.

**Pair scorers** (Trans-Encoder's two formulations :cite:`liu2021transencoder`): :class:`BiEncoder` embeds each
sequence alone (embeddings can be precomputed and compared by a dot product); :class:`CrossEncoder` reads the
two sequences together, so its attention sees token-to-token interactions, at one full forward per pair.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.core import AttentionCore, MultiHeadAttention
from attnbook.attention.positional import sinusoidal_encoding

__all__ = [
    "EncoderBlock",
    "DecoderBlock",
    "Encoder",
    "Decoder",
    "ScaledPositionalEncoding",
    "shift_frames",
    "EncoderDecoder",
    "BiEncoder",
    "CrossEncoder",
    "load_torch_layer",
    "Transformer",
]

CoreFactory = Callable[[], AttentionCore]
_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu}


def _activation(name: str) -> Callable[[Tensor], Tensor]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}")
    return _ACTIVATIONS[name]


def _check_sizes(d_model: int, num_heads: int, dim_feedforward: int, dropout: float) -> None:
    if d_model <= 0 or num_heads <= 0 or dim_feedforward <= 0:
        raise ValueError(
            f"d_model, num_heads and dim_feedforward must be positive, got {d_model}, {num_heads}, {dim_feedforward}"
        )
    if d_model % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide d_model={d_model}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


def _check_seq(x: Tensor, d_model: int, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 3 or x.shape[-1] != d_model:
        raise ValueError(f"{name} must have shape (B, L, d_model={d_model}), got {tuple(x.shape)}")


class EncoderBlock(nn.Module):
    """One Transformer encoder layer: self-attention and a position-wise feed-forward network, each residual.

    Post-norm (``norm_first=False``)::  x = LN1(x + SA(x));  x = LN2(x + FFN(x))
    Pre-norm  (``norm_first=True``)::   x = x + SA(LN1(x));  x = x + FFN(LN2(x))

    with ``FFN(x) = W_2 act(W_1 x + b_1) + b_2``. Shapes: ``x (B, L, d_model) -> (B, L, d_model)``; batch first.

    Args:
        d_model: model width; num_heads: heads (must divide ``d_model``); dim_feedforward: FFN hidden width
            (``4 * d_model`` by default); dropout: on attention weights and after each sublayer;
        activation: ``"relu"`` or ``"gelu"``; norm_first: pre-norm if True; layer_norm_eps: LayerNorm epsilon;
        bias: biases in the linear maps; core: a zero-argument callable returning the block's
            :class:`AttentionCore` (standard softmax attention by default).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dim_feedforward: int | None = None,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
        core: CoreFactory | None = None,
    ) -> None:
        super().__init__()
        dim_feedforward = 4 * d_model if dim_feedforward is None else dim_feedforward
        _check_sizes(d_model, num_heads, dim_feedforward, dropout)
        self.d_model, self.norm_first = d_model, norm_first
        self.num_heads, self.dim_feedforward = num_heads, dim_feedforward
        self.activation_name, self.layer_norm_eps, self.bias = activation, layer_norm_eps, bias
        self.self_attn = MultiHeadAttention(
            d_model, num_heads, bias=bias, dropout=dropout, core=core() if core is not None else None
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.activation = _activation(activation)

    def _sa(
        self, x: Tensor, key_mask: Tensor | None, attn_mask: Tensor | None, is_causal: bool, need: bool
    ) -> tuple[Tensor, Tensor | None]:
        out, weights = self.self_attn(
            x,
            attn_mask=attn_mask,
            key_mask=key_mask,
            is_causal=is_causal,
            need_weights=need,
            average_attn_weights=False,
        )  # (B, L, E), (B, H, L, L) or None
        return self.dropout(out), weights

    def _ff(self, x: Tensor) -> Tensor:
        return self.dropout(self.linear2(self.dropout(self.activation(self.linear1(x)))))  # (B, L, E)

    def forward(
        self,
        x: Tensor,
        *,
        key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``x (B, L, d_model)``; ``key_mask (B, L)`` True for real tokens; ``attn_mask`` as in
        :class:`MultiHeadAttention` (True = may attend). Returns ``x``, or ``(x, weights (B, H, L, L))``."""
        _check_seq(x, self.d_model, "EncoderBlock: x")
        if self.norm_first:
            h, weights = self._sa(self.norm1(x), key_mask, attn_mask, is_causal, need_weights)
            x = x + h
            x = x + self._ff(self.norm2(x))
        else:
            h, weights = self._sa(x, key_mask, attn_mask, is_causal, need_weights)
            x = self.norm1(x + h)
            x = self.norm2(x + self._ff(x))
        return (x, weights) if need_weights else x


class DecoderBlock(nn.Module):
    """One Transformer decoder layer: causal self-attention, cross-attention to the encoder's memory, FFN.

    Post-norm::  x = LN1(x + SA(x));  x = LN2(x + CA(x, m));  x = LN3(x + FFN(x))
    Pre-norm::   x = x + SA(LN1(x));  x = x + CA(LN2(x), m);  x = x + FFN(LN3(x))

    The memory ``m (B, S, memory_dim)`` may have another width than ``d_model`` (``memory_dim``; the
    cross-attention's ``kdim = vdim = memory_dim``). Same arguments as :class:`EncoderBlock`.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        dim_feedforward: int | None = None,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
        core: CoreFactory | None = None,
        memory_dim: int | None = None,
    ) -> None:
        super().__init__()
        dim_feedforward = 4 * d_model if dim_feedforward is None else dim_feedforward
        _check_sizes(d_model, num_heads, dim_feedforward, dropout)
        self.d_model, self.norm_first = d_model, norm_first
        self.num_heads, self.dim_feedforward = num_heads, dim_feedforward
        self.activation_name, self.layer_norm_eps, self.bias = activation, layer_norm_eps, bias
        self.memory_dim = d_model if memory_dim is None else memory_dim
        self.self_attn = MultiHeadAttention(
            d_model, num_heads, bias=bias, dropout=dropout, core=core() if core is not None else None
        )
        self.cross_attn = MultiHeadAttention(
            d_model,
            num_heads,
            kdim=self.memory_dim,
            vdim=self.memory_dim,
            bias=bias,
            dropout=dropout,
            core=core() if core is not None else None,
        )
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.activation = _activation(activation)

    def _ff(self, x: Tensor) -> Tensor:
        return self.dropout(self.linear2(self.dropout(self.activation(self.linear1(x)))))  # (B, T, E)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        *,
        key_mask: Tensor | None = None,
        memory_key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        is_causal: bool = True,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """``x (B, T, d_model)``, ``memory (B, S, memory_dim)``; ``key_mask (B, T)``/``memory_key_mask (B, S)``
        True for real positions; causal self-attention by default. Returns ``x``, or
        ``(x, cross_weights (B, H, T, S))`` when ``need_weights``."""
        _check_seq(x, self.d_model, "DecoderBlock: x")
        _check_seq(memory, self.memory_dim, "DecoderBlock: memory")
        if memory.shape[0] != x.shape[0]:
            raise ValueError(f"DecoderBlock: x{tuple(x.shape)} and memory{tuple(memory.shape)} differ in batch size")

        def sa(h: Tensor) -> Tensor:
            out, _ = self.self_attn(h, attn_mask=attn_mask, key_mask=key_mask, is_causal=is_causal)
            return self.dropout(out)  # (B, T, E)

        def ca(h: Tensor) -> tuple[Tensor, Tensor | None]:
            out, w = self.cross_attn(
                h, memory, memory, key_mask=memory_key_mask, need_weights=need_weights, average_attn_weights=False
            )  # (B, T, E), (B, H, T, S) or None
            return self.dropout(out), w

        if self.norm_first:
            x = x + sa(self.norm1(x))
            h, weights = ca(self.norm2(x))
            x = x + h
            x = x + self._ff(self.norm3(x))
        else:
            x = self.norm1(x + sa(x))
            h, weights = ca(x)
            x = self.norm2(x + h)
            x = self.norm3(x + self._ff(x))
        return (x, weights) if need_weights else x


class Encoder(nn.Module):
    """A stack of :class:`EncoderBlock`; pre-norm stacks end with a LayerNorm (``final_norm``, default =
    ``norm_first``). ``x (B, L, d_model) -> (B, L, d_model)``; with ``need_weights`` also a list of per-layer
    self-attention weights ``(B, H, L, L)``."""

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        dim_feedforward: int | None = None,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        final_norm: bool | None = None,
        core: CoreFactory | None = None,
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if num_layers <= 0:
            raise ValueError(f"num_layers must be positive, got {num_layers}")
        self.layers = nn.ModuleList(
            EncoderBlock(
                d_model, num_heads, dim_feedforward, dropout, activation, norm_first, layer_norm_eps, bias, core=core
            )
            for _ in range(num_layers)
        )
        final_norm = norm_first if final_norm is None else final_norm
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias) if final_norm else nn.Identity()

    def forward(
        self, x: Tensor, *, key_mask: Tensor | None = None, is_causal: bool = False, need_weights: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        weights = []
        for layer in self.layers:
            if need_weights:
                x, w = layer(x, key_mask=key_mask, is_causal=is_causal, need_weights=True)
                weights.append(w)
            else:
                x = layer(x, key_mask=key_mask, is_causal=is_causal)
        x = self.norm(x)
        return (x, weights) if need_weights else x


class Decoder(nn.Module):
    """A stack of :class:`DecoderBlock` (final LayerNorm as in :class:`Encoder`). ``x (B, T, d_model)``,
    ``memory (B, S, memory_dim)`` -> ``(B, T, d_model)``; with ``need_weights`` also the per-layer
    cross-attention weights ``(B, H, T, S)``."""

    def __init__(
        self,
        num_layers: int,
        d_model: int,
        num_heads: int,
        dim_feedforward: int | None = None,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        final_norm: bool | None = None,
        core: CoreFactory | None = None,
        memory_dim: int | None = None,
        layer_norm_eps: float = 1e-5,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if num_layers <= 0:
            raise ValueError(f"num_layers must be positive, got {num_layers}")
        self.layers = nn.ModuleList(
            DecoderBlock(
                d_model,
                num_heads,
                dim_feedforward,
                dropout,
                activation,
                norm_first,
                layer_norm_eps,
                bias,
                core=core,
                memory_dim=memory_dim,
            )
            for _ in range(num_layers)
        )
        final_norm = norm_first if final_norm is None else final_norm
        self.norm = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias) if final_norm else nn.Identity()

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        *,
        key_mask: Tensor | None = None,
        memory_key_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        weights = []
        for layer in self.layers:
            if need_weights:
                x, w = layer(x, memory, key_mask=key_mask, memory_key_mask=memory_key_mask, need_weights=True)
                weights.append(w)
            else:
                x = layer(x, memory, key_mask=key_mask, memory_key_mask=memory_key_mask)
        x = self.norm(x)
        return (x, weights) if need_weights else x


class ScaledPositionalEncoding(nn.Module):
    """Transformer-TTS's positional encoding :cite:`li2018neural`: ``x + alpha * PE``, ``alpha`` trainable.

    The encoder's inputs (phoneme embeddings) and the decoder's (pre-net outputs of mel frames) live at
    different scales; a learned ``alpha`` per side lets each adapt the weight of the position signal.
    ``x (B, L, dim) -> (B, L, dim)``; ``offset`` shifts the positions (incremental decoding). ``PE`` is
    :func:`attnbook.attention.positional.sinusoidal_encoding` (chapter 05), tabulated up to ``max_len``.
    """

    def __init__(self, dim: int, max_len: int = 512) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(()))
        self.register_buffer("table", sinusoidal_encoding(torch.arange(max_len), dim), persistent=False)  # (L, dim)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        L = x.shape[1]
        if offset + L > self.table.shape[0]:
            raise ValueError(
                f"ScaledPositionalEncoding: positions up to {offset + L} exceed max_len={self.table.shape[0]}"
            )
        return x + self.alpha * self.table[offset : offset + L].to(x.dtype)  # (B, L, dim)


def shift_frames(frames: Tensor) -> Tensor:
    """Teacher forcing's decoder input: ``(B, T, F)`` frames moved one step right behind an all-zero "go" frame."""
    return F.pad(frames, (0, 0, 1, 0))[:, :-1]  # (B, T, F)


class EncoderDecoder(nn.Module):
    """A miniature Transformer-TTS :cite:`li2018neural`: symbols -> frames and a stop flag per frame.

    Encoder: symbol embedding + scaled positions -> Transformer encoder. Decoder: a pre-net (two ReLU
    layers with dropout, which keeps the decoder from merely copying its previous frame and pushes it to
    read the encoder through cross-attention) + scaled positions -> Transformer decoder -> a linear frame
    projection and a linear stop-token head. See the module docstring for the call interface.
    """

    def __init__(
        self,
        vocab_size: int,
        frame_dim: int,
        d_model: int = 64,
        num_heads: int = 4,
        num_encoder_layers: int = 2,
        num_decoder_layers: int = 2,
        dim_feedforward: int = 128,
        dropout: float = 0.0,
        prenet_dropout: float = 0.2,
        norm_first: bool = True,
        max_len: int = 512,
        stop_pos_weight: float = 5.0,
    ) -> None:
        super().__init__()
        if vocab_size < 2 or frame_dim <= 0:
            raise ValueError(f"vocab_size must be >= 2 (0 is padding) and frame_dim > 0, got {vocab_size}, {frame_dim}")
        if not 0.0 <= prenet_dropout < 1.0 or stop_pos_weight <= 0:
            raise ValueError(
                f"prenet_dropout must be in [0, 1) and stop_pos_weight > 0, got {prenet_dropout}, {stop_pos_weight}"
            )
        self.vocab_size, self.frame_dim, self.max_len = vocab_size, frame_dim, max_len
        self.prenet_dropout, self.stop_pos_weight = prenet_dropout, stop_pos_weight
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.enc_pos = ScaledPositionalEncoding(d_model, max_len)
        self.dec_pos = ScaledPositionalEncoding(d_model, max_len)
        self.prenet = nn.ModuleList([nn.Linear(frame_dim, d_model), nn.Linear(d_model, d_model)])
        self.encoder = Encoder(num_encoder_layers, d_model, num_heads, dim_feedforward, dropout, norm_first=norm_first)
        self.decoder = Decoder(num_decoder_layers, d_model, num_heads, dim_feedforward, dropout, norm_first=norm_first)
        self.frame_head = nn.Linear(d_model, frame_dim)
        self.stop_head = nn.Linear(d_model, 1)

    def _check(self, symbols: Tensor, symbol_mask: Tensor | None) -> None:
        if not isinstance(symbols, Tensor) or symbols.dtype != torch.long or symbols.ndim != 2:
            got = f"{tuple(symbols.shape)} {symbols.dtype}" if isinstance(symbols, Tensor) else type(symbols).__name__
            raise ValueError(f"EncoderDecoder: symbols must be a (B, S) long tensor, got {got}")
        if symbols.numel() and (int(symbols.min()) < 0 or int(symbols.max()) >= self.vocab_size):
            raise ValueError(f"EncoderDecoder: symbols must lie in [0, vocab_size={self.vocab_size})")
        if symbol_mask is not None and (symbol_mask.shape != symbols.shape or symbol_mask.dtype != torch.bool):
            raise ValueError(
                f"EncoderDecoder: symbol_mask must be bool of the symbols' shape {tuple(symbols.shape)}, got "
                f"{tuple(symbol_mask.shape)} {symbol_mask.dtype}"
            )

    def encode(self, symbols: Tensor, symbol_mask: Tensor | None = None) -> Tensor:
        """``symbols (B, S)`` -> memory ``(B, S, d_model)``."""
        self._check(symbols, symbol_mask)
        return self.encoder(self.enc_pos(self.embed(symbols)), key_mask=symbol_mask)  # (B, S, E)

    def decode(
        self,
        memory: Tensor,
        frames_in: Tensor,
        *,
        symbol_mask: Tensor | None = None,
        frame_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, list[Tensor]]:
        """Decoder input frames ``(B, T, F)`` and memory -> ``(frames_pred, stop_logits[, cross_weights])``."""
        if frames_in.ndim != 3 or frames_in.shape[-1] != self.frame_dim or frames_in.shape[0] != memory.shape[0]:
            raise ValueError(
                f"EncoderDecoder: frames_in must have shape (B={memory.shape[0]}, T, frame_dim={self.frame_dim}), "
                f"got {tuple(frames_in.shape)}"
            )
        h = frames_in
        for layer in self.prenet:
            h = F.dropout(F.relu(layer(h)), p=self.prenet_dropout, training=self.training)  # (B, T, E)
        h = self.dec_pos(h)
        out = self.decoder(h, memory, key_mask=frame_mask, memory_key_mask=symbol_mask, need_weights=need_weights)
        h, weights = out if need_weights else (out, None)
        result = (self.frame_head(h), self.stop_head(h).squeeze(-1))  # (B, T, F), (B, T)
        return (*result, weights) if need_weights else result

    def forward(
        self,
        symbols: Tensor,
        frames_in: Tensor,
        *,
        symbol_mask: Tensor | None = None,
        frame_mask: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, list[Tensor]]:
        """Teacher-forced pass: see the module docstring."""
        memory = self.encode(symbols, symbol_mask)
        return self.decode(memory, frames_in, symbol_mask=symbol_mask, frame_mask=frame_mask, need_weights=need_weights)

    def loss(
        self, symbols: Tensor, frames: Tensor, frame_mask: Tensor, symbol_mask: Tensor | None = None, **_
    ) -> Tensor:
        """MSE on real frames + stop-token BCE (positive weight ``stop_pos_weight``: one stop frame per sequence).

        ``frames (B, T, F)`` are the targets; ``frame_mask (B, T)`` is True on real frames; the stop target is 1
        on each sequence's last real frame.
        """
        if frame_mask.shape != frames.shape[:2] or frame_mask.dtype != torch.bool:
            raise ValueError(
                f"EncoderDecoder.loss: frame_mask must be bool (B, T)={tuple(frames.shape[:2])}, "
                f"got {tuple(frame_mask.shape)} {frame_mask.dtype}"
            )
        pred, stop_logits = self(symbols, shift_frames(frames), symbol_mask=symbol_mask, frame_mask=frame_mask)
        real = frame_mask.to(pred.dtype)  # (B, T)
        mse = (((pred - frames) ** 2).mean(-1) * real).sum() / real.sum()
        lengths = frame_mask.sum(1)  # (B,)
        stop_target = (torch.arange(frames.shape[1], device=frames.device)[None] == lengths[:, None] - 1).to(pred.dtype)
        pos_weight = torch.tensor(self.stop_pos_weight, dtype=pred.dtype, device=pred.device)
        bce = F.binary_cross_entropy_with_logits(stop_logits, stop_target, pos_weight=pos_weight, reduction="none")
        return mse + (bce * real).sum() / real.sum()

    @torch.no_grad()
    def generate(
        self,
        symbols: Tensor,
        *,
        symbol_mask: Tensor | None = None,
        max_frames: int | None = None,
        stop_threshold: float = 0.5,
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Greedy decoding: feed each predicted frame back until the stop flag fires (or ``max_frames``).

        Returns ``frames (B, T, F)`` (zero after each sequence's stop), ``lengths (B,)`` and the last step's
        per-layer cross-attention weights ``(B, H, T, S)``. Recomputes the prefix each step (no KV cache; see
        chapter 06), which is fine for the short outputs of the chapter's task.
        """
        was_training = self.training
        self.eval()
        max_frames = self.max_len if max_frames is None else max_frames
        if not 0 < max_frames <= self.max_len:
            raise ValueError(f"generate: max_frames must be in (0, max_len={self.max_len}], got {max_frames}")
        memory = self.encode(symbols, symbol_mask)  # (B, S, E)
        B = symbols.shape[0]
        frames = memory.new_zeros(B, 1, self.frame_dim)  # (B, 1, F): the go frame
        lengths = torch.full((B,), max_frames, dtype=torch.long, device=symbols.device)
        done = torch.zeros(B, dtype=torch.bool, device=symbols.device)
        weights: list[Tensor] = []
        for t in range(max_frames):
            pred, stop_logits, weights = self.decode(memory, frames, symbol_mask=symbol_mask, need_weights=True)
            frames = torch.cat([frames, pred[:, -1:]], dim=1)  # (B, t + 2, F)
            stops = (torch.sigmoid(stop_logits[:, -1]) > stop_threshold) & ~done
            lengths[stops] = t + 1
            done |= stops
            if bool(done.all()):
                break
        out = frames[:, 1:]  # (B, T, F)
        out = out * (torch.arange(out.shape[1], device=out.device)[None] < lengths[:, None])[..., None]
        self.train(was_training)
        return out, lengths, weights


class _PairBase(nn.Module):
    """Token + learned position (+ segment) embeddings and a pre-norm encoder, shared by both pair scorers."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        num_heads: int,
        num_layers: int,
        dim_feedforward: int | None,
        max_len: int,
        num_segments: int,
    ) -> None:
        super().__init__()
        if vocab_size < 2 or max_len <= 0:
            raise ValueError(f"vocab_size must be >= 2 (0 is padding) and max_len > 0, got {vocab_size}, {max_len}")
        self.vocab_size, self.max_len = vocab_size, max_len
        self.tokens = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.positions = nn.Embedding(max_len, d_model)
        self.segments = nn.Embedding(num_segments, d_model)
        self.encoder = Encoder(num_layers, d_model, num_heads, dim_feedforward, norm_first=True)

    def _check_tokens(self, x: Tensor, name: str, max_len: int | None = None) -> None:
        max_len = self.max_len if max_len is None else max_len
        if not isinstance(x, Tensor) or x.dtype != torch.long or x.ndim != 2:
            got = f"{tuple(x.shape)} {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__}: {name} must be a (B, L) long tensor of token ids, got {got}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
            raise ValueError(f"{type(self).__name__}: {name} ids must lie in [0, vocab_size={self.vocab_size})")
        if x.shape[1] > max_len:
            raise ValueError(f"{type(self).__name__}: {name} has length {x.shape[1]}, over the limit {max_len}")

    def _encode(self, x: Tensor, segment: Tensor) -> Tensor:
        """Token ids ``(B, L)`` (0 = padding) and segment ids ``(L,)`` -> hidden states ``(B, L, E)``."""
        positions = torch.arange(x.shape[1], device=x.device)
        h = self.tokens(x) + self.positions(positions) + self.segments(segment)  # (B, L, E)
        return self.encoder(h, key_mask=x != 0)  # (B, L, E)


class BiEncoder(_PairBase):
    """Bi-encoder (Siamese) pair scorer: ``s(a, b) = scale * cos(f(a), f(b)) + shift`` :cite:`liu2021transencoder`.

    ``f`` is one shared pre-norm Transformer encoder followed by mean pooling over real tokens (id 0 is
    padding). The embeddings of a collection can be computed once (:meth:`embed`) and scored against a new
    query with one matrix product (:meth:`score_matrix`). ``a, b (B, L) long -> logits (B,)``.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 32,
        num_heads: int = 4,
        num_layers: int = 2,
        dim_feedforward: int | None = None,
        max_len: int = 64,
    ) -> None:
        super().__init__(vocab_size, d_model, num_heads, num_layers, dim_feedforward, max_len, num_segments=1)
        self.scale = nn.Parameter(torch.tensor(5.0))
        self.shift = nn.Parameter(torch.zeros(()))

    def embed(self, x: Tensor) -> Tensor:
        """Unit-norm sequence embeddings, ``(B, L) -> (B, d_model)``."""
        self._check_tokens(x, "x")
        h = self._encode(x, torch.zeros(x.shape[1], dtype=torch.long, device=x.device))  # (B, L, E)
        real = (x != 0).to(h.dtype)[..., None]  # (B, L, 1)
        pooled = (h * real).sum(1) / real.sum(1).clamp_min(1.0)  # (B, E)
        return F.normalize(pooled, dim=-1)

    def score_matrix(self, ea: Tensor, eb: Tensor) -> Tensor:
        """All-pairs logits from precomputed embeddings, ``(Q, E), (N, E) -> (Q, N)``: one matrix product."""
        return self.scale * ea @ eb.T + self.shift

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Logits ``(B,)`` for the pairs ``(a[i], b[i])``."""
        ea, eb = self.embed(a), self.embed(b)  # (B, E), (B, E)
        return self.scale * (ea * eb).sum(-1) + self.shift


class CrossEncoder(_PairBase):
    """Cross-encoder pair scorer :cite:`liu2021transencoder`: one encoder reads ``[CLS] a [SEP] b`` jointly.

    Every layer's attention can compare a token of ``a`` with a token of ``b`` directly; the price is a full
    forward pass of length ``L_a + L_b + 2`` for every pair, with nothing to precompute. Segment embeddings
    tell the two sides apart. Token ids ``vocab_size`` and ``vocab_size + 1`` are reserved for ``[CLS]`` and
    ``[SEP]``. ``a (B, L_a), b (B, L_b) long -> logits (B,)`` from a linear head on ``[CLS]``.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 32,
        num_heads: int = 4,
        num_layers: int = 2,
        dim_feedforward: int | None = None,
        max_len: int = 64,
    ) -> None:
        super().__init__(vocab_size + 2, d_model, num_heads, num_layers, dim_feedforward, 2 * max_len + 2, 2)
        self.pair_vocab_size, self.pair_max_len = vocab_size, max_len
        self.cls_id, self.sep_id = vocab_size, vocab_size + 1
        self.head = nn.Linear(d_model, 1)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """Logits ``(B,)`` for the pairs ``(a[i], b[i])``."""
        for name, x in (("a", a), ("b", b)):
            self._check_tokens(x, name, self.pair_max_len)
            if x.numel() and int(x.max()) >= self.pair_vocab_size:
                raise ValueError(f"CrossEncoder: {name} ids must lie in [0, vocab_size={self.pair_vocab_size})")
        if a.shape[0] != b.shape[0]:
            raise ValueError(f"CrossEncoder: a{tuple(a.shape)} and b{tuple(b.shape)} differ in batch size")
        B = a.shape[0]
        cls = a.new_full((B, 1), self.cls_id)
        sep = a.new_full((B, 1), self.sep_id)
        x = torch.cat([cls, a, sep, b], dim=1)  # (B, L_a + L_b + 2)
        segment = torch.cat([a.new_zeros(a.shape[1] + 2), a.new_ones(b.shape[1])])  # (L_a + L_b + 2,)
        h = self._encode(x, segment)  # (B, L, E)
        return self.head(h[:, 0]).squeeze(-1)  # (B,)


def _torch_activation_name(ref: nn.Module) -> str:
    """``"relu"``/``"gelu"`` for a PyTorch layer's activation, else a description of what it is."""
    act = ref.activation
    if act is F.relu or isinstance(act, nn.ReLU):
        return "relu"
    if act is F.gelu or (isinstance(act, nn.GELU) and act.approximate == "none"):
        return "gelu"
    return repr(act) if isinstance(act, nn.Module) else getattr(act, "__name__", repr(act))


@torch.no_grad()
def load_torch_layer(block: EncoderBlock | DecoderBlock, ref: nn.Module) -> EncoderBlock | DecoderBlock:
    """Copy a :class:`torch.nn.TransformerEncoderLayer` (into an :class:`EncoderBlock`) or
    :class:`torch.nn.TransformerDecoderLayer` (into a :class:`DecoderBlock`). Returns ``block``.

    The two must compute the same function, so every setting is compared first: ``d_model``, ``nhead``,
    ``dim_feedforward``, ``norm_first``, ``activation``, ``layer_norm_eps``, ``bias``, the memory width of a
    decoder's cross-attention, and the layout (the book's blocks are batch-first, so the reference must be built
    with ``batch_first=True``). A mismatch raises a ``ValueError`` naming the setting and both values.
    """
    pairs = {EncoderBlock: nn.TransformerEncoderLayer, DecoderBlock: nn.TransformerDecoderLayer}
    want = pairs.get(type(block))
    if want is None or not isinstance(ref, want):
        raise TypeError(f"load_torch_layer: cannot copy a {type(ref).__name__} into a {type(block).__name__}")
    settings = {
        "d_model": (ref.self_attn.embed_dim, block.d_model),
        "nhead": (ref.self_attn.num_heads, block.num_heads),
        "dim_feedforward": (ref.linear1.out_features, block.dim_feedforward),
        "norm_first": (ref.norm_first, block.norm_first),
        "activation": (_torch_activation_name(ref), block.activation_name),
        "layer_norm_eps": (ref.norm1.eps, block.layer_norm_eps),
        "bias": (ref.linear1.bias is not None, block.bias),
        "batch_first": (ref.self_attn.batch_first, True),
    }
    if isinstance(block, DecoderBlock):
        settings["memory width (kdim)"] = (ref.multihead_attn.kdim, block.memory_dim)
    for name, (theirs, ours) in settings.items():
        if theirs != ours:
            raise ValueError(
                f"load_torch_layer: the {type(ref).__name__} has {name}={theirs!r} but the {type(block).__name__} "
                f"has {name}={ours!r}; the copy would compute a different function"
            )
    block.self_attn.load_torch(ref.self_attn)
    if isinstance(block, DecoderBlock):
        block.cross_attn.load_torch(ref.multihead_attn)
    names = ["linear1", "linear2", "norm1", "norm2"] + (["norm3"] if isinstance(block, DecoderBlock) else [])
    for name in names:
        getattr(block, name).load_state_dict(getattr(ref, name).state_dict())
    return block


class Transformer(nn.Module):
    """The encoder-decoder Transformer of :cite:t:`vaswani2017attention` for token sequences (chapter 04).

    ``src (B, S)`` and ``tgt_in (B, T)`` token ids -> next-token logits ``(B, T, tgt_vocab_size)``:

    1. token embeddings times ``sqrt(d_model)`` plus sinusoidal positions (chapter 05), then dropout;
    2. ``num_encoder_layers`` :class:`EncoderBlock` and ``num_decoder_layers`` :class:`DecoderBlock`, post-norm as in
       the paper or pre-norm (``norm_first``), each stack ending with a LayerNorm as in
       :class:`torch.nn.Transformer`;
    3. a linear output head (tied to the target embedding when ``share_embeddings``, as in the paper).

    The embeddings start as ``N(0, 1/d_model)`` (zero for ``pad_id``), as in the paper's code, so that a tied head
    starts with small logits and ``sqrt(d_model) * E`` has entries of size 1, like the positions.

    Masks come from the ids: ``pad_id`` marks padding, so padded source keys are hidden from both attentions
    and padded target keys from the decoder's self-attention, which is also causal. The defaults are the
    paper's base configuration (``N = 6``, ``d_model = 512``, ``d_ff = 2048``, ``h = 8``, ``P_drop = 0.1``).

    :meth:`loss` is the label-smoothed cross-entropy of the shifted targets, and :meth:`generate_greedy`
    decodes one token at a time from ``bos_id`` until every sequence has produced ``eos_id``.
    :meth:`load_torch` copies a :class:`torch.nn.Transformer` (and the embeddings and head around it).
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int | None = None,
        d_model: int = 512,
        num_heads: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
        max_len: int = 512,
        pad_id: int = 0,
        share_embeddings: bool = False,
        core: CoreFactory | None = None,
    ) -> None:
        super().__init__()
        tgt_vocab_size = src_vocab_size if tgt_vocab_size is None else tgt_vocab_size
        if min(src_vocab_size, tgt_vocab_size) < 2 or max_len <= 0:
            raise ValueError(
                f"vocab sizes must be >= 2 and max_len > 0, got {src_vocab_size}, {tgt_vocab_size}, {max_len}"
            )
        if not 0 <= pad_id < min(src_vocab_size, tgt_vocab_size):
            raise ValueError(f"pad_id={pad_id} must be a valid id of both vocabularies")
        if share_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError(
                f"share_embeddings needs one vocabulary, got src_vocab_size={src_vocab_size}, "
                f"tgt_vocab_size={tgt_vocab_size}"
            )
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.d_model, self.max_len, self.pad_id = d_model, max_len, pad_id
        self.src_embed = nn.Embedding(src_vocab_size, d_model, padding_idx=pad_id)
        self.tgt_embed = (
            self.src_embed if share_embeddings else nn.Embedding(tgt_vocab_size, d_model, padding_idx=pad_id)
        )
        self.dropout = nn.Dropout(dropout)
        stack = {
            "d_model": d_model,
            "num_heads": num_heads,
            "dim_feedforward": dim_feedforward,
            "dropout": dropout,
            "activation": activation,
            "norm_first": norm_first,
            "final_norm": True,
            "core": core,
            "layer_norm_eps": layer_norm_eps,
        }
        self.encoder = Encoder(num_encoder_layers, **stack)
        self.decoder = Decoder(num_decoder_layers, **stack)
        self.head = nn.Linear(d_model, tgt_vocab_size)
        with torch.no_grad():  # entries of size D^(-1/2), as in the paper's code: times sqrt(D) they are of size 1
            for table in {self.src_embed, self.tgt_embed}:
                nn.init.normal_(table.weight, std=d_model**-0.5)
                table.weight[pad_id].zero_()
        if share_embeddings:
            self.head.weight = self.tgt_embed.weight

    def _check_ids(self, ids: Tensor, name: str, vocab_size: int) -> None:
        if not isinstance(ids, Tensor) or ids.dtype != torch.long or ids.ndim != 2:
            got = f"{tuple(ids.shape)} {ids.dtype}" if isinstance(ids, Tensor) else type(ids).__name__
            raise ValueError(f"Transformer: {name} must be a (B, L) long tensor of token ids, got {got}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
            raise ValueError(
                f"Transformer: {name} ids must lie in [0, {vocab_size}), got {int(ids.min())}..{int(ids.max())}"
            )
        if ids.shape[1] > self.max_len:
            raise ValueError(f"Transformer: {name} has length {ids.shape[1]}, over max_len={self.max_len}")

    def embed(self, ids: Tensor, table: nn.Embedding) -> Tensor:
        """``(B, L)`` ids -> ``(B, L, d_model)``: ``sqrt(d_model) * E[ids] + P[:L]``, then dropout."""
        dtype = table.weight.dtype  # positions computed in the model's dtype, so float64 is exact throughout
        positions = sinusoidal_encoding(torch.arange(ids.shape[1], device=ids.device), self.d_model, dtype=dtype)
        x = table(ids) * math.sqrt(self.d_model) + positions  # (B, L, D)
        return self.dropout(x)

    def encode(self, src: Tensor) -> Tensor:
        """``src (B, S)`` -> memory ``(B, S, d_model)``; padded keys masked."""
        self._check_ids(src, "src", self.src_vocab_size)
        return self.encoder(self.embed(src, self.src_embed), key_mask=src != self.pad_id)  # (B, S, D)

    def decode(
        self, tgt_in: Tensor, memory: Tensor, src: Tensor, *, need_weights: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """``tgt_in (B, T)`` and the memory of ``src (B, S)`` -> logits ``(B, T, V)`` (and, with
        ``need_weights``, the per-layer cross-attention weights ``(B, H, T, S)``)."""
        self._check_ids(tgt_in, "tgt_in", self.tgt_vocab_size)
        out = self.decoder(
            self.embed(tgt_in, self.tgt_embed),
            memory,
            key_mask=tgt_in != self.pad_id,
            memory_key_mask=src != self.pad_id,
            need_weights=need_weights,
        )
        h, weights = out if need_weights else (out, None)
        logits = self.head(h)  # (B, T, V)
        return (logits, weights) if need_weights else logits

    def forward(self, src: Tensor, tgt_in: Tensor, *, need_weights: bool = False) -> Tensor | tuple[Tensor, list]:
        """Teacher-forced pass: ``src (B, S)``, ``tgt_in (B, T)`` -> logits ``(B, T, V)`` (see :meth:`decode`)."""
        if src.shape[0] != tgt_in.shape[0]:
            raise ValueError(f"Transformer: src{tuple(src.shape)} and tgt_in{tuple(tgt_in.shape)} differ in batch size")
        return self.decode(tgt_in, self.encode(src), src, need_weights=need_weights)

    def loss(self, src: Tensor, tgt: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """Cross-entropy of ``tgt[:, 1:]`` given ``tgt[:, :-1]`` (``tgt`` starts with the BOS token), padding
        ignored, with label smoothing ``eps``: the target distribution is ``1 - eps`` on the right token plus
        ``eps`` spread uniformly over the vocabulary :cite:`vaswani2017attention`."""
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        logits = self(src, tgt[:, :-1])  # (B, T - 1, V)
        return F.cross_entropy(
            logits.flatten(0, 1), tgt[:, 1:].flatten(), ignore_index=self.pad_id, label_smoothing=label_smoothing
        )

    @torch.no_grad()
    def generate_greedy(
        self, src: Tensor, bos_id: int, eos_id: int, max_new_tokens: int, *, need_weights: bool = False
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Greedy decoding: start from ``bos_id``, append the most likely token, stop once all have ``eos_id``.

        Returns the generated ids ``(B, T)`` (without the BOS; ``pad_id`` after each sequence's EOS) and, with
        ``need_weights``, the final step's per-layer cross-attention weights ``(B, H, T, S)``. The prefix is
        recomputed at every step (no KV cache: chapter 06), which is fine for short outputs.
        """
        if not 0 < max_new_tokens < self.max_len:
            raise ValueError(
                f"generate_greedy: max_new_tokens must be in (0, max_len={self.max_len}), got {max_new_tokens}"
            )
        was_training = self.training
        self.eval()
        memory = self.encode(src)  # (B, S, D)
        out = src.new_full((src.shape[0], 1), bos_id)  # (B, 1)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(max_new_tokens):
            logits = self.decode(out, memory, src)  # (B, t, V)
            token = logits[:, -1].argmax(-1).masked_fill(done, self.pad_id)  # (B,)
            out = torch.cat([out, token[:, None]], dim=1)  # (B, t + 1)
            done |= token == eos_id
            if bool(done.all()):
                break
        weights = self.decode(out[:, :-1], memory, src, need_weights=True)[1] if need_weights else None
        self.train(was_training)
        return (out[:, 1:], weights) if need_weights else out[:, 1:]

    @torch.no_grad()
    def load_torch(
        self, ref: nn.Transformer, src_embed: nn.Embedding, tgt_embed: nn.Embedding, head: nn.Linear
    ) -> Transformer:
        """Copy a :class:`torch.nn.Transformer` (batch-first, same sizes) and the embeddings and output head
        around it. Every layer goes through :func:`load_torch_layer`, which checks its settings. Returns ``self``."""
        if not isinstance(ref, nn.Transformer):
            raise TypeError(f"load_torch: ref must be a torch.nn.Transformer, got {type(ref).__name__}")
        for name, ours, theirs in (("encoder", self.encoder, ref.encoder), ("decoder", self.decoder, ref.decoder)):
            if len(ours.layers) != len(theirs.layers):
                raise ValueError(
                    f"load_torch: ref's {name} has {len(theirs.layers)} layers, this model {len(ours.layers)}"
                )
            for mine, layer in zip(ours.layers, theirs.layers, strict=True):
                load_torch_layer(mine, layer)
            ours.norm.load_state_dict(theirs.norm.state_dict())
        self.src_embed.load_state_dict(src_embed.state_dict())
        self.tgt_embed.load_state_dict(tgt_embed.state_dict())
        self.head.load_state_dict(head.state_dict())
        return self
