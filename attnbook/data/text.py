"""Text corpora for character language models (chapter 06) and a character tokenizer.

Two corpora, both plain text:

* :func:`load_stdlib_corpus` -- the Python standard library's own ``.py`` source files. Every Python
  installation ships them, so this real corpus is available offline on every machine; it is the book's
  default for quick runs. The files are read in a fixed order (sorted relative paths), so the same
  ``max_chars`` budget gives the same text on every run of the same Python version.
* :func:`load_tiny_shakespeare` -- Karpathy's Tiny Shakespeare, for full runs. It is downloaded once by
  :func:`download_tiny_shakespeare` into the book's cache directory (:func:`get_cache_dir`: ``$ATTNBOOK_CACHE``,
  else ``data/cache`` in a clone, else ``~/.cache/attnbook``), with the URL, size and SHA-256 of its entry in
  the dataset registry (:mod:`attnbook.data.registry`), and written atomically (a temporary file in the same
  directory, then :func:`os.replace`), so an interrupted or corrupted download never leaves a file under the
  final name and the next call simply starts again.

:class:`CharTokenizer` maps each distinct character to an id; its :meth:`~CharTokenizer.state_dict` is
a plain dict, so checkpoints can carry the tokenizer beside the weights.
"""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnbook.data import registry as _registry
from attnbook.data.registry import get_cache_dir

__all__ = [
    "TINY_SHAKESPEARE_URL",
    "TINY_SHAKESPEARE_SHA256",
    "TINY_SHAKESPEARE_FILENAME",
    "get_cache_dir",
    "stdlib_source_files",
    "load_stdlib_corpus",
    "CharTokenizer",
    "download_tiny_shakespeare",
    "load_tiny_shakespeare",
    "split_train_val",
    "sample_batch",
]

_TINY_SHAKESPEARE = _registry.get_dataset("tiny_shakespeare")
#: The source URL, the SHA-256 of the file and its cache file name, from the dataset registry.
TINY_SHAKESPEARE_URL = str(_TINY_SHAKESPEARE.url)
TINY_SHAKESPEARE_SHA256 = str(_TINY_SHAKESPEARE.sha256)
TINY_SHAKESPEARE_FILENAME = str(_TINY_SHAKESPEARE.filename)

#: Directories of the standard library left out of the corpus: installed third-party packages, caches,
#: and the test suites (which hold deliberately malformed and non-UTF-8 files).
_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})


