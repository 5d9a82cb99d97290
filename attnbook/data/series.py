"""Synthetic series for chapter 20: shapes and values for classification, and a market of correlated stocks.

:func:`shape_value_series` draws multivariate series whose class is set by two cues of different kinds. A *shape*
cue: variable 0 carries a motif at a random position, a rising ramp or its mirror image, a falling ramp -- the
same values in the opposite order, so only the order (the shape) tells them apart. A *value* cue: variable 1 is
shifted up or down by a constant -- a raw level, invisible to any z-normalised shape. The class is
``2 * shape + level`` (four classes); a model that reads only one kind of cue can be right about half the time.

:func:`synthetic_stock_returns` draws daily returns of ``N`` stocks in sectors: each return is a slow sector
trend (a sum of two sinusoids with periods of several weeks, scaled by the stock's loading) plus a stock's own
slow trend and white noise that is larger than both. The trend is the predictable, low-frequency part; the noise is
high-frequency and unpredictable. :func:`stock_windows` cuts the panel into windows of past returns and the next
day's return.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["ShapeValueTask", "shape_value_series", "StockMarket", "synthetic_stock_returns", "stock_windows"]


def _positive_int(name: str, value: object, where: str, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where}: {name} must be an int >= {low}, got {value!r}")


class ShapeValueTask(NamedTuple):
    """``x (B, C, T)`` float32 series; ``labels (B,)`` in 0..3 = ``2 * shape + level``; ``shape``, ``level (B,)``
    the two cues; ``position (B,)`` where the motif starts."""

    x: Tensor
    labels: Tensor
    shape: Tensor
    level: Tensor
    position: Tensor


def shape_value_series(
    num_samples: int,
    num_variables: int = 3,
    length: int = 64,
    motif_length: int = 16,
    motif_height: float = 2.5,
    level_shift: float = 0.4,
    noise: float = 0.4,
    seed: int = 0,
) -> ShapeValueTask:
    """Seeded series with a shape cue on variable 0 and a value cue on variable 1 (module docstring).

    Every variable is Gaussian noise of standard deviation ``noise`` around a slow random sinusoid (amplitude 0.5);
    variable 0 adds a ramp of height ``motif_height`` (rising for shape 0, falling for shape 1) over
    ``motif_length`` steps at a uniform random position; variable 1 adds ``+level_shift`` (level 1) or
    ``-level_shift`` (level 0) everywhere.
    """
    where = "shape_value_series"
    _positive_int("num_samples", num_samples, where)
    _positive_int("num_variables", num_variables, where, low=2)
    _positive_int("motif_length", motif_length, where, low=2)
    _positive_int("length", length, where, low=motif_length)
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float32)
    period = 20 + 40 * torch.rand(num_samples, num_variables, 1, generator=gen)
    phase = 2 * math.pi * torch.rand(num_samples, num_variables, 1, generator=gen)
    x = 0.5 * torch.sin(2 * math.pi * t / period + phase)
    x = x + noise * torch.randn(num_samples, num_variables, length, generator=gen)
    shape = torch.randint(0, 2, (num_samples,), generator=gen)
    level = torch.randint(0, 2, (num_samples,), generator=gen)
    position = torch.randint(0, length - motif_length + 1, (num_samples,), generator=gen)
    ramp = torch.linspace(0.0, motif_height, motif_length)
    motifs = torch.where(shape[:, None] == 0, ramp, ramp.flip(0))  # (B, m): rising or falling
    index = position[:, None] + torch.arange(motif_length)  # (B, m)
    x[:, 0].scatter_add_(1, index, motifs)
    x[:, 1] += level_shift * (2 * level[:, None].float() - 1)
    return ShapeValueTask(x, 2 * shape + level, shape, level, position)


class StockMarket(NamedTuple):
    """``returns (days, N)``; ``trend (days, N)`` its predictable low-frequency part; ``sectors (N,)``."""

    returns: Tensor
    trend: Tensor
    sectors: Tensor


def synthetic_stock_returns(
    num_days: int,
    num_stocks: int = 8,
    num_sectors: int = 2,
    trend_scale: float = 1.0,
    noise_scale: float = 1.5,
    min_period: float = 16.0,
    max_period: float = 48.0,
    seed: int = 0,
) -> StockMarket:
    """Seeded daily returns: sector trend x loading + own trend + noise (module docstring).

    A sector's trend is ``sin(2 pi t / P_1 + phi_1) + sin(2 pi t / P_2 + phi_2)`` with periods drawn uniformly in
    ``[min_period, max_period]`` days, scaled by ``trend_scale / sqrt 2``; stock ``n`` loads it with a weight in
    ``[0.7, 1.3]`` and adds its own trend of the same kind at a quarter of the scale; the noise is white Gaussian
    with standard deviation ``noise_scale``. Stock ``n`` belongs to sector ``n mod num_sectors``.
    """
    where = "synthetic_stock_returns"
    _positive_int("num_days", num_days, where, low=2)
    _positive_int("num_stocks", num_stocks, where)
    _positive_int("num_sectors", num_sectors, where)
    if not 0 < min_period <= max_period:
        raise ValueError(f"{where}: need 0 < min_period <= max_period, got {min_period!r}, {max_period!r}")
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(num_days, dtype=torch.float32)[:, None]  # (days, 1)

    def slow(count: int) -> Tensor:  # (days, count): two sinusoids each, unit-ish scale
        periods = min_period + (max_period - min_period) * torch.rand(2, count, generator=gen)
        phases = 2 * math.pi * torch.rand(2, count, generator=gen)
        waves = torch.sin(2 * math.pi * t[None] / periods[:, None] + phases[:, None])  # (2, days, count)
        return waves.sum(0) / math.sqrt(2)

    sectors = torch.arange(num_stocks) % num_sectors
    loading = 0.7 + 0.6 * torch.rand(num_stocks, generator=gen)
    trend = trend_scale * (slow(num_sectors)[:, sectors] * loading + 0.25 * slow(num_stocks))
    returns = trend + noise_scale * torch.randn(num_days, num_stocks, generator=gen)
    return StockMarket(returns, trend, sectors)


def stock_windows(returns: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Windows of ``window`` past days ``(S, window, N)`` and the next day's returns ``(S, N)``.

    ``S = days - window``: window ``s`` holds days ``s .. s + window - 1`` and its target is day ``s + window``.
    """
    if not isinstance(returns, Tensor) or returns.ndim != 2:
        raise ValueError(f"stock_windows: returns must be (days, N), got {getattr(returns, 'shape', returns)!r}")
    _positive_int("window", window, "stock_windows")
    if returns.shape[0] <= window:
        raise ValueError(f"stock_windows: need more than window={window} days, got {returns.shape[0]}")
    past = returns.unfold(0, window, 1)[:-1].transpose(1, 2)  # (S, window, N)
    return past.contiguous(), returns[window:]
