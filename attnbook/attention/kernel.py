"""Nadaraya-Watson kernel regression: attention as a soft dictionary lookup (chapter 01).

A dictionary maps keys ``k_j`` to values ``v_j``; a *hard* lookup returns the value whose key matches the
query. Nadaraya-Watson regression (*On Estimating Regression*, Nadaraya 1964, :cite:`nadaraya1964estimating`;
*Smooth Regression Analysis*, Watson 1964, :cite:`watson1964smooth`) returns instead a weighted mean of all
values, weighted by how close each key is to the query. With the Gaussian kernel of width ``w`` the weights
are a softmax, which makes it the first attention mechanism of the book:

.. math::
    f(q) = \\sum_j \\alpha_j(q)\\, v_j, \\qquad
    \\alpha_j(q) = \\operatorname{softmax}_j\\!\\left(-\\frac{\\lVert q - k_j \\rVert^2}{2 w^2}\\right)
            = \\frac{\\exp(-\\lVert q - k_j\\rVert^2 / 2w^2)}{\\sum_i \\exp(-\\lVert q - k_i\\rVert^2 / 2w^2)}.

The width is a temperature: ``softmax(s / tau)`` with scores ``s = -||q - k||^2`` and ``tau = 2 w^2``.
As ``w -> 0`` the weights become one-hot on the nearest key (hard attention = nearest-neighbour lookup);
as ``w -> inf`` they become uniform (the output is the mean of the values).

Shapes. Points are either scalars, ``queries (T_q,)`` and ``keys (T_k,)``, or vectors,
``queries (..., T_q, D)`` and ``keys (..., T_k, D)`` with matching leading dims. Values are ``(T_k,)`` (one number per
key) or ``(..., T_k, D_v)``; the output has the values' form with ``T_q`` in place of ``T_k``. Weights are
``(..., T_q, T_k)``. Memory is ``O(T_q T_k D)``: distances are taken as differences, not through the
expansion ``|q|^2 - 2 q.k + |k|^2``, so that equal points have distance exactly 0.

* :func:`nadaraya_watson` -- the estimator as a function (optionally returning the weights).
* :func:`gaussian_kernel_logits` -- the logits ``-||q - k||^2 / (2 w^2)``.
* :class:`NadarayaWatson` -- a module with a learnable log-width (trained, e.g., by leave-one-out loss).
* :class:`GaussianKernelScores` -- the same logits as a :class:`~attnbook.attention.core.Scores` part, so the
  book's one :class:`~attnbook.attention.core.AttentionCore` runs kernel regression on split heads.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnbook.attention.core import Scores
from attnbook.attention.functional import check_mask, masked_softmax

__all__ = ["gaussian_kernel_logits", "nadaraya_watson", "NadarayaWatson", "GaussianKernelScores"]


def _as_points(x: Tensor, name: str) -> Tensor:
    """``(L,)`` scalars become ``(L, 1)`` points; ``(..., L, D)`` is kept. Checks type, dtype and emptiness."""
    if not isinstance(x, Tensor):
        raise TypeError(f"nadaraya_watson: {name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"nadaraya_watson: {name} must be a floating tensor, got {x.dtype} (shape {tuple(x.shape)})")
    if x.ndim == 0:
        raise ValueError(f"nadaraya_watson: {name} must have shape (L,) or (..., L, D), got a scalar")
    if x.numel() == 0:
        raise ValueError(f"nadaraya_watson: {name} must not be empty, got shape {tuple(x.shape)}")
    return x.unsqueeze(-1) if x.ndim == 1 else x  # (..., L, D)


def _check_width(width: float | Tensor) -> Tensor | float:
    if isinstance(width, Tensor):
        if width.numel() != 1:
            raise ValueError(f"width must be a single number, got a tensor of shape {tuple(width.shape)}")
        if not width.is_floating_point():
            raise TypeError(f"width must be a floating tensor, got {width.dtype}")
        if not bool(width.detach() > 0):
            raise ValueError(f"width must be > 0, got {width.item()}")
        return width.reshape(())
    if isinstance(width, bool) or not isinstance(width, int | float):
        raise TypeError(f"width must be a positive number or a 1-element tensor, got {type(width).__name__}")
    if not width > 0 or math.isnan(width):
        raise ValueError(f"width must be > 0, got {width}")
    return float(width)


def _squared_distances(queries: Tensor, keys: Tensor) -> Tensor:
    """``||q_i - k_j||^2`` as ``(..., T_q, T_k)``, after checking that queries and keys have matching forms."""
    q = _as_points(queries, "queries")
    k = _as_points(keys, "keys")
    if q.ndim != k.ndim or q.shape[:-2] != k.shape[:-2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(
            "nadaraya_watson: queries and keys must both be (L,) or both (..., L, D) with the same leading "
            f"dims and D, got queries {tuple(queries.shape)} and keys {tuple(keys.shape)}"
        )
    if q.dtype != k.dtype:
        raise TypeError(f"nadaraya_watson: queries and keys must share a dtype, got {q.dtype} and {k.dtype}")
    diff = q.unsqueeze(-2) - k.unsqueeze(-3)  # (..., T_q, 1, D) - (..., 1, T_k, D) = (..., T_q, T_k, D)
    return diff.square().sum(dim=-1)  # (..., T_q, T_k)


def gaussian_kernel_logits(queries: Tensor, keys: Tensor, width: float | Tensor) -> Tensor:
    """The logits ``-||q_i - k_j||^2 / (2 w^2)`` of the Gaussian kernel, shape ``(..., T_q, T_k)``.

    ``queries (T_q,)`` or ``(..., T_q, D)``; ``keys`` in the same form. ``width`` may be ``inf`` (all logits 0).
    These are the textbook logits; at very small widths they overflow to ``-inf`` (and ``0 / 0`` where a query
    equals a key), so :func:`nadaraya_watson` normalises shifted logits instead (see there).
    """
    w = _check_width(width)
    return -_squared_distances(queries, keys) / (2 * w**2)


def _shifted_logits(squared_distance: Tensor, width: float | Tensor, mask: Tensor | None) -> Tensor:
    """``-(d_ij - min_j d_ij) / 2w^2`` with ``d = ||q - k||^2``: the logits shifted so that each row's largest is 0.

    Softmax does not change when a row's logits move by the same amount, so these give the Gaussian weights
    exactly; but the nearest key's logit is exactly 0 at *every* width, so no row can underflow to all zeros
    as ``w -> 0``. Entries whose weight is below the dtype's smallest number anyway (``gap > C * 2w^2`` with
    ``exp(-C) == 0``) are set to ``-inf`` directly, without dividing by a ``2w^2`` that may have underflowed to
    0: the limit ``w -> 0`` is then exact, nearest-neighbour lookup, with tied nearest keys sharing equally.
    Masked keys (``mask`` False) are left out of the row minimum and get ``-inf``.
    """
    work = squared_distance if mask is None else squared_distance.masked_fill(~mask, float("inf"))
    nearest = work.detach().amin(dim=-1, keepdim=True)  # (..., T_q, 1); the shift needs no gradient
    nearest = torch.where(torch.isfinite(nearest), nearest, torch.zeros_like(nearest))  # a fully masked row
    gap = work - nearest  # (..., T_q, T_k), >= 0, exactly 0 at the nearest key(s), inf where masked
    # 2w^2 in the distances' dtype, where it may underflow to 0 for tiny widths (1e-30 in float32).
    denominator = (2 * width**2).to(gap.dtype) if isinstance(width, Tensor) else gap.new_tensor(2 * width**2)
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    cutoff = -math.log(torch.finfo(gap.dtype).tiny) + 60.0  # exp(-cutoff) is 0 even for subnormal results
    vanishing = gap > cutoff * denominator  # (..., T_q, T_k): weight exactly 0 (True for every gap > 0 if 2w^2 == 0)
    logits = -torch.where(vanishing, torch.zeros_like(gap), gap) / safe  # finite, in [-cutoff, 0]
    return logits.masked_fill(vanishing, float("-inf"))


def nadaraya_watson(
    queries: Tensor,
    keys: Tensor,
    values: Tensor,
    width: float | Tensor,
    *,
    mask: Tensor | None = None,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Nadaraya-Watson regression with a Gaussian kernel: ``f(q_i) = sum_j softmax_j(-|q_i-k_j|^2/2w^2) v_j``.

    Args:
        queries: ``(T_q,)`` or ``(..., T_q, D)`` -- where to predict.
        keys: ``(T_k,)`` or ``(..., T_k, D)`` -- the observed inputs.
        values: ``(T_k,)`` or ``(..., T_k, D_v)`` -- the observed outputs.
        width: the kernel width ``w > 0`` (a float or a 1-element tensor, which may require grad); ``inf``
            gives uniform weights.
        mask: optional boolean ``(..., T_q, T_k)`` (broadcastable), ``True`` = key ``j`` may be used for query
            ``i``; e.g. ``~torch.eye(n, dtype=torch.bool)`` leaves each training point out of its own
            prediction. A query with no usable key predicts 0.

    The weights are computed from logits shifted by each row's smallest squared distance (the softmax is
    unchanged), so the limit ``width -> 0`` holds exactly at any tiny width, in float32 and float64: each
    query returns the value of its nearest usable key, and keys tied for nearest share the weight equally.
        return_weights: also return the weights ``(..., T_q, T_k)``.

    Returns:
        The predictions, ``(T_q,)`` for ``(T_k,)`` values, else ``(..., T_q, D_v)``; with the weights if asked.
    """
    w = _check_width(width)
    squared_distance = _squared_distances(queries, keys)  # (..., T_q, T_k)
    if not isinstance(values, Tensor):
        raise TypeError(f"nadaraya_watson: values must be a torch.Tensor, got {type(values).__name__}")
    if values.dtype != squared_distance.dtype:
        raise TypeError(
            f"nadaraya_watson: values must have the keys' dtype {squared_distance.dtype}, got {values.dtype}"
        )
    scalar_values = values.ndim == 1
    v = values.unsqueeze(-1) if scalar_values else values  # (..., T_k, D_v)
    num_keys = squared_distance.shape[-1]
    if v.shape[:-1] != (*squared_distance.shape[:-2], num_keys):
        raise ValueError(
            "nadaraya_watson: values must be (T_k,) or (..., T_k, D_v) with the keys' leading dims and T_k, "
            f"got values {tuple(values.shape)} and keys {tuple(keys.shape)}"
        )
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(
                "nadaraya_watson: mask must be a boolean tensor (True = use the key), "
                f"got {type(mask).__name__} of dtype {getattr(mask, 'dtype', None)}"
            )
        check_mask(mask, tuple(squared_distance.shape), squared_distance.dtype, name="mask")
    weights = masked_softmax(_shifted_logits(squared_distance, w, mask), mask)  # (..., T_q, T_k)
    out = weights @ v  # (..., T_q, D_v)
    out = out.squeeze(-1) if scalar_values else out  # (T_q,) for scalar values
    return (out, weights) if return_weights else out


