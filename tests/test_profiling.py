"""The measuring tools: exact byte counts on known allocations, and timing statistics."""

import pytest
import torch

from attnbook.profiling import PeakMemory, Timing, peak_memory, time_call, time_calls


def test_peak_counts_created_storages_exactly():
    x = torch.randn(64, 64)

    def f():
        a = x @ x  # 16 KiB
        b = a.exp()  # 16 KiB more while a lives
        return (b.sum(),)  # a 4-byte scalar

    assert peak_memory(f) == 2 * 64 * 64 * 4 + 4


def test_views_and_inputs_cost_nothing():
    x = torch.randn(32, 32)
    assert peak_memory(lambda: (x.t(), x.view(-1), x[:4])) == 0


def test_freed_tensors_leave_the_count():
    x = torch.randn(128)
    with PeakMemory() as mem:
        for _ in range(5):
            y = x * 2
            del y
    assert mem.peak == 128 * 4
    assert mem.current == 0


def test_time_call_statistics():
    t = time_call(lambda: sum(range(1000)), repeats=5)
    assert isinstance(t, Timing) and t.repeats == 5
    assert 0 < t.low <= t.median <= t.high
    assert "ms" in str(t)


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_time_call_rejects_bad_repeats(bad):
    with pytest.raises(ValueError, match="repeats"):
        time_call(lambda: None, repeats=bad)


def test_not_callable():
    with pytest.raises(TypeError, match="fn must be callable"):
        peak_memory(42)


def test_time_calls_interleaves_rounds():
    order = []
    timings = time_calls({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3, warmup=1)
    assert order == ["a", "b"] + ["a", "b"] * 3  # warm-up each, then rounds that alternate
    assert list(timings) == ["a", "b"] and all(
        t.repeats == 3 and 0 <= t.low <= t.median <= t.high for t in timings.values()
    )
    with pytest.raises(ValueError, match="repeats"):
        time_calls({"a": lambda: None}, repeats=0)
    with pytest.raises(TypeError, match=r"calls\['a'\] must be callable"):
        time_calls({"a": 3})
    with pytest.raises(TypeError, match="non-empty dict"):
        time_calls({})
