"""Generated videos and scenes for chapter 22: moving shapes with anomalies, a steering scene, a two-task scene.

:func:`moving_shapes_video` draws short grey-scale videos of small squares that move with constant integer velocity
and bounce off the walls -- a world whose next frame follows exactly from the last two. An anomalous video breaks
that law once, at its *event frame*: a square **jumps** to a far-away place, **stops**, **reverses** its motion in
open space, or a new square **appears**. ``labels`` marks the event frames, the frames no model of normal motion can
predict from the past.

:func:`steering_scenes` draws top-down scenes for a control task: a bright target cell (the parking slot) and
distractor blobs on a dim background; the steering output is the target's horizontal offset from the centre, so
only one region of the scene matters for the control.

:func:`two_task_scenes` draws scenes with a red and a blue object (two channels) and a task bit: the answer is the
position of the object the task names. Only half of what the observation holds is relevant to each task -- the
setting of a task-conditioned bottleneck.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "ANOMALY_KINDS",
    "MovingShapesVideos",
    "moving_shapes_video",
    "clip_windows",
    "SteeringScenes",
    "steering_scenes",
    "TwoTaskScenes",
    "two_task_scenes",
]

ANOMALY_KINDS = ("jump", "stop", "reverse", "appear")


def _positive_int(name: str, value: object, where: str, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{where}: {name} must be an int >= {low}, got {value!r}")


class MovingShapesVideos(NamedTuple):
    """``frames (N, L, 1, S, S)`` float32 in [0, 1]; ``labels (N, L)`` bool, True at the event frame of an anomalous
    video; ``kinds`` the anomaly of each video (``"normal"`` or one of :data:`ANOMALY_KINDS`); ``positions (N, L,
    num_shapes, 2)`` the top-left corner (row, column) of each moving square per frame."""

    frames: Tensor
    labels: Tensor
    kinds: list[str]
    positions: Tensor


def _bounce(pos: Tensor, vel: Tensor, high: int) -> tuple[Tensor, Tensor]:
    """One step of motion in [0, high] with reflection at both walls (integers)."""
    nxt = pos + vel
    below, above = nxt < 0, nxt > high
    nxt = torch.where(below, -nxt, torch.where(above, 2 * high - nxt, nxt))
    vel = torch.where(below | above, -vel, vel)
    return nxt, vel


def _draw(canvas: Tensor, row: int, col: int, side: int) -> None:
    canvas[row : row + side, col : col + side] = 1.0


def moving_shapes_video(
    num_videos: int,
    num_frames: int = 16,
    size: int = 16,
    num_shapes: int = 2,
    side: int = 3,
    anomaly_fraction: float = 0.0,
    first_event: int = 5,
    seed: int = 0,
) -> MovingShapesVideos:
    """Seeded videos of bouncing squares, a fraction of them with one injected anomaly (module docstring).

    Each square (``side`` pixels) starts at a uniform random position with a velocity of 1 or 2 pixels per frame
    along each axis, in a random direction, and reflects off the walls of the ``size`` x ``size`` frame. An
    anomalous video (``anomaly_fraction`` of them, chosen at random) has an event frame ``a`` drawn uniformly from
    ``first_event`` to ``num_frames - 2`` and one kind, cycling through :data:`ANOMALY_KINDS`:

    * ``"jump"``: square 0 is moved to a uniform random position at least ``size // 3`` pixels away along one
      axis or both, and continues with its velocity;
    * ``"stop"``: square 0 keeps the position of frame ``a - 1`` from frame ``a`` on;
    * ``"reverse"``: square 0 goes back to where it was at frame ``a - 2`` and moves with the opposite velocity;
    * ``"appear"``: a new, still square appears at frame ``a`` at a uniform random position, and stays.

    Returns :class:`MovingShapesVideos`; ``labels[n, a]`` is True for the event frame only.
    """
    where = "moving_shapes_video"
    _positive_int("num_videos", num_videos, where)
    _positive_int("side", side, where)
    _positive_int("size", size, where, low=side + 3)
    _positive_int("num_shapes", num_shapes, where)
    _positive_int("first_event", first_event, where, low=2)
    _positive_int("num_frames", num_frames, where, low=first_event + 2)
    if isinstance(anomaly_fraction, bool) or not isinstance(anomaly_fraction, (int, float)):
        raise ValueError(f"{where}: anomaly_fraction must be a number in [0, 1], got {anomaly_fraction!r}")
    if not 0.0 <= anomaly_fraction <= 1.0:
        raise ValueError(f"{where}: anomaly_fraction must be a number in [0, 1], got {anomaly_fraction!r}")
    gen = torch.Generator().manual_seed(seed)
    high = size - side  # the largest top-left coordinate
    pos = torch.randint(0, high + 1, (num_videos, num_shapes, 2), generator=gen)
    speed = torch.randint(1, 3, (num_videos, num_shapes, 2), generator=gen)
    sign = 2 * torch.randint(0, 2, (num_videos, num_shapes, 2), generator=gen) - 1
    vel = speed * sign
    positions = torch.empty(num_videos, num_frames, num_shapes, 2, dtype=torch.long)
    for t in range(num_frames):
        positions[:, t] = pos
        pos, vel = _bounce(pos, vel, high)
    num_anomalous = round(anomaly_fraction * num_videos)
    anomalous = torch.randperm(num_videos, generator=gen)[:num_anomalous].sort().values
    events = torch.randint(first_event, num_frames - 1, (num_videos,), generator=gen)
    kinds = ["normal"] * num_videos
    labels = torch.zeros(num_videos, num_frames, dtype=torch.bool)
    extra: dict[int, tuple[int, int, int]] = {}  # video -> (event frame, row, column) of an appearing square
    for order, n in enumerate(anomalous.tolist()):
        kind = ANOMALY_KINDS[order % len(ANOMALY_KINDS)]
        a = int(events[n])
        kinds[n], labels[n, a] = kind, True
        track = positions[n, :, 0]  # (L, 2), square 0's path
        if kind == "jump":
            while True:
                target = torch.randint(0, high + 1, (2,), generator=gen)
                if (target - track[a]).abs().max() >= size // 3:
                    break
            v = track[a] - track[a - 1]
            p, vv = target.clone(), v.clone()
            for t in range(a, num_frames):
                track[t] = p
                p, vv = _bounce(p, vv, high)
        elif kind == "stop":
            track[a:] = track[a - 1]
        elif kind == "reverse":
            v = track[a - 2] - track[a - 1]  # the opposite of the last step (exact away from the walls)
            p, vv = track[a - 2].clone(), v.clone()
            for t in range(a, num_frames):
                track[t] = p
                p, vv = _bounce(p, vv, high)
        else:  # appear
            row, col = torch.randint(0, high + 1, (2,), generator=gen).tolist()
            extra[n] = (a, row, col)
    frames = torch.zeros(num_videos, num_frames, 1, size, size)
    for n in range(num_videos):
        for t in range(num_frames):
            for s in range(num_shapes):
                _draw(frames[n, t, 0], int(positions[n, t, s, 0]), int(positions[n, t, s, 1]), side)
        if n in extra:
            a, row, col = extra[n]
            for t in range(a, num_frames):
                _draw(frames[n, t, 0], row, col, side)
    return MovingShapesVideos(frames, labels, kinds, positions)


def clip_windows(frames: Tensor, context: int) -> tuple[Tensor, Tensor, Tensor]:
    """Cut videos into (past frames, next frame) pairs, every frame from ``context`` on being a target once.

    ``frames (N, L, C, S, S)`` -> ``past (N * (L - context), context, C, S, S)``, ``target (N * (L - context), C,
    S, S)`` and ``index (N * (L - context), 2)``, the (video, frame) of each target, so that per-frame scores map
    back onto ``labels``.
    """
    if not isinstance(frames, Tensor) or frames.dim() != 5:
        got = tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__
        raise ValueError(f"clip_windows: frames must have shape (N, L, C, S, S), got {got}")
    _positive_int("context", context, "clip_windows")
    num_videos, length = frames.shape[:2]
    if context >= length:
        raise ValueError(f"clip_windows: context must be < the number of frames {length}, got {context}")
    starts = torch.arange(length - context)  # (W,)
    offsets = starts[:, None] + torch.arange(context + 1)  # (W, context + 1)
    windows = frames[:, offsets]  # (N, W, context + 1, C, S, S)
    windows = windows.flatten(0, 1)  # (N * W, context + 1, C, S, S)
    video = torch.arange(num_videos).repeat_interleave(length - context)
    frame = (starts + context).repeat(num_videos)
    return windows[:, :context], windows[:, context], torch.stack([video, frame], 1)


class SteeringScenes(NamedTuple):
    """``scenes (N, 1, S, S)`` float32; ``steering (N,)`` in [-1, 1], the target's column offset from the centre;
    ``target (N, 2)`` the target's (row, column); ``relevant (N, S, S)`` bool, the target's cells."""

    scenes: Tensor
    steering: Tensor
    target: Tensor
    relevant: Tensor


def steering_scenes(
    num_scenes: int, size: int = 12, num_distractors: int = 3, noise: float = 0.1, seed: int = 0
) -> SteeringScenes:
    """Seeded top-down scenes whose steering depends on one region only (module docstring).

    A 2 x 2 target of brightness 1 sits at a uniform random position; ``num_distractors`` 2 x 2 blobs of
    brightness 0.6 sit elsewhere, and Gaussian noise of standard deviation ``noise`` covers the scene. The steering
    is ``(column - (size - 2) / 2) / ((size - 2) / 2)``: the offset of the target's centre (``column + 1``) from
    the scene's centre (``size / 2``), scaled to [-1, 1].
    """
    where = "steering_scenes"
    _positive_int("num_scenes", num_scenes, where)
    _positive_int("size", size, where, low=6)
    _positive_int("num_distractors", num_distractors, where, low=0)
    gen = torch.Generator().manual_seed(seed)
    high = size - 2
    scenes = noise * torch.randn(num_scenes, 1, size, size, generator=gen)
    target = torch.randint(0, high + 1, (num_scenes, 2), generator=gen)
    relevant = torch.zeros(num_scenes, size, size, dtype=torch.bool)
    for n in range(num_scenes):
        row, col = target[n].tolist()
        for _ in range(num_distractors):
            d_row, d_col = torch.randint(0, high + 1, (2,), generator=gen).tolist()
            scenes[n, 0, d_row : d_row + 2, d_col : d_col + 2] = 0.6
        scenes[n, 0, row : row + 2, col : col + 2] = 1.0  # drawn last: the target is never hidden
        relevant[n, row : row + 2, col : col + 2] = True
    steering = (target[:, 1].float() - high / 2) / (high / 2)
    return SteeringScenes(scenes, steering, target, relevant)


class TwoTaskScenes(NamedTuple):
    """``scenes (N, 2, S, S)`` float32 (channel 0 red, channel 1 blue); ``task (N,)`` in {0, 1}, which object
    counts; ``answer (N, 2)`` the named object's centre in [-1, 1] (row, column); ``centres (N, 2, 2)`` both
    objects' centres."""

    scenes: Tensor
    task: Tensor
    answer: Tensor
    centres: Tensor


