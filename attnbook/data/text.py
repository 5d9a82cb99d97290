"""Text corpora for character language models (chapter 06) and a character tokenizer.

Two corpora, both plain text:

* :func:`load_stdlib_corpus` -- the Python standard library's own ``.py`` source files. Every Python
  installation ships them, so this real corpus is available offline on every machine; it is the book's
  default for quick runs. The files are read in a fixed order (sorted relative paths), so the same
  ``max_chars`` budget gives the same text on every run of the same Python version.
* :func:`load_tiny_shakespeare` -- Karpathy's Tiny Shakespeare (1,115,394 bytes), for full runs. It is
  downloaded once by :func:`download_tiny_shakespeare` into the book's cache directory
  (:func:`get_cache_dir`: ``$ATTNBOOK_CACHE`` or ``~/.cache/attnbook``), checked against a pinned SHA-256, and
  written atomically (a temporary file in the same directory, then :func:`os.replace`), so an interrupted
  or corrupted download never leaves a file under the final name and the next call simply starts again.

:class:`CharTokenizer` maps each distinct character to an id; its :meth:`~CharTokenizer.state_dict` is
a plain dict, so checkpoints can carry the tokenizer beside the weights.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

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

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
#: SHA-256 of the 1,115,394-byte file, as pinned by TensorFlow Datasets'
#: ``tensorflow_datasets/url_checksums/tiny_shakespeare.txt`` for this same URL.
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TINY_SHAKESPEARE_FILENAME = "tiny_shakespeare.txt"

#: Directories of the standard library left out of the corpus: installed third-party packages, caches,
#: and the test suites (which hold deliberately malformed and non-UTF-8 files).
_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})
_CHUNK = 1 << 16


def get_cache_dir(create: bool = True) -> Path:
    """The book's download cache: ``$ATTNBOOK_CACHE`` if set, else ``~/.cache/attnbook``."""
    env = os.environ.get("ATTNBOOK_CACHE", "").strip()
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "attnbook"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _urlopen(url: str, timeout: float):  # the one network call; tests replace it
    return urllib.request.urlopen(url, timeout=timeout)


def _manual_hint(target: Path, url: str, sha256: str) -> str:
    return (
        f"Download {url} on a machine with internet access and place it at {target} "
        f"(or point ATTNBOOK_CACHE at the folder holding {target.name}); its SHA-256 must be {sha256}."
    )


def download_tiny_shakespeare(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    url: str = TINY_SHAKESPEARE_URL,
    sha256: str = TINY_SHAKESPEARE_SHA256,
    timeout: float = 30.0,
) -> Path:
    """Download Tiny Shakespeare once into the cache and return its path.

    A file already in the cache with the pinned checksum is reused. Otherwise the file is streamed into a
    temporary file beside the target, its SHA-256 is checked, and only then is it moved into place with
    :func:`os.replace` (atomic on one file system). A checksum mismatch or an interrupted download removes
    the temporary file and leaves nothing under the final name.

    Raises:
        ConnectionError: the URL cannot be reached (offline); the message says how to place the file by hand.
        ValueError: the downloaded bytes do not have the pinned SHA-256.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else get_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / TINY_SHAKESPEARE_FILENAME
    if target.is_file():
        if _sha256(target) == sha256:
            return target
        target.unlink()  # a stale or altered copy: fetch it again
    tmp_fd, tmp_name = tempfile.mkstemp(prefix=f".{TINY_SHAKESPEARE_FILENAME}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(tmp_fd, "wb") as out:
            try:
                response = _urlopen(url, timeout)
            except (urllib.error.URLError, OSError) as err:
                raise ConnectionError(
                    f"could not download Tiny Shakespeare from {url} ({err}). {_manual_hint(target, url, sha256)}"
                ) from err
            with response:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != sha256:
            raise ValueError(
                f"Tiny Shakespeare from {url} has SHA-256 {got}, expected {sha256}; the file was discarded. "
                f"{_manual_hint(target, url, sha256)}"
            )
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


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
    folder = Path(cache_dir).expanduser() if cache_dir is not None else get_cache_dir()
    target = folder / TINY_SHAKESPEARE_FILENAME
    if download:
        target = download_tiny_shakespeare(folder, **download_kwargs)
    elif not target.is_file():
        url = download_kwargs.get("url", TINY_SHAKESPEARE_URL)
        sha = download_kwargs.get("sha256", TINY_SHAKESPEARE_SHA256)
        raise FileNotFoundError(f"{target} does not exist and download=False. {_manual_hint(target, url, sha)}")
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