class NadarayaWatson(nn.Module):
    """Nadaraya-Watson regression with a learnable Gaussian kernel width (chapter 01).

    The width is stored as ``log_width`` so that gradient steps keep it positive and act on its scale
    (a step of 0.1 changes the width by about 10 %, whether it is 0.01 or 10). Train it on a leave-one-out
    loss -- ``mask=~torch.eye(n, dtype=torch.bool)`` -- since with each point allowed to predict itself the
    best width is 0 (interpolating the noise).

    Args:
        width: the initial width ``w > 0``.
        learnable: whether ``log_width`` is an ``nn.Parameter`` (else a buffer).
    """

    def __init__(self, width: float = 1.0, *, learnable: bool = True) -> None:
        super().__init__()
        _check_width(width)
        if math.isinf(width):
            raise ValueError("width must be finite for NadarayaWatson (its log is the parameter)")
        log_width = torch.tensor(math.log(width), dtype=torch.get_default_dtype())
        if learnable:
            self.log_width = nn.Parameter(log_width)
        else:
            self.register_buffer("log_width", log_width)

    @property
    def width(self) -> Tensor:
        """The current width ``exp(log_width)``, a 0-d tensor."""
        return self.log_width.exp()

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None) -> Tensor:
        """Predict at ``queries`` from the (``keys``, ``values``) pairs; shapes as :func:`nadaraya_watson`."""
        return nadaraya_watson(queries, keys, values, self.width.to(queries.dtype), mask=mask)

    def weights(self, queries: Tensor, keys: Tensor, mask: Tensor | None = None) -> Tensor:
        """The attention weights ``(..., T_q, T_k)`` that :meth:`forward` uses."""
        squared_distance = _squared_distances(queries, keys)  # (..., T_q, T_k)
        if mask is not None:
            check_mask(mask, tuple(squared_distance.shape), squared_distance.dtype, name="mask")
        return masked_softmax(_shifted_logits(squared_distance, self.width.to(queries.dtype), mask), mask)

    def extra_repr(self) -> str:
        return f"width={self.width.item():.4g}, learnable={isinstance(self.log_width, nn.Parameter)}"


class GaussianKernelScores(Scores):
    """Gaussian-kernel logits as a :class:`~attnbook.attention.core.Scores` part of the attention core.

    ``(B, H, T_q, D), (B, H, T_k, D) -> (B, H, T_q, T_k)``: ``-||q - k||^2 / (2 w^2)``, with a learnable
    ``log_width`` when ``learnable``. ``AttentionCore(scores=GaussianKernelScores(w))`` followed by the
    softmax is Nadaraya-Watson regression on every head (chapter 01).
    """

    def __init__(self, width: float = 1.0, *, learnable: bool = True) -> None:
        super().__init__()
        self.kernel = NadarayaWatson(width, learnable=learnable)

    @property
    def width(self) -> Tensor:
        return self.kernel.width

    def forward(self, q: Tensor, k: Tensor) -> Tensor:
        # Shifted logits (each row's largest is 0): the same softmax, and the exact nearest-key limit for tiny
        # widths. The core applies its mask afterwards, so a masked nearest key is not known here.
        return _shifted_logits(_squared_distances(q, k), self.width.to(q.dtype), None)  # (B, H, T_q, T_k)