def two_task_scenes(num_scenes: int, size: int = 12, noise: float = 0.1, seed: int = 0) -> TwoTaskScenes:
    """Seeded scenes of a red and a blue 2 x 2 object and a task bit that names one of them (module docstring).

    Both objects sit at uniform random positions (their own channel each) under Gaussian noise of standard
    deviation ``noise``; the answer is the named object's centre relative to the scene's, ``(corner - (size - 2)
    / 2) / ((size - 2) / 2)`` per axis, in [-1, 1].
    """
    where = "two_task_scenes"
    _positive_int("num_scenes", num_scenes, where)
    _positive_int("size", size, where, low=6)
    gen = torch.Generator().manual_seed(seed)
    high = size - 2
    scenes = noise * torch.randn(num_scenes, 2, size, size, generator=gen)
    corners = torch.randint(0, high + 1, (num_scenes, 2, 2), generator=gen)  # (N, object, (row, column))
    for n in range(num_scenes):
        for obj in range(2):
            row, col = corners[n, obj].tolist()
            scenes[n, obj, row : row + 2, col : col + 2] += 1.0
    task = torch.randint(0, 2, (num_scenes,), generator=gen)
    centres = (corners.float() - high / 2) / (high / 2)
    answer = centres[torch.arange(num_scenes), task]
    return TwoTaskScenes(scenes, task, answer, centres)
