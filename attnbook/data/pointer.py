"""Seeded synthetic tasks whose answers are positions in the input: sorting and planar convex hulls (chapter 02).

Pointer Networks (*Pointer Networks*, 2015, :cite:`vinyals2015pointer`) output a sequence of indices into their
input. Both tasks here give ``inputs`` and index ``targets`` in a canonical order:

* :func:`sorting_task`: ``inputs (N, n, 1)`` numbers uniform in ``[0, 1)``; ``targets (N, n)`` = the argsort
  (indices of the numbers in increasing order).
* :func:`convex_hull_task`: ``inputs (N, n, 2)`` points uniform in the unit square, as in the paper;
  ``targets (N, n + 1)`` = the hull's vertices **counter-clockwise, starting from the smallest input index**
  (the paper's convention), then the end symbol ``END = n`` (the column after the last input), then
  ``IGNORE = -100`` padding.

Geometry helpers: :func:`convex_hull` (Andrew's monotone chain, strict: collinear points are not vertices),
:func:`polygon_area` (shoelace), :func:`is_simple_polygon`, and :func:`hull_coverage` -- the area of the
predicted polygon over the area of the true hull, with an *invalid* prediction (fewer than 3 distinct
vertices, a repeated vertex, or self-intersecting edges) scored 0. Every input point lies in the hull, so a
valid polygon on input points covers at most the hull: coverage is in ``[0, 1]``, 1 exactly for the hull.

:class:`PointerDataset` and :func:`pad_pointer_batch` wrap the tasks for a ``DataLoader``; the collate function
pads examples of different lengths, returns ``lengths`` and moves each ``END`` to the padded length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "IGNORE_INDEX",
    "PointerTask",
    "sorting_task",
    "convex_hull_task",
    "convex_hull",
    "polygon_area",
    "is_simple_polygon",
    "hull_coverage",
    "PointerDataset",
    "pad_pointer_batch",
]

#: Target value for the steps after the end symbol (``torch.nn.functional.nll_loss``'s default ignore index).
IGNORE_INDEX = -100


class PointerTask(NamedTuple):
    """``inputs (N, n, d)`` float32 and ``targets (N, m)`` int64 index sequences."""

    inputs: Tensor
    targets: Tensor


def _check_sizes(where: str, num_samples: int, n: int, min_n: int, seed: int) -> None:
    if not isinstance(num_samples, int) or num_samples <= 0:
        raise ValueError(f"{where}: num_samples must be a positive int, got {num_samples!r}")
    if not isinstance(n, int) or n < min_n:
        raise ValueError(f"{where}: n must be an int >= {min_n}, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{where}: seed must be a non-negative int, got {seed!r}")


def sorting_task(num_samples: int, n: int, seed: int = 0) -> PointerTask:
    """Sort ``n`` numbers: ``inputs (N, n, 1)`` uniform in ``[0, 1)``, ``targets (N, n)`` their argsort."""
    _check_sizes("sorting_task", num_samples, n, 1, seed)
    rng = np.random.default_rng(seed)
    values = rng.random((num_samples, n))
    order = np.argsort(values, axis=1, kind="stable")
    return PointerTask(torch.tensor(values, dtype=torch.float32)[..., None], torch.tensor(order, dtype=torch.long))


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """z-component of ``(a - o) x (b - o)``: > 0 for a left (counter-clockwise) turn o -> a -> b."""
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def convex_hull(points: np.ndarray | Tensor) -> list[int]:
    """Indices of the convex hull of ``points (n, 2)``, counter-clockwise from the smallest hull index.

    Andrew's monotone chain: sort by (x, y), build the lower and the upper chain, popping every point that
    does not make a strict left turn (so collinear boundary points are not vertices). ``O(n log n)``.
    """
    pts = points.detach().cpu().double().numpy() if isinstance(points, Tensor) else np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < 1:
        raise ValueError(f"convex_hull: points must have shape (n, 2) with n >= 1, got {pts.shape}")
    order = sorted(range(len(pts)), key=lambda i: (pts[i, 0], pts[i, 1]))
    if len(order) < 3:
        return sorted(set(order), key=order.index)

    def chain(indices: list[int]) -> list[int]:
        out: list[int] = []
        for i in indices:
            while len(out) >= 2 and _cross(pts[out[-2]], pts[out[-1]], pts[i]) <= 0:
                out.pop()
            out.append(i)
        return out

    lower, upper = chain(order), chain(order[::-1])
    hull = lower[:-1] + upper[:-1]  # counter-clockwise, starting at the leftmost point
    start = hull.index(min(hull))
    return hull[start:] + hull[:start]


def convex_hull_task(num_samples: int, n: int, seed: int = 0) -> PointerTask:
    """Planar convex hull of ``n`` uniform points: ``inputs (N, n, 2)``, ``targets (N, n + 1)``.

    A target row is the hull counter-clockwise from its smallest index, then ``END = n``, then ``IGNORE_INDEX``.
    """
    _check_sizes("convex_hull_task", num_samples, n, 3, seed)
    rng = np.random.default_rng(seed)
    points = rng.random((num_samples, n, 2))
    targets = np.full((num_samples, n + 1), IGNORE_INDEX, dtype=np.int64)
    for b in range(num_samples):
        hull = convex_hull(points[b])
        targets[b, : len(hull)] = hull
        targets[b, len(hull)] = n
    return PointerTask(torch.tensor(points, dtype=torch.float32), torch.tensor(targets))


def polygon_area(points: np.ndarray | Tensor, indices: Sequence[int] | None = None) -> float:
    """Absolute shoelace area of the polygon visiting ``points[indices]`` in order (all points by default)."""
    pts = points.detach().cpu().double().numpy() if isinstance(points, Tensor) else np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"polygon_area: points must have shape (n, 2), got {pts.shape}")
    poly = pts if indices is None else pts[np.asarray(list(indices), dtype=int)]
    if len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def _segments_intersect(p1: np.ndarray, p2: np.ndarray, p3: np.ndarray, p4: np.ndarray) -> bool:
    """Whether closed segments p1p2 and p3p4 share a point (orientation tests, collinear overlaps included)."""
    d1, d2 = _cross(p3, p4, p1), _cross(p3, p4, p2)
    d3, d4 = _cross(p1, p2, p3), _cross(p1, p2, p4)
    if ((d1 > 0) != (d2 > 0)) and d1 != 0 and d2 != 0 and ((d3 > 0) != (d4 > 0)) and d3 != 0 and d4 != 0:
        return True

    def on_segment(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> bool:
        return min(a[0], b[0]) <= c[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= c[1] <= max(a[1], b[1])

    return (
        (d1 == 0 and on_segment(p3, p4, p1))
        or (d2 == 0 and on_segment(p3, p4, p2))
        or (d3 == 0 and on_segment(p1, p2, p3))
        or (d4 == 0 and on_segment(p1, p2, p4))
    )


def is_simple_polygon(points: np.ndarray | Tensor, indices: Sequence[int]) -> bool:
    """A valid polygon: at least 3 vertices, no vertex repeated, no two non-adjacent edges touching."""
    pts = points.detach().cpu().double().numpy() if isinstance(points, Tensor) else np.asarray(points, dtype=float)
    idx = [int(i) for i in indices]
    if len(idx) < 3 or len(set(idx)) != len(idx) or min(idx) < 0 or max(idx) >= len(pts):
        return False
    poly = pts[idx]
    m = len(poly)
    for i in range(m):
        for j in range(i + 1, m):
            if j == i + 1 or (i == 0 and j == m - 1):
                continue  # adjacent edges share a vertex by construction
            if _segments_intersect(poly[i], poly[(i + 1) % m], poly[j], poly[(j + 1) % m]):
                return False
    return True


def hull_coverage(
    pred_indices: Sequence[int] | Tensor, points: np.ndarray | Tensor, true_hull: Sequence[int] | Tensor
) -> float:
    """Area of the predicted polygon / area of the true hull; 0 for an invalid polygon.

    Args:
        pred_indices: predicted vertex indices in order; negative entries (padding after the end symbol) and
            anything from the end symbol ``n = len(points)`` on are dropped.
        points: ``(n, 2)``.
        true_hull: the true hull's indices (e.g. from :func:`convex_hull`); entries ``< 0`` or ``>= n`` dropped.
    """
    pts = points.detach().cpu().double().numpy() if isinstance(points, Tensor) else np.asarray(points, dtype=float)
    n = len(pts)
    pred: list[int] = []
    for i in pred_indices.tolist() if isinstance(pred_indices, Tensor) else pred_indices:
        if i >= n or i < 0:
            break
        pred.append(int(i))
    hull = [int(i) for i in (true_hull.tolist() if isinstance(true_hull, Tensor) else true_hull) if 0 <= i < n]
    true_area = polygon_area(pts, hull)
    if true_area <= 0:
        raise ValueError(f"hull_coverage: the true hull {hull} has zero area")
    if not is_simple_polygon(pts, pred):
        return 0.0
    return polygon_area(pts, pred) / true_area


class PointerDataset(Dataset):
    """A map-style dataset of ``(inputs (n, d), targets (m,))`` examples, possibly of several lengths.

    Build it from one or more :class:`PointerTask` s (e.g. ``[sorting_task(1000, n, seed=n) for n in range(5, 11)]``)
    and batch it with ``DataLoader(ds, batch_size, collate_fn=pad_pointer_batch)``.
    """

    def __init__(self, tasks: PointerTask | Sequence[PointerTask]) -> None:
        tasks = [tasks] if isinstance(tasks, PointerTask) else list(tasks)
        if not tasks:
            raise ValueError("PointerDataset: tasks must not be empty")
        self.examples: list[tuple[Tensor, Tensor]] = []
        for task in tasks:
            if task.inputs.ndim != 3 or task.targets.ndim != 2 or len(task.inputs) != len(task.targets):
                raise ValueError(
                    f"PointerDataset: a task needs inputs (N, n, d) and targets (N, m), got "
                    f"{tuple(task.inputs.shape)} and {tuple(task.targets.shape)}"
                )
            self.examples.extend(zip(task.inputs, task.targets, strict=True))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.examples[index]


def pad_pointer_batch(examples: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor]:
    """Collate ``(inputs (n_b, d), targets (m_b,))`` examples into ``(inputs, targets, lengths)``.

    ``inputs (B, n_max, d)`` zero-padded; ``lengths (B,)``; ``targets (B, m_max)`` padded with ``IGNORE_INDEX``,
    with each example's end symbol ``n_b`` moved to ``n_max`` (the model's end column for the padded batch).
    """
    if not examples:
        raise ValueError("pad_pointer_batch: examples must not be empty")
    lengths = torch.tensor([x.shape[0] for x, _ in examples])
    n_max, m_max = int(lengths.max()), max(t.shape[0] for _, t in examples)
    d = examples[0][0].shape[1]
    inputs = torch.zeros(len(examples), n_max, d, dtype=examples[0][0].dtype)
    targets = torch.full((len(examples), m_max), IGNORE_INDEX, dtype=torch.long)
    for b, (x, t) in enumerate(examples):
        n_b = x.shape[0]
        inputs[b, :n_b] = x
        targets[b, : t.shape[0]] = torch.where(t == n_b, torch.full_like(t, n_max), t)
    return inputs, targets, lengths
