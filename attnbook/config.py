"""Run-size and reproducibility helpers shared by every chapter.

Each experiment has a *quick* size (about a minute on a 2-core CPU; the default there) and a *full* size
(the default when a CUDA GPU is present, or with the environment variable ``ATTNBOOK_FULL=1``).
``ATTNBOOK_FULL=0`` forces the quick size even on a GPU.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

__all__ = ["is_full", "size", "seed_everything", "default_device"]

T = TypeVar("T")


def is_full() -> bool:
    """True when experiments should run at full size (``ATTNBOOK_FULL=1``, or a CUDA GPU and no override)."""
    flag = os.environ.get("ATTNBOOK_FULL", "").strip().lower()
    if flag in ("1", "true", "yes"):
        return True
    if flag in ("0", "false", "no"):
        return False
    if flag:
        raise ValueError(f"ATTNBOOK_FULL must be 1/true/yes or 0/false/no, got {flag!r}")
    import torch  # here, not at the top: `import attnbook` (and `attnbook presets`) stays light

    return torch.cuda.is_available()


def size(quick: T, full: T) -> T:
    """Pick the quick or the full value of a setting: ``steps = size(quick=300, full=5000)``."""
    return full if is_full() else quick


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA); returns a ``torch.Generator`` seeded the same way."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
