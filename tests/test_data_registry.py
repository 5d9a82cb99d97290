"""attnbook.data.registry: the dataset registry (data/registry.yaml and its packaged copy), the cache folder, and
the downloader, tested on local files only (file:// URLs and a replaced urlopen; never the network)."""

from __future__ import annotations

import hashlib
import importlib
import io
import re
import shutil
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import yaml

import attnbook.data
from attnbook.data import registry as reg
from attnbook.data.registry import Dataset, all_datasets, download, get_cache_dir, get_dataset, parse_registry

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = b"To be, or not to be, that is the question:\n" * 40
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _resolve(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _syllabus_chapters() -> dict[int, Path]:
    """Chapter number -> its file path (which exists once the chapter is written), from data/syllabus.yaml."""
    data = yaml.safe_load((ROOT / "data" / "syllabus.yaml").read_text(encoding="utf-8"))
    return {c["number"]: ROOT / "chapters" / f"{c['number']:02d}-{c['slug']}.md" for c in data["chapters"]}


# --- the registry -----------------------------------------------------------------------------------------------


def test_packaged_registry_is_the_repository_registry():
    packaged = ROOT / "attnbook" / "data" / "registry.yaml"
    assert packaged.read_bytes() == (ROOT / "data" / "registry.yaml").read_bytes(), (
        "attnbook/data/registry.yaml differs from data/registry.yaml: run cp data/registry.yaml attnbook/data/"
    )


def test_every_entry_is_complete_and_its_loaders_exist():
    entries = all_datasets()
    assert {"tiny_shakespeare", "python_stdlib", "sklearn_digits"} <= set(entries)
    assert {e.kind for e in entries.values()} == {"download", "installed", "generated"}
    chapters = _syllabus_chapters()
    for name, entry in entries.items():
        assert entry.name == name and entry.licence and entry.description
        for loader in entry.loaders:
            assert callable(_resolve(loader)), f"{name}: loader {loader} is not callable"
        assert entry.chapters and set(entry.chapters) <= set(chapters), f"{name}: chapters {entry.chapters}"
        if entry.kind == "download":
            assert entry.url.startswith("https://") and re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
        else:
            assert entry.url is entry.sha256 is entry.bytes is entry.filename is None


def test_registered_chapters_are_the_chapters_that_call_the_loaders():
    """A written chapter calls one of a dataset's loaders if and only if the registry lists it for that dataset."""
    for number, md in _syllabus_chapters().items():
        if not md.is_file():
            continue
        text = md.read_text(encoding="utf-8")
        for entry in all_datasets().values():
            calls = any(re.search(rf"\b{re.escape(loader.rpartition('.')[2])}\b", text) for loader in entry.loaders)
            if entry.name == "python_stdlib":  # chapter 06 trains on it through the gpt-quick preset
                calls = calls or "gpt-quick" in text
            listed = number in entry.chapters
            assert calls == listed, (
                f"{md.name} {'uses' if calls else 'does not use'} {entry.name} ({', '.join(entry.loaders)}) but "
                f"data/registry.yaml {'lists' if listed else 'does not list'} chapter {number} for it"
            )


def test_every_data_module_has_a_registered_dataset():
    modules = {p.stem for p in (ROOT / "attnbook" / "data").glob("*.py")} - {"__init__", "registry"}
    registered = {
        loader.split(".")[2]
        for e in all_datasets().values()
        for loader in e.loaders
        if loader.startswith("attnbook.data.")
    }
    assert modules <= registered, f"attnbook.data modules with no dataset in data/registry.yaml: {modules - registered}"


def test_digits_entry_matches_scikit_learn():
    entry = get_dataset("sklearn_digits")
    digits = _resolve(entry.loaders[0])()
    assert entry.samples == len(digits.images) and digits.images.shape[1:] == (8, 8)


def test_lookup_and_validation_errors():
    with pytest.raises(ValueError, match="no dataset 'cifar'.*tiny_shakespeare"):
        get_dataset("cifar")
    good = {
        "title": "T",
        "kind": "download",
        "url": "https://x/y",
        "sha256": "0" * 64,
        "bytes": 3,
        "filename": "y",
        "licence": "L",
        "description": "D",
        "loaders": ["m.f"],
        "chapters": [1],
    }
    assert parse_registry(yaml.safe_dump({"datasets": {"d": good}}))["d"].bytes == 3
    for change, message in [
        ({"sha256": None}, r"lacks \['sha256'\]"),
        ({"sha256": "abc"}, "64 lowercase hex"),
        ({"bytes": 0}, "bytes must be a positive int"),
        ({"kind": "generated"}, "must not have"),
        ({"kind": "magic"}, "kind 'magic'"),
        ({"chapters": ["six"]}, "chapters must be a list"),
        ({"size": 3}, "unknown fields"),
        ({"licence": ""}, r"lacks \['licence'\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_registry(yaml.safe_dump({"datasets": {"d": {**good, **change}}}))
    with pytest.raises(ValueError, match="datasets"):
        parse_registry("datasets: {}")


# --- the cache folder --------------------------------------------------------------------------------------------


def test_cache_folder_is_data_cache_in_a_clone_else_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNBOOK_CACHE", str(tmp_path / "env"))
    assert get_cache_dir() == tmp_path / "env" and (tmp_path / "env").is_dir()
    monkeypatch.delenv("ATTNBOOK_CACHE")
    assert reg.repository_root() == ROOT
    assert get_cache_dir(create=False) == ROOT / "data" / "cache"
    monkeypatch.setattr(reg, "repository_root", lambda: None)  # as when installed from a wheel
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert get_cache_dir(create=False) == tmp_path / "home" / ".cache" / "attnbook"


def test_the_clone_cache_is_ignored_by_git():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", "data/cache/tiny_shakespeare.txt"], cwd=ROOT, check=False)
    kept = subprocess.run(["git", "check-ignore", "-q", "data/registry.yaml"], cwd=ROOT, check=False)
    assert ignored.returncode == 0 and kept.returncode == 1


# --- the downloader ----------------------------------------------------------------------------------------------


def _entry(tmp_path: Path, payload: bytes, **changes) -> Dataset:
    src = tmp_path / "remote" / "file.txt"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(payload)
    fields = dict(
        name="toy",
        title="Toy text",
        kind="download",
        licence="L",
        description="D",
        loaders=("m.f",),
        chapters=(1,),
        url=src.as_uri(),
        sha256=PAYLOAD_SHA,
        bytes=len(PAYLOAD),
        filename="toy.txt",
    )
    return Dataset(**{**fields, **changes})


def test_download_writes_once_and_atomically(tmp_path, monkeypatch):
    entry = _entry(tmp_path, PAYLOAD)
    cache = tmp_path / "cache"
    moves = []
    real_replace = reg.os.replace
    monkeypatch.setattr(reg.os, "replace", lambda a, b: (moves.append((Path(a), Path(b))), real_replace(a, b)))
    path = download(entry, cache)
    assert path == cache / "toy.txt" and path.read_bytes() == PAYLOAD
    assert len(moves) == 1 and moves[0][1] == path and moves[0][0].parent == cache and moves[0][0].name != "toy.txt"
    assert [p.name for p in cache.iterdir()] == ["toy.txt"]
    monkeypatch.setattr(reg, "_urlopen", lambda *a: pytest.fail("the cached copy should be reused"))
    assert download(entry, cache) == path


@pytest.mark.parametrize(
    ("payload", "message"),
    [(PAYLOAD + b"!", "larger than the registry's"), (PAYLOAD[:-1] + b"?", "has SHA-256")],
    ids=["too-long", "altered"],
)
def test_download_rejects_wrong_bytes_and_keeps_nothing(tmp_path, payload, message):
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match=message) as info:
        download(_entry(tmp_path, payload), cache)
    assert "ATTNBOOK_CACHE" in str(info.value)
    assert list(cache.iterdir()) == []


def test_download_replaces_a_corrupt_cached_copy(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "toy.txt").write_bytes(b"half a fi")
    assert download(_entry(tmp_path, PAYLOAD), cache).read_bytes() == PAYLOAD


def test_interrupted_download_keeps_nothing(tmp_path, monkeypatch):
    class Broken(io.BytesIO):
        def read(self, n=-1):
            if self.tell() > 100:
                raise ConnectionResetError("connection lost")
            return super().read(min(n, 64))

    monkeypatch.setattr(reg, "_urlopen", lambda url, timeout: Broken(PAYLOAD))
    cache = tmp_path / "cache"
    with pytest.raises(ConnectionResetError):
        download(_entry(tmp_path, PAYLOAD), cache)
    assert list(cache.iterdir()) == []


def test_offline_error_says_what_to_do(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(reg, "_urlopen", offline)
    cache = tmp_path / "cache"
    entry = get_dataset("tiny_shakespeare")
    with pytest.raises(ConnectionError) as info:
        download("tiny_shakespeare", cache)
    message = str(info.value)
    for part in (entry.url, entry.sha256, str(cache / entry.filename), "ATTNBOOK_CACHE", "Temporary failure"):
        assert part in message
    assert list(cache.iterdir()) == []


def test_download_overrides_and_argument_errors(tmp_path):
    src = tmp_path / "mirror.txt"
    src.write_bytes(PAYLOAD)
    path = download("tiny_shakespeare", tmp_path / "c", url=src.as_uri(), sha256=PAYLOAD_SHA)  # size check dropped
    assert path.name == get_dataset("tiny_shakespeare").filename and path.read_bytes() == PAYLOAD
    with pytest.raises(ValueError, match="generated, not a download"):
        download("kernel_regression", tmp_path / "c")
    with pytest.raises(TypeError, match="unexpected overrides"):
        download("tiny_shakespeare", tmp_path / "c", filename="x")
    with pytest.raises(TypeError, match="dataset name or a Dataset"):
        download(3, tmp_path / "c")  # type: ignore[arg-type]


def test_package_exports():
    for name in ("all_datasets", "get_dataset", "download", "get_cache_dir", "Dataset"):
        assert getattr(attnbook.data, name) is getattr(reg, name)
    assert attnbook.data.registry is sys.modules["attnbook.data.registry"]
