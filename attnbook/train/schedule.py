"""Learning-rate schedule: linear warm-up, then cosine decay to a floor.

The schedule multiplies the optimizer's base learning rate by

.. math::

    m(s) = \\begin{cases} (s + 1) / W & s < W \\\\
                          r + (1 - r)\\,\\tfrac12\\bigl(1 + \\cos(\\pi\\,\\min(1, (s - W) / (S - W)))\\bigr) & s \\ge W
           \\end{cases}

for optimizer step ``s`` (0-based), ``W`` warm-up steps, ``S`` total steps and floor ratio ``r``
(``min_lr = r * lr``). Warm-up keeps Adam's early, badly estimated second moments from taking huge steps
(the Transformer paper's schedule, Attention Is All You Need 2017, ``vaswani2017attention``, warms up the
same way); the cosine tail anneals to a small learning rate so the last steps settle into a minimum
(SGDR 2017, ``loshchilov2017sgdr``). Steps past ``S`` stay at the floor, so a run extended by resuming
with more steps does not restart the schedule.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["warmup_cosine_factor", "warmup_cosine_scheduler"]


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1) -> float:
    """The multiplier ``m(step)`` of the base learning rate (see the module docstring)."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1
) -> LambdaLR:
    """A ``LambdaLR`` stepping :func:`warmup_cosine_factor` once per optimizer step."""
    warmup_cosine_factor(0, warmup_steps, total_steps, min_lr_ratio)  # validate the arguments now
    return LambdaLR(optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps, min_lr_ratio))
