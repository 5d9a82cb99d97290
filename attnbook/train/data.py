"""LightningDataModules for the book's training runs: the character corpus, the pointer tasks, symbols->frames.

**Resumable data order.** Every random choice of a training epoch comes from a generator seeded by
``(seed, epoch)`` (:class:`EpochSeededSampler`; Lightning calls its ``set_epoch`` at the start of each epoch),
and validation/test data are fixed by the seed alone. An interrupted run resumed from an end-of-epoch
checkpoint therefore sees exactly the batches the uninterrupted run saw, whatever happened before the
interruption -- the property ``tests/test_train.py`` checks by killing a real training process.

* :class:`CharDataModule` -- next-character prediction on a text corpus (chapter 06): the Python standard
  library's source (offline, the default), Tiny Shakespeare (downloaded once), or any UTF-8 file. Items are
  windows ``x (T,)``, ``y (T,)`` with ``y[t] = x[t + 1]``; an epoch is ``batches_per_epoch`` batches of
  windows starting at random offsets of the training split (the first ``1 - val_fraction - test_fraction``
  of the text; ``test_fraction=0`` gives a plain train/validation split).
* :class:`PointerDataModule` -- convex hulls or sorting (chapter 02); each batch is a fresh task draw,
  ``(inputs (B, n, d), targets (B, m), lengths (B,))``.
* :class:`SymbolFramesDataModule` -- the chapter 04 symbols->frames task; each batch is a fresh draw, the dict of
  :meth:`attnbook.data.seq2seq.SymbolFramesTask.sample`.
* :class:`ImageDataModule` -- image classification (chapter 13): scikit-learn's digits (offline) or CIFAR-10
  (downloaded once, checksummed); items ``(image (C, H, W), label)``, normalised per channel with the training
  split's statistics; the validation split is held out of the training split by the seed, the test split is the
  dataset's own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = [
    "EpochSeededSampler",
    "CharWindows",
    "GeneratedBatches",
    "CharDataModule",
    "PointerDataModule",
    "SymbolFramesDataModule",
    "ImageDataModule",
]

log = logging.getLogger(__name__)

_SEED_STRIDE = 1_000_003  # a prime: (seed, epoch) -> seed * stride + epoch never collides for epoch < stride


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochSeededSampler(Sampler[int]):
    """``num_samples`` indices in ``[0, population)`` drawn from a generator seeded by ``(seed, epoch)``.

    With ``replacement=False`` (needs ``num_samples <= population``) the indices are the first ``num_samples``
    of a random permutation. ``set_epoch`` (called by Lightning before each epoch) selects the epoch.
    Under data parallelism (``torch.distributed`` initialised) rank ``r`` of ``W`` takes draws ``r, r + W, ...``
    of the same sequence, ``num_samples // W`` of them, so the ranks share one epoch without overlap and take
    equally many steps; the engine turns off Lightning's own sampler replacement
    (``use_distributed_sampler=False``), which would freeze the per-epoch order.
    """

    def __init__(self, population: int, num_samples: int, seed: int = 0, replacement: bool = True) -> None:
        _check_positive("population", population)
        _check_positive("num_samples", num_samples)
        if not replacement and num_samples > population:
            raise ValueError(f"num_samples={num_samples} > population={population} without replacement")
        self.population, self.num_samples = population, num_samples
        self.seed, self.replacement, self.epoch = seed, replacement, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples // _rank_and_world()[1]

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + self.epoch)
        if self.replacement:
            indices = torch.randint(self.population, (self.num_samples,), generator=generator)
        else:
            indices = torch.randperm(self.population, generator=generator)[: self.num_samples]
        rank, world = _rank_and_world()
        return iter(indices[rank::world][: len(self)].tolist())


class CharWindows(Dataset):
    """Windows of a 1-D token tensor: item ``i`` is ``(data[s : s + T], data[s + 1 : s + T + 1])`` with ``s``
    the ``i``-th of ``starts`` (every offset when ``starts`` is None)."""

    def __init__(self, data: Tensor, block_size: int, starts: Tensor | None = None) -> None:
        if data.ndim != 1:
            raise ValueError(f"data must be 1-D, got shape {tuple(data.shape)}")
        if len(data) <= block_size:
            raise ValueError(f"a split of {len(data)} tokens is too short for block_size={block_size}")
        self.data, self.block_size, self.starts = data, block_size, starts

    def __len__(self) -> int:
        return len(self.data) - self.block_size if self.starts is None else len(self.starts)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        start = index if self.starts is None else int(self.starts[index])
        window = self.data[start : start + self.block_size + 1]  # (T + 1,)
        return window[:-1], window[1:]


class GeneratedBatches(Dataset):
    """Item ``k`` is a whole batch, ``make_batch(torch.Generator seeded with k)``; use with ``batch_size=None``."""

    def __init__(self, make_batch: Callable[[torch.Generator], Any], num_items: int = 2**31 - 1) -> None:
        self.make_batch, self.num_items = make_batch, num_items

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, index: int) -> Any:
        return self.make_batch(torch.Generator().manual_seed(int(index)))


def _fixed_seeds(seed: int, salt: int, count: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * _SEED_STRIDE + _SEED_STRIDE - 1 - salt)
    return torch.randint(2**31 - 1, (count,), generator=generator).tolist()


class _BookDataModule(pl.LightningDataModule):
    """Shared loaders: a seeded, resumable training sampler and fixed validation/test sets."""

    train_data: Dataset
    val_data: Dataset
    test_data: Dataset

    def __init__(self, batch_size: int, batches_per_epoch: int, val_batches: int, seed: int, num_workers: int):
        super().__init__()
        for name, value in (
            ("batch_size", batch_size),
            ("batches_per_epoch", batches_per_epoch),
            ("val_batches", val_batches),
        ):
            _check_positive(name, value)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be a non-negative int, got {num_workers!r}")
        self.batch_size, self.batches_per_epoch, self.val_batches = batch_size, batches_per_epoch, val_batches
        self.seed, self.num_workers = seed, num_workers

    def _loader(self, dataset: Dataset, sampler: Sampler[int] | None, batch_size: int | None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )


class CharDataModule(_BookDataModule):
    """Next-character prediction on a text corpus (see the module docstring).

    Args:
        corpus: ``"stdlib"`` (offline, default), ``"tiny_shakespeare"`` (downloaded once into the cache),
            ``"auto"`` (Tiny Shakespeare when it is cached or downloadable, else the stdlib), or a path to a
            UTF-8 text file.
        max_chars: keep the first ``max_chars`` characters of the corpus (``None``: all).
        block_size: context length ``T`` of a training window; must not exceed the model's.
        batch_size: windows per batch.
        batches_per_epoch: training batches per epoch (random windows; an "epoch" is a checkpoint period).
        val_batches: batches in the fixed validation (and test) set.
        val_fraction, test_fraction: tail fractions of the text held out for validation and test
            (``test_fraction=0``: a plain train/validation split, no test set).
        seed: fixes the windows of every epoch and of the held-out sets.
        num_workers: ``DataLoader`` worker processes.
    """

    def __init__(
        self,
        corpus: str = "stdlib",
        max_chars: int | None = 1_000_000,
        block_size: int = 64,
        batch_size: int = 12,
        batches_per_epoch: int = 200,
        val_batches: int = 10,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, batches_per_epoch, val_batches, seed, num_workers)
        _check_positive("block_size", block_size)
        if max_chars is not None:
            _check_positive("max_chars", max_chars)
        if not (0.0 < val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
            raise ValueError(
                f"val_fraction must be in (0, 1) and test_fraction in [0, 1) (0: no test split), with a sum below 1; "
                f"got val_fraction={val_fraction}, test_fraction={test_fraction}"
            )
        if corpus not in ("stdlib", "tiny_shakespeare", "auto") and not Path(corpus).expanduser().is_file():
            raise FileNotFoundError(
                f"corpus must be 'stdlib', 'tiny_shakespeare', 'auto' or the path of a text file; no file at {corpus!r}"
            )
        self.corpus, self.max_chars, self.block_size = corpus, max_chars, block_size
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.tokenizer: Any = None
        self.corpus_name = ""

    def load_text(self) -> str:
        """The corpus text, truncated to ``max_chars``."""
        from attnbook.data import text as text_data

        if self.corpus == "stdlib":
            self.corpus_name = "stdlib"
            return text_data.load_stdlib_corpus(self.max_chars)
        if self.corpus in ("tiny_shakespeare", "auto"):
            try:
                text = text_data.load_tiny_shakespeare(max_chars=self.max_chars)
                self.corpus_name = "tiny_shakespeare"
                return text
            except (ConnectionError, OSError, ValueError) as err:
                if self.corpus == "tiny_shakespeare":
                    raise
                log.warning("Tiny Shakespeare is unavailable (%s); training on the stdlib corpus instead", err)
                self.corpus_name = "stdlib"
                return text_data.load_stdlib_corpus(self.max_chars)
        self.corpus_name = str(self.corpus)
        text = Path(self.corpus).expanduser().read_text(encoding="utf-8")
        return text if self.max_chars is None else text[: self.max_chars]

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is not None:
            return
        from attnbook.data.text import CharTokenizer

        text = self.load_text()
        if len(text) < 20 * (self.block_size + 1):
            raise ValueError(
                f"the corpus {self.corpus!r} has {len(text)} characters, too few for block_size={self.block_size}"
            )
        self.tokenizer = CharTokenizer.from_text(text)
        data = self.tokenizer.encode(text)  # (N,)
        n_val, n_test = int(len(data) * self.val_fraction), int(len(data) * self.test_fraction)
        n_train = len(data) - n_val - n_test
        train, val, test = data[:n_train], data[n_train : n_train + n_val], data[n_train + n_val :]
        held_out = self.val_batches * self.batch_size
        self.train_data = CharWindows(train, self.block_size)
        self.val_data = CharWindows(val, self.block_size, self._fixed_starts(len(val), held_out, salt=1))
        self.test_data = (  # test_fraction=0: a plain train/validation split
            CharWindows(test, self.block_size, self._fixed_starts(len(test), held_out, salt=2))
            if self.test_fraction > 0
            else None
        )

    def _fixed_starts(self, length: int, count: int, salt: int) -> Tensor:
        if length <= self.block_size:
            raise ValueError(f"a held-out split of {length} characters is too short for block_size={self.block_size}")
        generator = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + _SEED_STRIDE - 1 - salt)
        return torch.randint(length - self.block_size, (count,), generator=generator)

    @property
    def vocab_size(self) -> int:
        if self.tokenizer is None:
            raise RuntimeError("CharDataModule.vocab_size is known after setup()")
        return int(self.tokenizer.vocab_size)

    def train_dataloader(self) -> DataLoader:
        sampler = EpochSeededSampler(
            len(self.train_data), self.batches_per_epoch * self.batch_size, seed=self.seed, replacement=True
        )
        return self._loader(self.train_data, sampler, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_data, None, self.batch_size)

    def test_dataloader(self) -> DataLoader:
        if self.test_data is None:
            raise ValueError("data.test_fraction=0: this CharDataModule has no test split (evaluate with validate)")
        return self._loader(self.test_data, None, self.batch_size)

    def predict_dataloader(self) -> DataLoader:
        """The first batch of the test set (of the validation set when ``test_fraction=0``); the GPT module
        continues a prefix of each window."""
        source = self.val_data if self.test_data is None else self.test_data
        first = CharWindows(source.data, self.block_size, source.starts[: self.batch_size])
        return self._loader(first, None, self.batch_size)


class _GeneratedDataModule(_BookDataModule):
    """Batches drawn fresh from a task: training batch seeds from :class:`EpochSeededSampler`, held-out fixed."""

    def _make_batch(self, generator: torch.Generator, split: str) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        self.train_data = GeneratedBatches(partial(self._make_batch, split="train"))
        self.val_data = GeneratedBatches(partial(self._make_batch, split="val"))
        self.test_data = GeneratedBatches(partial(self._make_batch, split="test"))

    def train_dataloader(self) -> DataLoader:
        sampler = EpochSeededSampler(2**31 - 1, self.batches_per_epoch, seed=self.seed, replacement=True)
        return self._loader(self.train_data, sampler, None)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_data, _FixedIndices(_fixed_seeds(self.seed, 1, self.val_batches)), None)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_data, _FixedIndices(_fixed_seeds(self.seed, 2, self.val_batches)), None)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_data, _FixedIndices(_fixed_seeds(self.seed, 2, 1)), None)


class _FixedIndices(Sampler[int]):
    def __init__(self, indices: list[int]) -> None:
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


class PointerDataModule(_GeneratedDataModule):
    """Pointer-network tasks of chapter 02: planar convex hulls (the default) or sorting.

    Args:
        task: ``"convex_hull"`` (inputs ``(B, n, 2)``, targets end with the end symbol) or ``"sorting"``
            (inputs ``(B, n, 1)``).
        num_points: ``n`` for training and validation.
        test_num_points: ``n`` for the test set (``None``: ``num_points``); larger than ``num_points`` measures
            generalisation to longer inputs than trained on.
        batch_size, batches_per_epoch, val_batches, seed, num_workers: as in :class:`CharDataModule`.
    """

    def __init__(
        self,
        task: Literal["convex_hull", "sorting"] = "convex_hull",
        num_points: int = 10,
        test_num_points: int | None = None,
        batch_size: int = 128,
        batches_per_epoch: int = 100,
        val_batches: int = 4,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, batches_per_epoch, val_batches, seed, num_workers)
        if task not in ("convex_hull", "sorting"):
            raise ValueError(f"task must be 'convex_hull' or 'sorting', got {task!r}")
        minimum = 3 if task == "convex_hull" else 1
        for name, value in (("num_points", num_points), ("test_num_points", test_num_points)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
                raise ValueError(f"{name} must be an int >= {minimum} for task {task!r}, got {value!r}")
        self.task, self.num_points = task, num_points
        self.test_num_points = num_points if test_num_points is None else test_num_points

    @property
    def input_dim(self) -> int:
        return 2 if self.task == "convex_hull" else 1

    @property
    def end_token(self) -> bool:
        return self.task == "convex_hull"

    def _make_batch(self, generator: torch.Generator, split: str) -> tuple[Tensor, Tensor, Tensor]:
        from attnbook.data.pointer import convex_hull_task, sorting_task

        n = self.test_num_points if split == "test" else self.num_points
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator))
        make = convex_hull_task if self.task == "convex_hull" else sorting_task
        inputs, targets = make(self.batch_size, n, seed=seed)
        return inputs, targets, torch.full((self.batch_size,), n, dtype=torch.long)


class SymbolFramesDataModule(_GeneratedDataModule):
    """The chapter 04 symbols->frames task (:class:`attnbook.data.seq2seq.SymbolFramesTask`).

    Args:
        num_symbols, frame_dim, min_len, max_len, max_duration: the task (see ``SymbolFramesTask``).
        task_seed: fixes the task's "voice" (spectra, durations); ``seed`` fixes which sequences are drawn.
        batch_size, batches_per_epoch, val_batches, seed, num_workers: as in :class:`CharDataModule`.
    """

    def __init__(
        self,
        num_symbols: int = 10,
        frame_dim: int = 8,
        min_len: int = 3,
        max_len: int = 8,
        max_duration: int = 3,
        task_seed: int = 0,
        batch_size: int = 64,
        batches_per_epoch: int = 50,
        val_batches: int = 4,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, batches_per_epoch, val_batches, seed, num_workers)
        from attnbook.data.seq2seq import SymbolFramesTask

        self.task = SymbolFramesTask(num_symbols, frame_dim, min_len, max_len, max_duration, seed=task_seed)

    @property
    def vocab_size(self) -> int:
        return int(self.task.vocab_size)

    @property
    def frame_dim(self) -> int:
        return int(self.task.frame_dim)

    def _make_batch(self, generator: torch.Generator, split: str) -> dict[str, Tensor]:
        return self.task.sample(self.batch_size, generator=generator)


class _Images(Dataset):
    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]


class ImageDataModule(_BookDataModule):
    """Image classification: ``"digits"`` (scikit-learn's 8x8 digits, offline) or ``"cifar10"`` (32x32, downloaded).

    Args:
        dataset: ``"digits"`` or ``"cifar10"`` (fetched once into the cache by
            :func:`attnbook.data.images.download_cifar10`, checked against its pinned SHA-256).
        val_fraction: the share of the training split held out (by ``seed``) for validation.
        max_train_images: keep only this many training images (after the validation split), for small runs.
        batch_size, seed, num_workers: as in :class:`CharDataModule`.
        batches_per_epoch: training batches per epoch, drawn without replacement within an epoch (at most the
            training split's size; one pass over it is ``len(train) // batch_size``).
        val_batches: batches of the validation and test splits to evaluate (``None``: all of them).
        cache_dir: where CIFAR-10 is cached (default: :func:`attnbook.data.registry.get_cache_dir`).

    Properties after ``setup``: ``image_size``, ``in_channels``, ``num_classes``, ``mean``/``std`` (per channel).
    The model augments training batches itself (:class:`ViTModule`'s ``augment_padding``), so the data order and
    the augmentation both follow the per-epoch seeds and a resumed run sees the same batches.
    """

    def __init__(
        self,
        dataset: Literal["digits", "cifar10"] = "digits",
        val_fraction: float = 0.1,
        max_train_images: int | None = None,
        batch_size: int = 64,
        batches_per_epoch: int = 20,
        val_batches: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(batch_size, batches_per_epoch, 1 if val_batches is None else val_batches, seed, num_workers)
        if dataset not in ("digits", "cifar10"):
            raise ValueError(f"data.dataset must be 'digits' or 'cifar10', got {dataset!r}")
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
            raise ValueError(f"data.val_fraction must be strictly between 0 and 1, got {val_fraction!r}")
        if max_train_images is not None:
            _check_positive("max_train_images", max_train_images)
        self.dataset, self.val_fraction, self.max_train_images = dataset, float(val_fraction), max_train_images
        self.val_batches_or_all, self.cache_dir = val_batches, cache_dir
        self.mean: Tensor | None = None
        self.std: Tensor | None = None

    def _load(self) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        from attnbook.data import images as img

        if self.dataset == "digits":
            train, test = img.load_digits_split(0.25, seed=0)  # the book's fixed digits test split
        else:
            train, test = img.load_cifar10("train", self.cache_dir), img.load_cifar10("test", self.cache_dir)
        return (train.images, train.labels), (test.images, test.labels)

    def setup(self, stage: str | None = None) -> None:
        if self.mean is not None:
            return
        (x, y), (x_test, y_test) = self._load()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.seed * _SEED_STRIDE + 7))
        n_val = max(1, round(self.val_fraction * len(y)))
        val_idx, train_idx = order[:n_val], order[n_val:]
        if self.max_train_images is not None:
            train_idx = train_idx[: self.max_train_images]
        if self.batches_per_epoch * self.batch_size > len(train_idx):
            raise ValueError(
                f"data.batches_per_epoch={self.batches_per_epoch} x data.batch_size={self.batch_size} exceeds the "
                f"{len(train_idx)} training images of {self.dataset!r} (an epoch draws without replacement)"
            )
        x_train = x[train_idx]
        self.mean = x_train.mean(dim=(0, 2, 3), keepdim=True)[0]  # (C, 1, 1)
        self.std = x_train.std(dim=(0, 2, 3), keepdim=True)[0].clamp_min(1e-6)
        norm = lambda images: (images - self.mean) / self.std  # noqa: E731
        self.num_classes = int(y.max()) + 1
        self.in_channels, self.image_size = int(x.shape[1]), int(x.shape[2])
        self.train_data = _Images(norm(x_train), y[train_idx])
        self.val_data = _Images(norm(x[val_idx]), y[val_idx])
        self.test_data = _Images(norm(x_test), y_test)

    def _held_out(self, data: Dataset) -> DataLoader:
        count = len(data)  # type: ignore[arg-type]
        if self.val_batches_or_all is not None:
            count = min(count, self.val_batches_or_all * self.batch_size)
        return self._loader(data, _FixedIndices(list(range(count))), self.batch_size)

    def train_dataloader(self) -> DataLoader:
        sampler = EpochSeededSampler(
            len(self.train_data), self.batches_per_epoch * self.batch_size, seed=self.seed, replacement=False
        )
        return self._loader(self.train_data, sampler, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._held_out(self.val_data)

    def test_dataloader(self) -> DataLoader:
        return self._held_out(self.test_data)

    def predict_dataloader(self) -> DataLoader:
        """The first batch of the test split."""
        return self._loader(self.test_data, _FixedIndices(list(range(self.batch_size))), self.batch_size)
