"""The registry of every dataset the book uses, the download cache, and the one downloader.

The registry is ``data/registry.yaml`` in the repository; the package ships an identical copy as package data
(``attnbook/data/registry.yaml``), so an ``attnbook`` installed from a wheel knows every dataset without the
repository. Each entry (a :class:`Dataset`) names its source, licence, size, the chapters that use it, and,
for downloads, the URL and pinned SHA-256.

:func:`get_cache_dir` is where downloads (and the chapters' cached training runs) go:

1. ``$ATTNBOOK_CACHE`` when set;
2. else ``data/cache/`` of the repository when ``attnbook`` is imported from a clone (git ignores it);
3. else ``~/.cache/attnbook`` (an installed package).

:func:`download` fetches a ``kind: download`` entry once: it streams the bytes into a temporary file beside
the target, stops as soon as more bytes arrive than the registry says, checks the SHA-256, and only then moves
the file into place with :func:`os.replace` (atomic on one file system). A mismatch or an interrupted
download removes the temporary file and leaves nothing under the final name; the next call starts again.
Offline, it raises :class:`ConnectionError` saying where to put the file by hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Dataset",
    "KINDS",
    "all_datasets",
    "parse_registry",
    "get_dataset",
    "repository_root",
    "get_cache_dir",
    "cached_path",
    "download",
]

#: ``download``: fetched from a URL and checked; ``installed``: shipped by an installed package;
#: ``generated``: drawn in memory by attnbook's code from a seed.
KINDS = ("download", "installed", "generated")
_CHUNK = 1 << 16
_FIELDS = {
    "title",
    "kind",
    "url",
    "sha256",
    "bytes",
    "filename",
    "samples",
    "licence",
    "description",
    "loaders",
    "chapters",
}


@dataclass(frozen=True)
class Dataset:
    """One entry of the registry. ``url``, ``sha256``, ``bytes`` and ``filename`` are set exactly for downloads."""

    name: str
    title: str
    kind: str
    licence: str
    description: str
    loaders: tuple[str, ...]
    chapters: tuple[int, ...]
    url: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    filename: str | None = None
    samples: int | None = None


def _parse_entry(name: str, raw: Any, where: str) -> Dataset:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: dataset {name!r} must be a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise ValueError(f"{where}: dataset {name!r} has unknown fields {sorted(unknown)}")
    missing = [f for f in ("title", "kind", "licence", "description", "loaders", "chapters") if not raw.get(f)]
    if missing:
        raise ValueError(f"{where}: dataset {name!r} lacks {missing}")
    if raw["kind"] not in KINDS:
        raise ValueError(f"{where}: dataset {name!r} has kind {raw['kind']!r}; expected one of {KINDS}")
    chapters = raw["chapters"]
    if not isinstance(chapters, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in chapters):
        raise ValueError(f"{where}: dataset {name!r}: chapters must be a list of chapter numbers, got {chapters!r}")
    download_fields = ("url", "sha256", "bytes", "filename")
    if raw["kind"] == "download":
        absent = [f for f in download_fields if raw.get(f) is None]
        if absent:
            raise ValueError(f"{where}: download {name!r} lacks {absent}")
        if not re.fullmatch(r"[0-9a-f]{64}", str(raw["sha256"])):
            raise ValueError(f"{where}: download {name!r}: sha256 must be 64 lowercase hex digits")
        if not isinstance(raw["bytes"], int) or raw["bytes"] <= 0:
            raise ValueError(f"{where}: download {name!r}: bytes must be a positive int, got {raw['bytes']!r}")
    else:
        extra = [f for f in download_fields if raw.get(f) is not None]
        if extra:
            raise ValueError(f"{where}: {raw['kind']} dataset {name!r} must not have {extra} (only downloads do)")
    return Dataset(
        name=name,
        title=str(raw["title"]),
        kind=raw["kind"],
        licence=" ".join(str(raw["licence"]).split()),
        description=" ".join(str(raw["description"]).split()),
        loaders=tuple(raw["loaders"]),
        chapters=tuple(chapters),
        url=raw.get("url"),
        sha256=raw.get("sha256"),
        bytes=raw.get("bytes"),
        filename=raw.get("filename"),
        samples=raw.get("samples"),
    )


def parse_registry(text: str, where: str = "registry.yaml") -> dict[str, Dataset]:
    """Parse and validate the YAML ``text`` of a registry into ``{name: Dataset}``."""
    data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict) or not data["datasets"]:
        raise ValueError(f"{where}: expected a mapping with a non-empty 'datasets' mapping")
    return {name: _parse_entry(name, raw, where) for name, raw in data["datasets"].items()}


@cache
def all_datasets() -> dict[str, Dataset]:
    """Every dataset of the book, ``{name: Dataset}``, from the registry shipped inside the package."""
    text = resources.files("attnbook.data").joinpath("registry.yaml").read_text(encoding="utf-8")
    return parse_registry(text, "attnbook/data/registry.yaml")


def get_dataset(name: str) -> Dataset:
    """The registry entry called ``name``; a ``ValueError`` lists the known names otherwise."""
    entries = all_datasets()
    if name not in entries:
        raise ValueError(f"no dataset {name!r} in the registry; known: {sorted(entries)}")
    return entries[name]


def repository_root() -> Path | None:
    """The repository that ``attnbook`` is imported from, or ``None`` for an installed package."""
    root = Path(__file__).resolve().parents[2]
    markers = (root / "pyproject.toml", root / "data" / "registry.yaml", root / "attnbook" / "__init__.py")
    return root if all(m.is_file() for m in markers) else None


def get_cache_dir(create: bool = True) -> Path:
    """The book's cache: ``$ATTNBOOK_CACHE``; else ``data/cache`` in a clone; else ``~/.cache/attnbook``."""
    env = os.environ.get("ATTNBOOK_CACHE", "").strip()
    if env:
        path = Path(env).expanduser()
    else:
        root = repository_root()
        path = root / "data" / "cache" if root is not None else Path.home() / ".cache" / "attnbook"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def _download_entry(name: str | Dataset) -> Dataset:
    entry = get_dataset(name) if isinstance(name, str) else name
    if not isinstance(entry, Dataset):
        raise TypeError(f"name must be a dataset name or a Dataset, got {type(name).__name__}")
    if entry.kind != "download":
        raise ValueError(f"dataset {entry.name!r} is {entry.kind}, not a download: use {', '.join(entry.loaders)}")
    return entry


