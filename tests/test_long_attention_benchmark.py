"""benchmarks/long_attention.py: the registry's mechanisms agree, the exponent fit is right on exact power laws,
over-budget lengths are skipped, and a tiny run writes its Markdown table."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("long_attention", ROOT / "benchmarks" / "long_attention.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script is executed
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_every_registered_mechanism_computes_full_attention(bench):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 150, 16, generator=gen, dtype=torch.float64) for _ in range(3))
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    for name in ("naive", "tiled", "sdpa"):
        torch.testing.assert_close(bench.MECHANISMS[name](q, k, v), want, atol=1e-12, rtol=1e-12, msg=name)
    assert set(bench.THEORY) <= set(bench.MECHANISMS)


def test_local_and_routing_entries_equal_their_masked_definitions(bench):
    from attnbook.attention.local import sliding_window_mask
    from attnbook.attention.routing import sqrt_routing_attention

    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 300, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    mask = sliding_window_mask(300, window_size=128, causal=True)
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(bench.MECHANISMS["local"](q, k, v), want, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(bench.MECHANISMS["routing"](q, k, v), sqrt_routing_attention(q, k, v))
    from attnbook.attention.axial import axial_attention_2d
    from attnbook.attention.factorised import combiner_attention

    torch.testing.assert_close(bench.MECHANISMS["axial"](q, k, v), axial_attention_2d(q, k, v))
    torch.testing.assert_close(bench.MECHANISMS["combiner"](q, k, v), combiner_attention(q, k, v))


def test_fit_and_extrapolation_on_exact_power_laws(bench):
    lengths = [256, 512, 1024, 2048]
    assert math.isclose(bench.fit_exponent(lengths, [3.0 * n**2 for n in lengths]), 2.0, abs_tol=1e-9)
    assert math.isclose(bench.fit_exponent(lengths, [5.0 * n for n in lengths]), 1.0, abs_tol=1e-9)
    assert math.isnan(bench.fit_exponent([256], [1.0]))
    assert math.isclose(bench.extrapolate_memory([256, 512], [100, 400], 1024), 1600)
    assert bench.extrapolate_memory([256], [100], 512) == 400  # one point: assume quadratic


def test_tiny_run_skips_over_budget_and_writes_markdown(bench, tmp_path):
    out = tmp_path / "table.md"
    bench.main(["--lengths", "32", "64", "128", "--heads", "1", "--head-dim", "8", "--repeats", "1", "--warmup", "0",
                "--memory-budget-gib", str(40_000 / 2**30), "--markdown", str(out)])  # fmt: skip
    text = out.read_text()
    assert "| n | naive ms (median [min-max]) | naive MiB |" in text
    assert "| tiled |" in text and "time / sdpa at the largest common n" in text
    row_128 = next(line for line in text.splitlines() if line.startswith("| 128 |"))
    assert row_128.split(" | ")[1:3] == ["-", "-"]  # naive's (1, 1, 128, 128) scores alone exceed 40 kB: skipped
    with pytest.raises(SystemExit):
        bench.parse_args(["--lengths", "64", "32"])