def stdlib_source_files() -> list[Path]:
    """The standard library's ``.py`` files in a fixed order (sorted by their path relative to the stdlib root)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise FileNotFoundError(f"the Python standard library directory {root} does not exist")
    files: list[Path] = []
    for folder, subdirs, names in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in _EXCLUDED_DIRS]  # prune: never descend into them
        files.extend(Path(folder, n) for n in names if n.endswith(".py"))
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def load_stdlib_corpus(max_chars: int | None = None) -> str:
    """The Python standard library's source as one string, files joined by a blank line.

    Args:
        max_chars: keep only the first ``max_chars`` characters (the files are read in a fixed order, and
            reading stops once the budget is filled); ``None`` reads every file.

    Files that are not valid UTF-8 are skipped. Line endings are normalised to ``\\n``.
    """
    if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars <= 0):
        raise ValueError(f"max_chars must be a positive int or None, got {max_chars!r}")
    parts: list[str] = []
    total = 0
    for path in stdlib_source_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if not text.strip():
            continue
        piece = text if text.endswith("\n") else text + "\n"
        piece += "\n"
        parts.append(piece)
        total += len(piece)
        if max_chars is not None and total >= max_chars:
            break
    corpus = "".join(parts)
    return corpus if max_chars is None else corpus[:max_chars]


class CharTokenizer:
    """Character-level tokenizer: id ``i`` is the ``i``-th character of a sorted vocabulary.

    Build it from a text with :meth:`from_text`, or from a saved :meth:`state_dict`.
    """

    def __init__(self, chars: Iterable[str]) -> None:
        chars = list(chars)
        if not chars:
            raise ValueError("chars must hold at least one character")
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("chars must be single characters")
        if len(set(chars)) != len(chars):
            raise ValueError("chars must be distinct")
        self.chars: tuple[str, ...] = tuple(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """A tokenizer whose vocabulary is the sorted set of characters of ``text``."""
        if not isinstance(text, str) or not text:
            raise ValueError("text must be a non-empty string")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        """``str`` of length ``T`` to a ``(T,)`` long tensor of ids."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        try:
            return torch.tensor([self.stoi[c] for c in text], dtype=torch.long)
        except KeyError as err:
            unknown = sorted({c for c in text if c not in self.stoi})
            raise ValueError(f"text holds characters outside the vocabulary: {unknown[:10]!r}") from err

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """A 1-D tensor or list of ids back to a string."""
        if isinstance(ids, Tensor):
            if ids.ndim != 1:
                raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        bad = [i for i in ids if not isinstance(i, int) or not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids must be ints in [0, {self.vocab_size}), got {bad[:10]}")
        return "".join(self.chars[i] for i in ids)

    def state_dict(self) -> dict[str, Any]:
        """A plain dict that :meth:`from_state_dict` turns back into the same tokenizer."""
        return {"chars": "".join(self.chars)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> CharTokenizer:
        if not isinstance(state, dict) or not isinstance(state.get("chars"), str):
            raise ValueError("state must be a dict with a 'chars' string, as made by CharTokenizer.state_dict()")
        return cls(state["chars"])

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


def download_tiny_shakespeare(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    url: str | None = None,
    sha256: str | None = None,
    timeout: float = 30.0,
) -> Path:
    """Download Tiny Shakespeare once into the cache and return its path (:func:`attnbook.data.registry.download`).

    ``url`` and ``sha256`` replace the registry's (a mirror, or a local ``file://`` copy); a file already in the
    cache with the expected checksum is reused.

    Raises:
        ConnectionError: the URL cannot be reached (offline); the message says how to place the file by hand.
        ValueError: the downloaded bytes do not have the pinned size or SHA-256.
    """
    overrides = {k: v for k, v in (("url", url), ("sha256", sha256)) if v is not None}
    return _registry.download(_TINY_SHAKESPEARE, cache_dir, timeout=timeout, **overrides)


def load_tiny_shakespeare(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    max_chars: int | None = None,
    **download_kwargs: Any,
) -> str:
    """Tiny Shakespeare as a string, downloading it first if needed (and allowed by ``download``)."""
    if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars <= 0):
        raise ValueError(f"max_chars must be a positive int or None, got {max_chars!r}")
    if download:
        target = download_tiny_shakespeare(cache_dir, **download_kwargs)
    else:
        target = _registry.cached_path(_TINY_SHAKESPEARE, cache_dir)
        if not target.is_file():
            raise FileNotFoundError(
                f"{target} does not exist and download=False. {_registry.manual_hint(_TINY_SHAKESPEARE, target)}"
            )
    text = target.read_text(encoding="utf-8")
    return text if max_chars is None else text[:max_chars]


def split_train_val(data: Tensor, val_fraction: float = 0.1, pieces: int = 1) -> tuple[Tensor, Tensor]:
    """Split a 1-D token tensor into training and validation parts.

    The data is cut into ``pieces`` contiguous pieces of (nearly) equal length; the first ``1 - val_fraction``
    of each piece goes to training and the rest to validation. ``pieces=1`` is the usual "last 10 % for
    validation"; more pieces spread the validation text over the whole corpus (for the stdlib corpus, over
    many source files rather than the tail of one).
    """
    if not isinstance(data, Tensor) or data.ndim != 1:
        raise ValueError(f"data must be a 1-D tensor, got {getattr(data, 'shape', type(data).__name__)}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if isinstance(pieces, bool) or not isinstance(pieces, int) or not 1 <= pieces <= len(data):
        raise ValueError(f"pieces must be an int in [1, len(data)={len(data)}], got {pieces!r}")
    train, val = [], []
    for piece in torch.tensor_split(data, pieces):
        n_train = int(round(len(piece) * (1.0 - val_fraction)))
        train.append(piece[:n_train])
        val.append(piece[n_train:])
    return torch.cat(train), torch.cat(val)


def sample_batch(
    data: Tensor, block_size: int, batch_size: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Random windows for next-token training: ``x (B, T)`` and ``y (B, T)`` with ``y[:, t] = x[:, t + 1]``."""
    if not isinstance(data, Tensor) or data.ndim != 1:
        raise ValueError(f"data must be a 1-D tensor, got {getattr(data, 'shape', type(data).__name__)}")
    if block_size <= 0 or batch_size <= 0:
        raise ValueError(f"block_size and batch_size must be positive, got {block_size} and {batch_size}")
    if len(data) <= block_size:
        raise ValueError(f"data of length {len(data)} is too short for block_size={block_size}")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    offsets = torch.arange(block_size + 1)  # (T + 1,)
    windows = data[starts[:, None] + offsets]  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]
