"""Attentive read-out of frozen tokens: attentive probing and efficient probing (chapter 17).

A pretrained encoder leaves one token per patch, ``x (B, T, D)``. A *probe* evaluates the representation by
training only a small read-out on top of the frozen tokens. The linear probe averages the tokens and applies a
linear classifier; an **attentive probe** lets learned queries choose which tokens to read:

* :class:`AttentiveProbe` -- ``M`` learned queries ``Q (M, D)`` cross-attend to the tokens with ordinary
  multi-head attention (projections ``W_Q, W_K, W_V, W_O``, :class:`~attnbook.attention.core.MultiHeadAttention`),
  ``o = MultiHead(Q, x, x)`` of shape ``(B, M, D)``, flattened to ``(B, M D)``. With ``M = 1`` this is the
  attention-pooling head (timm's ``AttentionPoolLatent`` without its MLP) used to probe masked-image models.
* :func:`efficient_probing` / :class:`EfficientProbe` -- the efficient probing of Psomas et al. (2025,
  "Attention, Please!", :cite:`psomas2025attention`), following its code (``poolings/ep.py``): no query, key or
  output projection, one value projection ``W_V (D, D / d_out)``, and ``M`` queries that *share out the value
  channels*: ``A = softmax(Q x^T / sqrt(D))`` ``(M, T)``, ``V = x W_V`` split along its channels into ``M``
  chunks ``V_m (T, D / (d_out M))``, ``o_m = A_m V_m``, and the read-out is the **concatenation**
  ``[o_1, ..., o_M]`` ``(B, D / d_out)`` -- not a mean over the queries.

Shapes: tokens ``x (B, T, D)``; :class:`AttentiveProbe` returns ``(B, M D)`` (or logits ``(B, num_classes)``),
:class:`EfficientProbe` ``(B, D / d_out)`` (or logits); with ``need_weights=True`` also the weights
``(B, H, M, T)`` or ``(B, M, T)``.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from attnbook.attention.core import MultiHeadAttention

__all__ = ["AttentiveProbe", "EfficientProbe", "efficient_probing"]


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def _check_tokens(x: object, dim: int, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: tokens must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 3 or x.shape[-1] != dim or x.shape[1] == 0:
        raise ValueError(f"{name}: tokens must have shape (B, T, D={dim}) with T >= 1, got {tuple(x.shape)}")


def efficient_probing(x: Tensor, queries: Tensor, value: Tensor, *, need_weights: bool = False):
    """Efficient probing: ``M`` projection-free queries share out the value channels; outputs concatenated.

    Args:
        x: frozen tokens ``(B, T, D)``.
        queries: ``(M, D)``, compared with the tokens themselves (no ``W_Q``, no ``W_K``), scale ``1/sqrt(D)``.
        value: the projected values ``x W_V``, ``(B, T, D_v)`` with ``M`` dividing ``D_v``.

    Returns:
        ``(B, D_v)``: ``[o_1, ..., o_M]`` with ``o_m = softmax(q_m x^T / sqrt(D)) V_m`` and ``V_m`` the ``m``-th
        block of ``D_v / M`` channels; and the weights ``(B, M, T)`` if ``need_weights``.
    """
    for name, t in (("x", x), ("queries", queries), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"efficient_probing: {name} must be a torch.Tensor, got {type(t).__name__}")
    if x.ndim != 3 or queries.ndim != 2 or queries.shape[1] != x.shape[-1]:
        raise ValueError(
            f"efficient_probing: x must be (B, T, D) and queries (M, D), got x{tuple(x.shape)}, "
            f"queries{tuple(queries.shape)}"
        )
    B, T, D = x.shape
    M = queries.shape[0]
    if value.ndim != 3 or value.shape[:2] != (B, T) or value.shape[-1] % M:
        raise ValueError(
            f"efficient_probing: value must be (B, T, D_v)=({B}, {T}, D_v) with the {M} queries dividing D_v, "
            f"got {tuple(value.shape)}"
        )
    weights = torch.softmax(queries @ x.transpose(1, 2) / math.sqrt(D), dim=-1)  # (B, M, T)
    chunks = value.reshape(B, T, M, value.shape[-1] // M).transpose(1, 2)  # (B, M, T, D_v / M): V_m per query
    out = (weights[:, :, None, :] @ chunks).reshape(B, value.shape[-1])  # (B, M, 1, D_v/M) -> (B, D_v): concat
    return (out, weights) if need_weights else out


class EfficientProbe(nn.Module):
    """Efficient probing (see the module docstring): ``x (B, T, D) -> (B, D / d_out)``, or logits.

    Args:
        dim: token width ``D``; num_queries: ``M``; d_out: the value projection maps ``D -> D / d_out``
            (``M`` must divide ``D / d_out``); num_classes: if given, a linear classifier on the read-out.
    Parameters: ``queries (M, D)`` (initialised ``N(0, 0.02^2)`` as in the code), ``value`` (no bias), ``head``.
    """

    def __init__(self, dim: int, num_queries: int = 4, d_out: int = 1, num_classes: int | None = None) -> None:
        super().__init__()
        dim, num_queries, d_out = (
            _positive(n, v) for n, v in (("dim", dim), ("num_queries", num_queries), ("d_out", d_out))
        )
        if dim % d_out or (dim // d_out) % num_queries:
            raise ValueError(
                f"EfficientProbe: d_out={d_out} must divide dim={dim} and num_queries={num_queries} must divide "
                f"dim // d_out"
            )
        self.dim, self.num_queries, self.out_dim = dim, num_queries, dim // d_out
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.value = nn.Linear(dim, self.out_dim, bias=False)
        self.head = nn.Linear(self.out_dim, _positive("num_classes", num_classes)) if num_classes else None

    def forward(self, x: Tensor, *, need_weights: bool = False):
        _check_tokens(x, self.dim, "EfficientProbe")
        out, weights = efficient_probing(x, self.queries, self.value(x), need_weights=True)  # (B, D_v), (B, M, T)
        if self.head is not None:
            out = self.head(out)
        return (out, weights) if need_weights else out


class AttentiveProbe(nn.Module):
    """Attentive probing: learned queries cross-attend to frozen tokens with multi-head attention.

    ``x (B, T, D) -> (B, M D)`` (the ``M`` query outputs concatenated), or logits ``(B, num_classes)``.

    Args:
        dim: token width ``D``; num_heads: ``H`` (divides ``D``); num_queries: ``M``;
        num_classes: if given, ``LayerNorm`` then a linear classifier on the read-out.
    Parameters: ``queries (M, D)``, the attention's ``q_proj, k_proj, v_proj, out_proj``, ``norm`` and ``head``.
    """

    def __init__(self, dim: int, num_heads: int = 1, num_queries: int = 1, num_classes: int | None = None) -> None:
        super().__init__()
        dim, num_queries = _positive("dim", dim), _positive("num_queries", num_queries)
        self.dim, self.num_queries = dim, num_queries
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.attn = MultiHeadAttention(dim, num_heads)
        self.norm = nn.LayerNorm(dim * num_queries) if num_classes else None
        self.head = nn.Linear(dim * num_queries, _positive("num_classes", num_classes)) if num_classes else None

    def forward(self, x: Tensor, *, need_weights: bool = False):
        _check_tokens(x, self.dim, "AttentiveProbe")
        q = self.queries.expand(x.shape[0], -1, -1)  # (B, M, D)
        out, weights = self.attn(q, x, x, need_weights=need_weights, average_attn_weights=False)  # (B, M, D)
        out = out.flatten(1)  # (B, M D)
        if self.head is not None:
            out = self.head(self.norm(out))
        return (out, weights) if need_weights else out
