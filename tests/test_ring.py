"""Ring self-attention (chapter 12) in real processes: equal to one process's full attention, forward and backward.

Each world size starts one group of local gloo processes (``run_distributed``) that runs every check once; the
tests then compare what the ranks returned with full attention computed here, in one process.
"""

from __future__ import annotations

import pytest
import torch

from attnbook.attention.functional import scaled_dot_product_attention
from attnbook.attention.masks import causal_mask
from attnbook.attention.ring import (
    CommunicationLog,
    ring_communication_bytes,
    ring_pass,
    ring_self_attention,
    run_distributed,
    split_sequence,
)
from attnbook.profiling import peak_memory

F64 = torch.float64
B, H, T, D, D_V = 2, 3, 12, 4, 5
MEMORY_T, MEMORY_D = 256, 4


def inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(B, H, T, D), (B, H, T, D), (B, H, T, D_V), (B, H, T, D_V)]
    return [torch.randn(*s, generator=gen, dtype=F64) for s in shapes]  # q, k, v, upstream gradient


def _all_checks(rank, world, q, k, v, grad_out):
    """One rank's share of every check (run inside the group): outputs, gradients, bytes, and score memory."""
    results = {}
    for causal in (False, True):
        chunks = [split_sequence(t, world)[rank] for t in (q, k, v, grad_out)]
        qs, ks, vs = (c.requires_grad_() for c in chunks[:3])
        log = CommunicationLog()
        out = ring_self_attention(qs, ks, vs, causal=causal, log=log)
        forward_bytes = log.ring_bytes
        (out * chunks[3]).sum().backward()
        results[causal] = (out.detach(), qs.grad, ks.grad, vs.grad, forward_bytes, log)
    big = torch.randn(1, 2, MEMORY_T // world, MEMORY_D, dtype=F64)
    with torch.no_grad():
        results["peak"] = peak_memory(lambda: ring_self_attention(big, big, big))
    results["neighbour"] = ring_pass(torch.tensor([float(rank)]))
    return results


@pytest.fixture(scope="module", params=[1, 2, 4], ids=lambda w: f"W{w}")
def ring_run(request):
    world = request.param
    return world, run_distributed(_all_checks, world, *inputs(), backend="gloo")


def full_attention(causal):
    q, k, v, grad_out = inputs()
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    out = scaled_dot_product_attention(q, k, v, mask=causal_mask(T) if causal else None, backend="manual")
    (out * grad_out).sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_ring_equals_full_attention_forward_and_backward(ring_run, causal):
    world, results = ring_run
    reference = full_attention(causal)
    for name, i, want in zip(("out", "dq", "dk", "dv"), range(4), reference, strict=True):
        got = torch.cat([results[r][causal][i] for r in range(world)], dim=-2)
        assert got.shape == want.shape, name
        if world == 1:  # a ring of one runs the very operations of full attention
            assert torch.equal(got, want), name
        else:
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=name)


def test_ring_bytes_match_the_formula(ring_run):
    world, results = ring_run
    formula = ring_communication_bytes(B, H, T, world, D, D_V, itemsize=8)
    for rank in range(world):
        forward_bytes, log = results[rank][False][4:]
        assert forward_bytes == formula["forward_ring"]
        assert log.ring_bytes == formula["forward_ring"] + formula["backward_ring"]
        assert log.all_reduce_bytes == formula["backward_all_reduce"]
    if world > 1:
        assert formula["forward_ring"] == (world - 1) * B * H * (T // world) * (D + D_V) * 8


def test_ring_pass_receives_from_the_previous_rank(ring_run):
    world, results = ring_run
    for rank in range(world):
        assert results[rank]["neighbour"].item() == (rank - 1) % world


def test_score_memory_per_rank_falls_as_one_over_world_size(ring_run):
    """The forward's peak is three score blocks (scores, exp, weights) of B H C T numbers, C = T / W, for every W."""
    world, results = ring_run
    peaks = [results[r]["peak"] for r in range(world)]
    assert len(set(peaks)) == 1  # every rank holds the same block
    score_block = 1 * 2 * (MEMORY_T // world) * MEMORY_T * 8  # B H C T float64, C = T / W
    assert 2.95 <= peaks[0] / score_block <= 3.1, peaks[0] / score_block


def _mismatched(rank, world):
    length = 2 + rank  # rank 1 holds a longer chunk than rank 0
    x = torch.randn(1, 1, length, 4)
    return ring_self_attention(x, x, x)


def test_mismatched_chunks_raise_on_every_rank():
    with pytest.raises(RuntimeError, match="same shapes") as info:
        run_distributed(_mismatched, 2)
    assert "rank 0" in str(info.value) and "rank 1" in str(info.value)


def test_bad_input():
    x = torch.randn(1, 2, 10, 4)
    with pytest.raises(ValueError, match="T=10 .* not divisible by world_size=4"):
        split_sequence(x, 4)
    with pytest.raises(ValueError, match="world_size"):
        split_sequence(x, 0)
    with pytest.raises(ValueError, match="world_size"):
        run_distributed(lambda rank, world: None, 0)
    with pytest.raises(ValueError, match="backend"):
        run_distributed(lambda rank, world: None, 1, backend="mpi")
    with pytest.raises(TypeError, match="callable"):
        run_distributed("not a function", 1)
    with pytest.raises(RuntimeError, match="process group"):
        ring_self_attention(x, x, x)
    with pytest.raises(ValueError, match="divisible"):
        ring_communication_bytes(1, 1, 10, 4, 4, 4, 8)


def _bad_rank_input(rank, world, kind):
    x = torch.randn(1, 2, 3, 4)
    if rank == 0 and kind == "length":
        return ring_self_attention(x, torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4))
    if rank == 0 and kind == "rank":
        y = torch.randn(2, 3, 4)
        return ring_self_attention(y, y, y)
    return ring_self_attention(x, x, x)  # waits for rank 0, which fails: run_distributed ends it


@pytest.mark.parametrize(
    ("kind", "message"),
    [("length", "q and k chunks must have the same length"), ("rank", r"\(B, H, C, d\) chunks")],
)
def test_bad_chunks_inside_the_group_name_the_shapes(kind, message):
    with pytest.raises(RuntimeError, match=message):
        run_distributed(_bad_rank_input, 2, kind)


def _cuda_checks(rank, world, q, k, v, grad_out):
    """The ring on this rank's GPU (NCCL); results come back on the CPU."""
    device = torch.device("cuda", torch.cuda.current_device())
    chunks = [split_sequence(t, world)[rank].to(device) for t in (q, k, v, grad_out)]
    qs, ks, vs = (c.requires_grad_() for c in chunks[:3])
    out = ring_self_attention(qs, ks, vs, causal=True)
    (out * chunks[3]).sum().backward()
    return [t.detach().cpu() for t in (out, qs.grad, ks.grad, vs.grad)]


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2 or not torch.distributed.is_nccl_available(),
    reason="the NCCL ring needs two CUDA devices",
)
def test_nccl_ring_equals_full_attention():
    world = 2
    results = run_distributed(_cuda_checks, world, *inputs(), backend="nccl")
    for i, want in enumerate(full_attention(causal=True)):
        got = torch.cat([results[r][i] for r in range(world)], dim=-2)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