def cached_path(name: str | Dataset, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the download ``name`` lives in the cache (whether or not it is there yet)."""
    entry = _download_entry(name)
    folder = Path(cache_dir).expanduser() if cache_dir is not None else get_cache_dir(create=False)
    return folder / str(entry.filename)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _urlopen(url: str, timeout: float):  # the one network call; tests replace it
    return urllib.request.urlopen(url, timeout=timeout)


def manual_hint(entry: Dataset, target: Path) -> str:
    """How to place a download by hand (for offline machines)."""
    return (
        f"Download {entry.url} on a machine with internet access and place it at {target} "
        f"(or point ATTNBOOK_CACHE at the folder holding {target.name}); its SHA-256 must be {entry.sha256}."
    )


def download(
    name: str | Dataset,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    timeout: float = 30.0,
    **overrides: Any,
) -> Path:
    """Download the registry entry ``name`` once into the cache and return its path.

    A file already in the cache with the pinned checksum is reused; a file with another checksum is replaced.
    ``overrides`` replace fields of the entry (``url=``, ``sha256=``, ``bytes=``: e.g. a mirror); overriding
    ``sha256`` without ``bytes`` drops the size check.

    Raises:
        ConnectionError: the URL cannot be reached (offline); the message says how to place the file by hand.
        ValueError: the bytes do not match the pinned size or SHA-256 (nothing is kept).
    """
    entry = _download_entry(name)
    if overrides:
        unknown = set(overrides) - {"url", "sha256", "bytes"}
        if unknown:
            raise TypeError(f"download() got unexpected overrides {sorted(unknown)}; allowed: url, sha256, bytes")
        if "sha256" in overrides and "bytes" not in overrides:
            overrides["bytes"] = None
        entry = dataclasses.replace(entry, **overrides)
    target = cached_path(entry, cache_dir if cache_dir is not None else get_cache_dir())
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_file():
        if _sha256(target) == entry.sha256:
            return target
        target.unlink()  # a stale or altered copy: fetch it again
    tmp_fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(tmp_fd, "wb") as out:
            try:
                response = _urlopen(str(entry.url), timeout)
            except (urllib.error.URLError, OSError) as err:
                raise ConnectionError(
                    f"could not download {entry.title} from {entry.url} ({err}). {manual_hint(entry, target)}"
                ) from err
            with response:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    size += len(chunk)
                    if entry.bytes is not None and size > entry.bytes:
                        raise ValueError(
                            f"{entry.title} from {entry.url} is larger than the registry's {entry.bytes} bytes; "
                            f"the download was stopped and discarded. {manual_hint(entry, target)}"
                        )
                    digest.update(chunk)
                    out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != entry.sha256:
            raise ValueError(
                f"{entry.title} from {entry.url} has SHA-256 {got} ({size} bytes), expected {entry.sha256}; "
                f"the file was discarded. {manual_hint(entry, target)}"
            )
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
