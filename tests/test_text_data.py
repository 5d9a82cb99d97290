"""attnbook.data.text: the stdlib corpus, the character tokenizer, and the Tiny Shakespeare downloader (offline).

The generic downloader and the cache folder are tested in tests/test_data_registry.py."""

from __future__ import annotations

import hashlib
import io
import sysconfig
import urllib.error
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.data import registry as registry_module
from attnbook.data import text as text_module
from attnbook.data.text import (
    TINY_SHAKESPEARE_FILENAME,
    CharTokenizer,
    download_tiny_shakespeare,
    get_cache_dir,
    load_stdlib_corpus,
    load_tiny_shakespeare,
    sample_batch,
    split_train_val,
    stdlib_source_files,
)

PAYLOAD = b"First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_stdlib_corpus_is_deterministic_and_python():
    a = load_stdlib_corpus(20_000)
    b = load_stdlib_corpus(20_000)
    assert a == b and len(a) == 20_000
    assert load_stdlib_corpus(50_000).startswith(a)
    assert "def " in a and "import " in a
    files = stdlib_source_files()
    root = Path(sysconfig.get_paths()["stdlib"])
    rel = [p.relative_to(root).as_posix() for p in files]
    assert rel == sorted(rel) and len(rel) > 100 and "json/decoder.py" in rel
    assert not any("site-packages" in p.parts for p in files)
    with pytest.raises(ValueError, match="max_chars"):
        load_stdlib_corpus(0)


@settings(max_examples=30, deadline=None)
@given(st.text(min_size=1, max_size=50))
def test_tokenizer_round_trip(s):
    tok = CharTokenizer.from_text(s)
    ids = tok.encode(s)
    assert ids.dtype == torch.long and ids.shape == (len(s),)
    assert tok.decode(ids) == s and tok.decode(ids.tolist()) == s
    again = CharTokenizer.from_state_dict(tok.state_dict())
    assert again.chars == tok.chars and again.vocab_size == len(set(s))


def test_tokenizer_errors():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.encode("abz")
    with pytest.raises(TypeError, match="text"):
        tok.encode(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ids"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match="ids"):
        tok.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="text"):
        CharTokenizer.from_text("")
    with pytest.raises(ValueError, match="state"):
        CharTokenizer.from_state_dict({"vocab": "abc"})


def test_split_and_batches():
    data = torch.arange(100)
    train, val = split_train_val(data, 0.1)
    assert len(train) == 90 and torch.equal(val, torch.arange(90, 100))
    x, y = sample_batch(data, 8, 5, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 8)
    assert torch.equal(y, x + 1)  # consecutive windows of arange
    with pytest.raises(ValueError, match="block_size"):
        sample_batch(data[:5], 8, 2)
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_val(data, 1.5)


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNBOOK_CACHE", str(tmp_path / "c"))
    assert get_cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()


def test_tiny_shakespeare_comes_from_the_registry():
    entry = registry_module.get_dataset("tiny_shakespeare")
    assert (text_module.TINY_SHAKESPEARE_URL, text_module.TINY_SHAKESPEARE_SHA256) == (entry.url, entry.sha256)
    assert TINY_SHAKESPEARE_FILENAME == entry.filename


def _source(tmp_path: Path, payload: bytes) -> str:
    src = tmp_path / "remote" / "input.txt"
    src.parent.mkdir()
    src.write_bytes(payload)
    return src.as_uri()  # a file:// URL: urllib reads it without any network


def test_download_success_writes_atomically(tmp_path, monkeypatch):
    url = _source(tmp_path, PAYLOAD)
    cache = tmp_path / "cache"
    replaced = []
    real_replace = registry_module.os.replace
    monkeypatch.setattr(
        registry_module.os, "replace", lambda a, b: (replaced.append((Path(a), Path(b))), real_replace(a, b))
    )
    path = download_tiny_shakespeare(cache, url=url, sha256=PAYLOAD_SHA)
    assert path == cache / TINY_SHAKESPEARE_FILENAME and path.read_bytes() == PAYLOAD
    assert len(replaced) == 1 and replaced[0][1] == path and replaced[0][0].parent == cache
    assert sorted(p.name for p in cache.iterdir()) == [TINY_SHAKESPEARE_FILENAME]  # no temp file left
    # Second call: the cached copy is reused, nothing is opened.
    monkeypatch.setattr(registry_module, "_urlopen", lambda *a: pytest.fail("should not download again"))
    assert download_tiny_shakespeare(cache, url=url, sha256=PAYLOAD_SHA) == path
    assert load_tiny_shakespeare(cache, sha256=PAYLOAD_SHA, max_chars=14) == "First Citizen:"


def test_checksum_mismatch_raises_and_leaves_nothing(tmp_path):
    url = _source(tmp_path, PAYLOAD + b"tampered")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="SHA-256"):
        download_tiny_shakespeare(cache, url=url, sha256=PAYLOAD_SHA)
    assert list(cache.iterdir()) == []


def test_corrupt_cached_file_is_replaced(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / TINY_SHAKESPEARE_FILENAME).write_bytes(b"half a file")
    path = download_tiny_shakespeare(cache, url=_source(tmp_path, PAYLOAD), sha256=PAYLOAD_SHA)
    assert path.read_bytes() == PAYLOAD


def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch):
    class Broken(io.BytesIO):
        def read(self, n=-1):
            if self.tell() > 100:
                raise ConnectionResetError("connection lost")
            return super().read(min(n, 64))

    monkeypatch.setattr(registry_module, "_urlopen", lambda url, timeout: Broken(PAYLOAD))
    cache = tmp_path / "cache"
    with pytest.raises(ConnectionResetError):
        download_tiny_shakespeare(cache, sha256=PAYLOAD_SHA)
    assert list(cache.iterdir()) == []


def test_offline_error_names_url_and_manual_placement(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(registry_module, "_urlopen", offline)
    cache = tmp_path / "cache"
    with pytest.raises(ConnectionError) as info:
        download_tiny_shakespeare(cache)
    message = str(info.value)
    assert text_module.TINY_SHAKESPEARE_URL in message
    assert str(cache / TINY_SHAKESPEARE_FILENAME) in message and "ATTNBOOK_CACHE" in message
    assert text_module.TINY_SHAKESPEARE_SHA256 in message
    assert list(cache.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_tiny_shakespeare(cache, download=False)
