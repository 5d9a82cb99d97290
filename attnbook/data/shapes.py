"""Generated detection data: small grey images with a few squares, discs and points, and their boxes (chapter 16).

:func:`make_shapes` draws ``N`` images of ``S x S`` pixels, each with 1 to ``max_objects`` non-overlapping objects on
a faintly noisy background. An object is one of :data:`SHAPE_CLASSES`: a filled **square**, a filled **disc**, or a
**point** (a 3 x 3 pixel blob, the kind of tiny target SpecDETR :cite:`li2024specdetr` detects in hyperspectral
images); its brightness is random in ``[0.6, 1]``. Everything comes from one seeded generator: the same seed gives
the same data on every machine.

Boxes follow DETR's convention :cite:`carion2020end`: ``(cx, cy, w, h)`` normalised by the image side, so every
coordinate is in ``[0, 1]``; a box is the tight pixel extent of its object.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["SHAPE_CLASSES", "ShapesData", "make_shapes"]

SHAPE_CLASSES = ("square", "disc", "point")


class ShapesData(NamedTuple):
    """``images (N, 1, S, S)`` float32 in ``[0, 1]``; per image ``labels[i] (n_i,)`` int64 and ``boxes[i] (n_i, 4)``."""

    images: Tensor
    labels: list[Tensor]
    boxes: list[Tensor]


def _int_at_least(value: object, low: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"make_shapes: {name} must be an int, got {value!r} ({type(value).__name__})")
    if value < low:
        raise ValueError(f"make_shapes: {name} must be at least {low}, got {value}")
    return int(value)


def make_shapes(
    num_images: int,
    *,
    image_size: int = 32,
    max_objects: int = 3,
    min_size: int = 6,
    max_size: int = 12,
    noise: float = 0.05,
    seed: int = 0,
) -> ShapesData:
    """Draw ``num_images`` images with 1..``max_objects`` objects each (squares and discs of side/diameter
    ``min_size..max_size`` pixels, points of 3 pixels), kept one pixel apart; returns :class:`ShapesData`."""
    N = _int_at_least(num_images, 1, "num_images")
    S = _int_at_least(image_size, 8, "image_size")
    n_max = _int_at_least(max_objects, 1, "max_objects")
    lo = _int_at_least(min_size, 3, "min_size")
    hi = _int_at_least(max_size, lo, "max_size")
    if hi > S // 2:
        raise ValueError(f"make_shapes: max_size={hi} must be at most image_size // 2 = {S // 2}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < 0.5:
        raise ValueError(f"make_shapes: noise must be a number in [0, 0.5), got {noise!r}")
    g = torch.Generator().manual_seed(int(seed))
    images = noise * torch.rand(N, 1, S, S, generator=g)
    rows, cols = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    all_labels, all_boxes = [], []
    for n in range(N):
        count = int(torch.randint(1, n_max + 1, (1,), generator=g))
        taken = torch.zeros(S, S, dtype=torch.bool)
        labels, boxes = [], []
        for _ in range(100 * count):  # rejection sampling of non-overlapping places
            if len(labels) == count:
                break
            kind = int(torch.randint(len(SHAPE_CLASSES), (1,), generator=g))
            side = 3 if SHAPE_CLASSES[kind] == "point" else int(torch.randint(lo, hi + 1, (1,), generator=g))
            top, left = (int(v) for v in torch.randint(0, S - side + 1, (2,), generator=g))
            r0, r1, c0, c1 = max(top - 1, 0), min(top + side + 1, S), max(left - 1, 0), min(left + side + 1, S)
            if taken[r0:r1, c0:c1].any():
                continue
            inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
            if SHAPE_CLASSES[kind] == "disc":
                centre, radius = (side - 1) / 2, side / 2
                inside &= ((rows - top - centre) ** 2 + (cols - left - centre) ** 2) <= radius**2
            taken[r0:r1, c0:c1] = True
            images[n, 0][inside] = 0.6 + 0.4 * float(torch.rand(1, generator=g))
            labels.append(kind)
            boxes.append([(left + side / 2) / S, (top + side / 2) / S, side / S, side / S])
        all_labels.append(torch.tensor(labels, dtype=torch.long))
        all_boxes.append(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    return ShapesData(images, all_labels, all_boxes)
