"""Images for the vision chapters: scikit-learn's handwritten digits (offline) and CIFAR-10 (downloaded, full runs).

* :func:`load_digits_split` -- the 1797 grey-level ``8 x 8`` digits that ship with scikit-learn, as float
  tensors ``(N, 1, 8, 8)`` in ``[0, 1]``, split into a training and a test part by a seeded, class-stratified
  shuffle (every class keeps its share in both parts). Always available offline; the quick-size vision data.
* :func:`download_cifar10` / :func:`load_cifar10` -- CIFAR-10 :cite:`krizhevsky2009learning` (50 000 training and
  10 000 test colour images, ``32 x 32``, ten classes) for full-size runs on a GPU. The downloader fetches the
  authors' *binary* archive once into the cache, checked against the size and SHA-256 pinned in the registry;
  the loader reads its fixed-size records (one label byte, then 1024 red, 1024 green and 1024 blue bytes) straight
  from the ``.tar.gz`` with NumPy -- no pickle is ever unpickled.

Both return :class:`ImageSplit` ``(images, labels)``: ``images (N, C, H, W)`` float32 in ``[0, 1]``, ``labels (N,)``
int64. ``DIGITS_CLASSES`` and ``CIFAR10_CLASSES`` name the classes. :func:`random_crop_flip` is the standard
light augmentation (shift by up to ``padding`` pixels, mirror left-right), done on a whole batch at once.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from attnbook.data import registry as _registry

__all__ = [
    "ImageSplit",
    "DIGITS_CLASSES",
    "CIFAR10_CLASSES",
    "load_digits_split",
    "download_cifar10",
    "load_cifar10",
    "random_crop_flip",
]

DIGITS_CLASSES = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR10 = "cifar10"
_CIFAR_RECORD = 1 + 3 * 32 * 32
_CIFAR_MEMBERS = {
    "train": tuple(f"cifar-10-batches-bin/data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("cifar-10-batches-bin/test_batch.bin",),
}


class ImageSplit(NamedTuple):
    """Images ``(N, C, H, W)`` float32 in ``[0, 1]`` and their integer labels ``(N,)``."""

    images: Tensor
    labels: Tensor


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")


def load_digits_split(
    test_fraction: float = 0.25, *, seed: int = 0, classes: tuple[int, ...] | None = None
) -> tuple[ImageSplit, ImageSplit]:
    """scikit-learn's digits as ``(train, test)`` :class:`ImageSplit` s with images ``(N, 1, 8, 8)`` in ``[0, 1]``.

    The split is stratified: each class's images are shuffled with ``seed`` and the first
    ``round(test_fraction * n_class)`` go to the test part, so both parts keep the class proportions; the same
    ``seed`` gives the same split. ``classes`` keeps only those digits (labels keep their digit values), e.g.
    ``classes=(0, 1, 2)`` for an experiment that trains on some classes and meets the others later.
    """
    from sklearn.datasets import load_digits

    _check_fraction("test_fraction", test_fraction)
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # (1797, 1, 8, 8), in [0, 1]
    labels = torch.tensor(digits.target, dtype=torch.long)
    if classes is not None:
        wanted = tuple(classes)
        bad = [c for c in wanted if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 9]
        if not wanted or bad or len(set(wanted)) != len(wanted):
            raise ValueError(f"classes must be distinct digits 0-9, got {classes!r}")
    else:
        wanted = tuple(range(10))
    generator = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for c in wanted:
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_test = round(test_fraction * len(idx))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train, test = torch.cat(train_idx).sort().values, torch.cat(test_idx).sort().values
    return ImageSplit(images[train], labels[train]), ImageSplit(images[test], labels[test])


def download_cifar10(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    sha256: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download CIFAR-10's binary archive once into the cache and return its path.

    Uses :func:`attnbook.data.registry.download` (pinned size and SHA-256, atomic write, a file already in the
    cache with the right checksum is reused). ``url`` and ``sha256`` replace the registry's (a mirror or a local
    ``file://`` copy).

    Raises:
        ConnectionError: the URL cannot be reached (offline); the message says where to place the file by hand.
        ValueError: the downloaded bytes do not have the pinned size or SHA-256.
    """
    overrides = {k: v for k, v in (("url", url), ("sha256", sha256)) if v is not None}
    return _registry.download(_CIFAR10, cache_dir, timeout=timeout, **overrides)


