"""Mask helpers shared by every attention mechanism in the book.

Convention (the same as :func:`torch.nn.functional.scaled_dot_product_attention`): a **boolean** mask
holds ``True`` where a query *may* attend to a key; a **floating** mask is an additive bias on the
logits (``-inf`` forbids a pair). Every mask broadcasts to the logits' shape ``(..., T_q, T_k)``.
Any other dtype is rejected with a ``TypeError``: an integer 0/1 mask is ambiguous (a boolean written as
numbers, or a bias of 0 and 1?), and reading it as a bias would silently mask nothing. Convert it first,
``mask.bool()`` for "1 = may attend" or ``mask.float()`` for a bias.
Note that ``torch.nn.MultiheadAttention`` uses the opposite boolean convention (``True`` = blocked);
:func:`from_torch_convention` converts.

The causal mask is the decoder's "masking out (setting to -inf) all values in the input of the softmax
which correspond to illegal connections" of *Attention Is All You Need* (Vaswani et al., 2017,
:cite:`vaswani2017attention`). A query row whose keys are all masked has no defined softmax; the book's
attention functions return zeros there (see :func:`fully_masked_rows`).

Introduced in chapter 03 (scaled dot-product attention).
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor

__all__ = [
    "causal_mask",
    "padding_mask",
    "key_mask_to_attn_mask",
    "to_additive",
    "combine_masks",
    "check_mask_dtype",
    "from_torch_convention",
    "fully_masked_rows",
]


def causal_mask(
    q_len: int, k_len: int | None = None, *, offset: int = 0, device: torch.device | str | None = None
) -> Tensor:
    """Boolean ``(q_len, k_len)`` mask, ``True`` where key ``j`` is visible to query ``i``: ``j <= i + offset``.

    ``offset=0`` is PyTorch's ``is_causal`` convention (aligned at the top left). When the queries are the
    *last* ``q_len`` positions of ``k_len`` keys -- decoding with a KV cache -- use ``offset=k_len - q_len``.
    """
    k_len = q_len if k_len is None else k_len
    for name, value in (("q_len", q_len), ("k_len", k_len), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"causal_mask: {name} must be an int, got {value!r} ({type(value).__name__})")
    q_len, k_len, offset = int(q_len), int(k_len), int(offset)
    if q_len < 0 or k_len < 0:
        raise ValueError(f"causal_mask: q_len and k_len must be >= 0, got q_len={q_len}, k_len={k_len}")
    return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril(diagonal=offset)


def padding_mask(lengths: Tensor | list[int], max_len: int | None = None) -> Tensor:
    """Boolean ``(B, max_len)`` mask, ``True`` for the real (non-padding) positions of each sequence."""
    lengths = torch.as_tensor(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"padding_mask: lengths must be 1-D (B,), got shape {tuple(lengths.shape)}")
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(f"padding_mask: lengths must be >= 0, got {lengths.tolist()}")
    longest = int(lengths.max()) if lengths.numel() else 0
    max_len = longest if max_len is None else max_len
    if max_len < longest:
        raise ValueError(f"padding_mask: max_len={max_len} is shorter than the longest length {longest}")
    return torch.arange(max_len, device=lengths.device) < lengths[:, None]


def key_mask_to_attn_mask(key_mask: Tensor) -> Tensor:
    """Turn a ``(B, T_k)`` key mask (``True`` = real key) into a ``(B, 1, 1, T_k)`` attention mask."""
    if key_mask.ndim != 2:
        raise ValueError(f"key_mask must have shape (B, T_k), got {tuple(key_mask.shape)}")
    if key_mask.dtype != torch.bool:
        raise TypeError(f"key_mask must be a bool tensor (True = real key), got dtype {key_mask.dtype}")
    return key_mask[:, None, None, :]


def check_mask_dtype(mask: Tensor, *, name: str = "mask") -> None:
    """Raise ``TypeError`` unless ``mask`` is a boolean (``True`` = may attend) or floating (additive) tensor."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(
            f"{name} must be bool (True = may attend) or floating (an additive bias), got dtype {mask.dtype} "
            f"(shape {tuple(mask.shape)}); convert an integer 0/1 mask with .bool() or .float() to say which"
        )


def to_additive(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """A boolean mask as an additive one: ``0`` where allowed, ``-inf`` where forbidden.

    A floating mask is returned cast to ``dtype``; any other dtype raises ``TypeError``.
    """
    check_mask_dtype(mask)
    if mask.dtype == torch.bool:
        out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
        return out.masked_fill_(~mask, float("-inf"))
    return mask.to(dtype)


def combine_masks(*masks: Tensor | None, dtype: torch.dtype = torch.float32) -> Tensor | None:
    """Combine masks by broadcasting: booleans with AND, and anything floating by adding additive forms.

    ``None`` entries are skipped; with no masks left the result is ``None``. A mask that is neither boolean nor
    floating raises ``TypeError``.
    """
    present = [m for m in masks if m is not None]
    for i, m in enumerate(present):
        check_mask_dtype(m, name=f"combine_masks: mask {i}")
    if not present:
        return None
    if all(m.dtype == torch.bool for m in present):
        out = present[0]
        for m in present[1:]:
            out = out & m
        return out
    out = to_additive(present[0], dtype)
    for m in present[1:]:
        out = out + to_additive(m, dtype)
    return out


def from_torch_convention(mask: Tensor) -> Tensor:
    """Convert a ``torch.nn.MultiheadAttention``-style mask (bool ``True`` = blocked) to the book's convention."""
    check_mask_dtype(mask)
    return ~mask if mask.dtype == torch.bool else mask


def fully_masked_rows(mask: Tensor) -> Tensor:
    """``(..., T_q, 1)`` boolean: ``True`` for query rows that may attend to no key at all."""
    check_mask_dtype(mask)
    if mask.dtype == torch.bool:
        return ~mask.any(dim=-1, keepdim=True)
    return torch.isneginf(mask).all(dim=-1, keepdim=True)
