"""Coloured shapes described by condition tokens: the data of the conditional denoiser (ch. 18).

Each image is ``3 x S x S`` (RGB, values in ``[-1, 1]``, background ``-1``) with one shape drawn in one colour
at one place. Three condition tokens describe it: which **shape** (a filled square, a plus, a hollow square),
which **colour** (red, green, blue) and which **quadrant** (top left, top right, bottom left, bottom right). The
token ids share one vocabulary of ``len(SHAPES) + len(COLOURS) + len(QUADRANTS) = 10``: shape ``s`` is id ``s``,
colour ``c`` is id ``3 + c``, quadrant ``p`` is id ``6 + p``. Inside its quadrant the shape's corner is jittered
by up to ``jitter`` pixels, so one description has several images. The three factors are drawn independently and
uniformly, so a model that ignores the tokens can only learn the average image.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["SHAPES", "COLOURS", "QUADRANTS", "ShapeImages", "conditioned_shapes", "draw_shape"]

SHAPES = ("square", "plus", "ring")
COLOURS = ("red", "green", "blue")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")


class ShapeImages(NamedTuple):
    """``images (N, 3, S, S)`` in ``[-1, 1]``; ``tokens (N, 3)``: shape, colour and quadrant ids in one vocabulary
    of 10; ``shape``, ``colour``, ``quadrant (N,)``: the factors as indices into SHAPES, COLOURS, QUADRANTS;
    ``corner (N, 2)``: the (row, column) of the shape's top-left pixel."""

    images: Tensor
    tokens: Tensor
    shape: Tensor
    colour: Tensor
    quadrant: Tensor
    corner: Tensor


def draw_shape(shape: int, size: int) -> Tensor:
    """The ``size x size`` boolean stencil of shape ``shape`` (an index into :data:`SHAPES`)."""
    if shape not in range(len(SHAPES)):
        raise ValueError(f"draw_shape: shape must be in 0..{len(SHAPES) - 1}, got {shape!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 3:
        raise ValueError(f"draw_shape: size must be an int >= 3, got {size!r}")
    stencil = torch.zeros(size, size, dtype=torch.bool)
    mid = size // 2
    if shape == 0:
        stencil[:] = True
    elif shape == 1:
        stencil[mid, :] = stencil[:, mid] = True
    else:
        stencil[0, :] = stencil[-1, :] = stencil[:, 0] = stencil[:, -1] = True
    return stencil


def conditioned_shapes(
    num_samples: int, image_size: int = 12, shape_size: int = 5, jitter: int = 1, seed: int = 0
) -> ShapeImages:
    """Generate ``num_samples`` shape images and their condition tokens (seeded; see the module docstring).

    The image is split into four quadrants of ``image_size // 2`` pixels; a shape of ``shape_size`` pixels sits
    in its quadrant with its corner at ``(half - shape_size) // 2`` plus a uniform offset in
    ``-jitter..jitter`` on each axis (kept inside the quadrant).
    """
    for name, value, low in (
        ("num_samples", num_samples, 1),
        ("image_size", image_size, 6),
        ("shape_size", shape_size, 3),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"conditioned_shapes: {name} must be an int >= {low}, got {value!r}")
    half = image_size // 2
    if shape_size > half:
        raise ValueError(f"conditioned_shapes: shape_size={shape_size} does not fit a quadrant of {half} pixels")
    if isinstance(jitter, bool) or not isinstance(jitter, int) or jitter < 0:
        raise ValueError(f"conditioned_shapes: jitter must be an int >= 0, got {jitter!r}")
    gen = torch.Generator().manual_seed(seed)
    shape = torch.randint(0, len(SHAPES), (num_samples,), generator=gen)
    colour = torch.randint(0, len(COLOURS), (num_samples,), generator=gen)
    quadrant = torch.randint(0, len(QUADRANTS), (num_samples,), generator=gen)
    offset = torch.randint(-jitter, jitter + 1, (num_samples, 2), generator=gen)
    base = (half - shape_size) // 2
    inside = (offset + base).clamp(0, half - shape_size)  # (N, 2): corner within the quadrant
    corner = inside + half * torch.stack([quadrant // 2, quadrant % 2], dim=-1)  # (N, 2): (row, column)
    images = -torch.ones(num_samples, 3, image_size, image_size)
    stencils = [draw_shape(s, shape_size) for s in range(len(SHAPES))]
    for i in range(num_samples):
        r, c = corner[i].tolist()
        patch = images[i, :, r : r + shape_size, c : c + shape_size]  # (3, size, size): a view
        patch[int(colour[i])][stencils[int(shape[i])]] = 1.0
    tokens = torch.stack([shape, len(SHAPES) + colour, len(SHAPES) + len(COLOURS) + quadrant], dim=-1)  # (N, 3)
    return ShapeImages(images, tokens, shape, colour, quadrant, corner)