def _read_cifar_records(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    if len(data) % _CIFAR_RECORD:
        raise ValueError(f"{where}: {len(data)} bytes is not a whole number of {_CIFAR_RECORD}-byte CIFAR-10 records")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0]
    if labels.size and int(labels.max()) > 9:
        raise ValueError(f"{where}: label byte {int(labels.max())} is not a CIFAR-10 class (0-9)")
    return records[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar10(
    split: str = "train",
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    archive: str | os.PathLike[str] | None = None,
    download: bool = True,
    max_images: int | None = None,
    **download_kwargs: Any,
) -> ImageSplit:
    """CIFAR-10's ``"train"`` (50 000) or ``"test"`` (10 000) images as an :class:`ImageSplit` ``(N, 3, 32, 32)``.

    Reads ``archive`` when given, else the cached download (fetched first when ``download`` is True; extra
    keyword arguments go to :func:`download_cifar10`). ``max_images`` keeps the first images only.

    Raises:
        ValueError: an unknown ``split``, a bad ``max_images``, or an archive whose members are missing or not
            whole CIFAR-10 records (the message names the file).
        FileNotFoundError: no archive in the cache and ``download=False``.
    """
    if split not in _CIFAR_MEMBERS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images <= 0):
        raise ValueError(f"max_images must be a positive int or None, got {max_images!r}")
    if archive is None:
        if download:
            path = download_cifar10(cache_dir, **download_kwargs)
        else:
            path = _registry.cached_path(_CIFAR10, cache_dir)
            if not path.is_file():
                raise FileNotFoundError(f"CIFAR-10 is not in the cache ({path}); call download_cifar10() first")
    else:
        path = Path(archive)
    images, labels = [], []
    with tarfile.open(path, "r:gz") as tar:
        names = set(tar.getnames())
        for member in _CIFAR_MEMBERS[split]:
            if member not in names:
                raise ValueError(f"{path}: no member {member!r}; is this CIFAR-10's binary archive?")
            handle = tar.extractfile(member)
            if handle is None:
                raise ValueError(f"{path}: member {member!r} is not a regular file")
            x, y = _read_cifar_records(handle.read(), f"{path}:{member}")
            images.append(x)
            labels.append(y)
            if max_images is not None and sum(len(a) for a in labels) >= max_images:
                break
    x = torch.from_numpy(np.concatenate(images)[:max_images].astype(np.float32) / 255.0)
    y = torch.from_numpy(np.concatenate(labels)[:max_images].astype(np.int64))
    return ImageSplit(x, y)


def random_crop_flip(
    images: Tensor, padding: int, *, flip: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """Each image of ``(B, C, H, W)`` shifted by a random ``(dy, dx)`` in ``[-padding, padding]`` (zeros move in)
    and, if ``flip``, mirrored left-right with probability 1/2: the "pad, random crop, flip" augmentation.

    Vectorised over the batch; the random draws come from ``generator`` (PyTorch's global one by default), on the
    CPU, so the same seed gives the same batch on any device.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be a non-negative int, got {padding!r}")
    b, _, h, w = images.shape
    shifts = torch.randint(0, 2 * padding + 1, (b, 2), generator=generator)  # (B, 2): the crop's corner
    mirror = torch.rand(b, generator=generator) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    shifts, mirror = shifts.to(images.device), mirror.to(images.device)
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    rows = shifts[:, :1] + torch.arange(h, device=images.device)  # (B, H)
    cols = torch.arange(w, device=images.device).expand(b, w)  # (B, W)
    cols = torch.where(mirror[:, None], cols.flip(1), cols) + shifts[:, 1:]  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def _cifar_archive_bytes(split_records: dict[str, bytes]) -> bytes:
    """A ``.tar.gz`` laid out like CIFAR-10's binary archive, from raw record bytes per member (for tests)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in split_records.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
