"""Bad input to the library raises a clear error naming the argument, never a NaN or a raw dtype error deep inside."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnbook.attention import (
    AdditiveAttention,
    MultiHeadAttention,
    RotaryPositionEmbedding,
    causal_mask,
    masked_softmax,
    rope_cos_sin,
)
from attnbook.models import GPT, GPTConfig
from attnbook.models.pointer import IGNORE_INDEX

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("base", [0, -1.0, 0.0, float("nan")])
def test_rope_base_must_be_positive(base):
    with pytest.raises(ValueError, match="base must be a positive number"):
        RotaryPositionEmbedding(8, base=base)
    with pytest.raises(ValueError, match="base must be positive"):
        rope_cos_sin(torch.arange(4), 8, base=base)


def test_rope_with_a_valid_base_is_finite():
    cos, sin = rope_cos_sin(torch.arange(4), 8, base=2.0)
    assert torch.isfinite(cos).all() and torch.isfinite(sin).all()


def test_masked_softmax_rejects_integer_logits():
    with pytest.raises(TypeError, match=r"logits must be a floating tensor, got torch.int64"):
        masked_softmax(torch.tensor([[1, 2, 3]]))
    weights = masked_softmax(torch.tensor([[1.0, 2.0, 3.0]]))
    torch.testing.assert_close(weights, torch.softmax(torch.tensor([[1.0, 2.0, 3.0]]), -1))


def test_multihead_attention_names_a_dtype_mismatch():
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"query is torch.float64 but the module's parameters are torch.float32"):
        mha(x)
    with pytest.raises(TypeError, match="query must be a floating tensor"):
        mha(torch.ones(2, 5, 8, dtype=torch.long))
    out, _ = mha.double()(x)  # the fix the message suggests works
    assert out.dtype == torch.float64 and out.shape == (2, 5, 8)


def test_additive_attention_names_a_dtype_mismatch():
    attn = AdditiveAttention(4, 6, 5)
    query, keys = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 3, 6, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"AdditiveAttention: query is torch.float64"):
        attn(query, keys)
    context, weights = attn.double()(query, keys)
    assert context.dtype == torch.float64 and weights.shape == (2, 3)


def test_gpt_ignores_pytorch_ignore_index():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))
    idx = torch.randint(0, 11, (2, 6))
    targets = torch.randint(0, 11, (2, 6))
    targets[0, :2] = IGNORE_INDEX
    logits, loss = model(idx, targets)
    keep = targets != -100
    expected = F.cross_entropy(logits[keep], targets[keep])  # the mean over the kept positions only
    torch.testing.assert_close(loss, expected)


@pytest.mark.parametrize("bad", [-1, 11])
def test_gpt_rejects_targets_out_of_range(bad):
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))
    idx = torch.zeros(1, 4, dtype=torch.long)
    targets = torch.zeros(1, 4, dtype=torch.long)
    targets[0, 2] = bad
    with pytest.raises(ValueError, match=rf"targets must be token ids in \[0, 11\) or IGNORE_INDEX=-100.*got {bad}"):
        model(idx, targets)


@pytest.mark.parametrize("args", [(3.5,), (3, 2.0), ("3",), (True,)])
def test_causal_mask_lengths_must_be_ints(args):
    with pytest.raises(TypeError, match="causal_mask: (q_len|k_len) must be an int"):
        causal_mask(*args)


def test_causal_mask_accepts_numpy_ints():
    assert causal_mask(np.int64(3)).equal(causal_mask(3))


def test_declared_python_is_the_tested_python():
    """The package declares the oldest Python its tests run on (they import tomllib, new in 3.11)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    oldest = tuple(int(p) for p in re.fullmatch(r">=(\d+)\.(\d+)", project["requires-python"]).groups())
    assert oldest == (3, 11)
    assert sys.version_info[:2] >= oldest
    versions = [c.rsplit(" :: ", 1)[1] for c in project["classifiers"] if re.search(r":: 3\.\d+$", c)]
    assert versions == ["3.11"], "classifiers may list only the Python versions CI tests"
    assert "python>=3.11" in (ROOT / "environment.yml").read_text()


def test_autocast_mixed_dtypes_are_allowed():
    mha = MultiHeadAttention(8, 2)
    x = torch.randn(2, 5, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = mha(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
