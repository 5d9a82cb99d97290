"""A seeded 1-D regression task for kernel regression and its learned width (chapter 01).

The target is a smooth function with two length scales, a slow trend and a faster wiggle,

.. math::
    f(x) = \\sin(2x) + 0.5\\, x \\qquad (0 \\le x \\le 5),

observed at ``n_train`` random inputs with Gaussian noise of standard deviation ``noise``. A kernel width
much wider than the wiggle flattens it; a width much narrower than the spacing of the points copies the noise.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["RegressionTask", "regression_target", "make_regression_task"]


class RegressionTask(NamedTuple):
    """Training pairs at sorted random inputs and test pairs on an even grid; every tensor 1-D.

    ``x_train (n_train,)``, ``y_train (n_train,)`` noisy; ``x_test (n_test,)``, ``y_test (n_test,)`` noisy
    with fresh noise; ``f_test (n_test,)`` the noise-free target on the test grid.
    """

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    f_test: Tensor


def regression_target(x: Tensor) -> Tensor:
    """The noise-free target ``f(x) = sin(2x) + x / 2``, elementwise."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating torch.Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    return torch.sin(2 * x) + 0.5 * x


def make_regression_task(
    n_train: int = 50,
    n_test: int = 200,
    noise: float = 0.3,
    seed: int = 0,
    *,
    low: float = 0.0,
    high: float = 5.0,
    dtype: torch.dtype = torch.float32,
) -> RegressionTask:
    """Sample the task: ``x_train`` uniform in ``[low, high]`` (sorted), ``x_test`` an even grid on it.

    ``y = f(x) + noise * N(0, 1)`` for both splits, from one ``torch.Generator`` seeded with ``seed``:
    the same arguments always give the same tensors.
    """
    for name, count in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise ValueError(f"{name} must be a positive int, got {count!r}")
    if isinstance(noise, bool) or not isinstance(noise, int | float) or not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"low < high must be finite, got low={low!r}, high={high!r}")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    generator = torch.Generator().manual_seed(seed)
    x_train = low + (high - low) * torch.rand(n_train, generator=generator, dtype=torch.float64)
    x_train, _ = torch.sort(x_train)  # (n_train,)
    x_test = torch.linspace(low, high, n_test, dtype=torch.float64)  # (n_test,)
    y_train = regression_target(x_train) + noise * torch.randn(n_train, generator=generator, dtype=torch.float64)
    f_test = regression_target(x_test)
    y_test = f_test + noise * torch.randn(n_test, generator=generator, dtype=torch.float64)
    return RegressionTask(*(t.to(dtype) for t in (x_train, y_train, x_test, y_test, f_test)))
