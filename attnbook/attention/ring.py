"""Ring self-attention: exact attention over a sequence split across processes (chapter 12).

Paper: *Sequence Parallelism: Long Sequence Training from System Perspective* (Li, Xue, Baranwal, Li and You, 2021,
:cite:`li2021sequence`). It splits a sequence of length ``T`` into ``R`` chunks of ``C = T / R`` positions, one per
process ("rank") of a ring of ``R`` ranks (PyTorch's world size). Rank ``r`` holds its queries, keys and
values ``Q_r, K_r, V_r`` of shape ``(B, H, C, d)`` and never the whole sequence. Ring self-attention (RSA)
computes the rows of attention that belong to its queries in two stages:

1. **Keys travel.** ``R - 1`` times, every rank sends the key chunk it holds to the next rank and receives
   one from the previous rank, so that rank ``r`` meets every ``K_m`` once and fills its score block
   ``S_r = Q_r [K_1; ...; K_R]^T * scale`` of shape ``(B, H, C, T)``: full rows, so the softmax
   ``A_r = softmax(S_r)`` is local and exact.
2. **Values travel.** The value chunks go round the same ring and rank ``r`` sums
   ``O_r = sum_m A_{r,m} V_m``, shape ``(B, H, C, d_v)``.

The backward pass follows the paper's code (ColossalAI's ``RingQK``/``RingAV``): the query gradient
``dQ_r = dS_r K * scale`` and the weight gradient ``dA_r = dO_r V^T`` need the other ranks' keys and values,
so those go round the ring again; the key and value gradients ``dK = dS^T Q``, ``dV = A^T dO`` sum over
every rank's queries, so each rank computes its contribution for the whole sequence ``(B, H, T, d)`` and an
all-reduce adds them up. The score block per rank is ``B H C T`` numbers, ``1/R`` of full attention's.

:func:`ring_self_attention` is the function (it runs inside an initialised :mod:`torch.distributed` group);
:func:`run_distributed` starts ``R`` local processes with such a group, so the ring runs in a notebook;
:func:`split_sequence` cuts a full tensor into the ranks' chunks; :class:`CommunicationLog` counts the bytes a
rank sends, and :func:`ring_communication_bytes` is the formula it should match.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.connection
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from attnbook.attention.functional import check_qkv, masked_softmax

__all__ = [
    "CommunicationLog",
    "ring_communication_bytes",
    "ring_pass",
    "ring_self_attention",
    "run_distributed",
    "split_sequence",
]


@dataclass
class CommunicationLog:
    """Bytes one rank hands to the network: ``ring_bytes`` sent to its neighbour, ``all_reduce_bytes`` given to
    all-reduces (the payload; how many bytes an all-reduce moves depends on its algorithm, about
    ``2 (R-1)/R`` times the payload for a ring all-reduce)."""

    ring_bytes: int = 0
    all_reduce_bytes: int = 0


def _nbytes(t: Tensor) -> int:
    return t.numel() * t.element_size()


def _group_info(group: dist.ProcessGroup | None) -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "ring_self_attention runs inside a torch.distributed process group; start one with "
            "attnbook.attention.run_distributed(fn, world_size) or torch.distributed.init_process_group"
        )
    return dist.get_rank(group), dist.get_world_size(group)


def ring_pass(tensor: Tensor, group: dist.ProcessGroup | None = None, log: CommunicationLog | None = None) -> Tensor:
    """Send ``tensor`` to the next rank of the ring and return the one the previous rank sent (same shape).

    Rank ``r`` sends to ``(r + 1) mod R`` and receives from ``(r - 1) mod R``; every rank must call it with a
    tensor of the same shape and dtype. With ``R = 1`` the tensor comes back unchanged and nothing is sent.
    """
    rank, world = _group_info(group)
    if world == 1:
        return tensor
    send = tensor.contiguous()
    received = torch.empty_like(send)
    to_rank = dist.get_global_rank(group, (rank + 1) % world) if group is not None else (rank + 1) % world
    from_rank = dist.get_global_rank(group, (rank - 1) % world) if group is not None else (rank - 1) % world
    requests = [dist.isend(send, to_rank, group=group), dist.irecv(received, from_rank, group=group)]
    for request in requests:
        request.wait()
    if log is not None:
        log.ring_bytes += _nbytes(send)
    return received


def _chunk_range(owner: int, chunk: int) -> slice:
    return slice(owner * chunk, (owner + 1) * chunk)


def _sum_ranks_keep_own_chunk(full: Tensor, group: Any, log: CommunicationLog | None, chunk: int) -> Tensor:
    """All-reduce a gradient ``(B, H, T, d)`` that every rank computed for the whole sequence, and keep this
    rank's chunk ``(B, H, C, d)`` of the sum."""
    rank, world = _group_info(group)
    if world > 1:
        dist.all_reduce(full, group=group)
        if log is not None:
            log.all_reduce_bytes += _nbytes(full)
    return full[..., _chunk_range(rank, chunk), :].contiguous()


class _RingScores(torch.autograd.Function):
    """Stage 1: the score block ``S_r = Q_r K^T`` of shape ``(B, H, C, T)``, keys passed round the ring."""

    @staticmethod
    def forward(ctx: Any, q: Tensor, k: Tensor, group: Any, log: Any) -> Tensor:
        rank, world = _group_info(group)
        chunk = k.shape[-2]
        scores = q.new_empty(*q.shape[:-1], chunk * world)  # (B, H, C, T)
        held = k
        for step in range(world):
            owner = (rank - step) % world  # after `step` passes, rank r holds the keys of rank r - step
            scores[..., _chunk_range(owner, chunk)] = q @ held.transpose(-2, -1)  # (B, H, C, C)
            if step < world - 1:
                held = ring_pass(held, group, log)
        ctx.save_for_backward(q, k)
        ctx.group, ctx.log = group, log
        return scores

    @staticmethod
    def backward(ctx: Any, grad_scores: Tensor) -> tuple[Tensor, Tensor, None, None]:
        q, k = ctx.saved_tensors
        rank, world = _group_info(ctx.group)
        chunk = k.shape[-2]
        # dK: this rank's queries contribute dS_r^T Q_r to every key; the all-reduce sums the ranks.
        grad_k = _sum_ranks_keep_own_chunk(grad_scores.transpose(-2, -1) @ q, ctx.group, ctx.log, chunk)  # (B,H,C,d)
        # dQ_r = sum_m dS_{r,m} K_m: the keys go round the ring once more.
        grad_q = torch.zeros_like(q)
        held = k
        for step in range(world):
            owner = (rank - step) % world
            grad_q += grad_scores[..., _chunk_range(owner, chunk)] @ held  # (B, H, C, d)
            if step < world - 1:
                held = ring_pass(held, ctx.group, ctx.log)
        return grad_q, grad_k, None, None


class _RingWeightedSum(torch.autograd.Function):
    """Stage 2: ``O_r = sum_m A_{r,m} V_m`` of shape ``(B, H, C, d_v)``, values passed round the ring."""

    @staticmethod
    def forward(ctx: Any, weights: Tensor, v: Tensor, group: Any, log: Any) -> Tensor:
        rank, world = _group_info(group)
        chunk = v.shape[-2]
        out = weights.new_zeros(*weights.shape[:-1], v.shape[-1])  # (B, H, C, d_v)
        held = v
        for step in range(world):
            owner = (rank - step) % world
            out += weights[..., _chunk_range(owner, chunk)] @ held  # (B, H, C, d_v)
            if step < world - 1:
                held = ring_pass(held, group, log)
        ctx.save_for_backward(weights, v)
        ctx.group, ctx.log = group, log
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, Tensor, None, None]:
        weights, v = ctx.saved_tensors
        rank, world = _group_info(ctx.group)
        chunk = v.shape[-2]
        # dV: this rank's weights contribute A_r^T dO_r to every value; the all-reduce sums the ranks.
        grad_v = _sum_ranks_keep_own_chunk(weights.transpose(-2, -1) @ grad_out, ctx.group, ctx.log, chunk)
        # dA_{r,m} = dO_r V_m^T: the values go round the ring once more.
        grad_weights = torch.empty_like(weights)  # (B, H, C, T)
        held = v
        for step in range(world):
            owner = (rank - step) % world
            grad_weights[..., _chunk_range(owner, chunk)] = grad_out @ held.transpose(-2, -1)  # (B, H, C, C)
            if step < world - 1:
                held = ring_pass(held, ctx.group, ctx.log)
        return grad_weights, grad_v, None, None


def _check_same_shapes(q: Tensor, k: Tensor, v: Tensor, group: Any, world: int) -> None:
    """Every rank must hold chunks of one shape; compare them across ranks so that all ranks raise together."""
    if world == 1:
        return
    local = torch.tensor([*q.shape, *k.shape, *v.shape], dtype=torch.int64, device=q.device)
    gathered = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(gathered, local, group=group)
    shapes = [tuple(g.tolist()) for g in gathered]
    if any(s != shapes[0] for s in shapes):
        rank_of = ", ".join(f"rank {r}: q{s[:4]} k{s[4:8]} v{s[8:]}" for r, s in enumerate(shapes))
        raise ValueError(f"ring_self_attention: every rank must hold chunks of the same shapes, got {rank_of}")


def ring_self_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    causal: bool = False,
    scale: float | None = None,
    group: dist.ProcessGroup | None = None,
    log: CommunicationLog | None = None,
) -> Tensor:
    """Ring self-attention :cite:`li2021sequence`: this rank's rows of ``softmax(Q K^T s) V``.

    Args:
        q, k, v: this rank's chunks, ``(B, H, C, d)``, ``(B, H, C, d)``, ``(B, H, C, d_v)``: positions
            ``rank * C`` to ``(rank + 1) * C - 1`` of a sequence of ``T = R * C`` (:func:`split_sequence`).
            Every rank must pass chunks of the same shapes.
        causal: a query at global position ``i`` sees keys ``j <= i`` only.
        scale: logit scale, ``1/sqrt(d)`` by default.
        group: the process group that forms the ring (default: the whole world).
        log: a :class:`CommunicationLog` that counts the bytes this rank sends, forward and backward.

    Returns:
        ``(B, H, C, d_v)``: the attention output for this rank's queries, equal (to rounding) to rows
        ``rank * C ...`` of full attention over the whole sequence. Differentiable in ``q``, ``k``, ``v``.
    """
    check_qkv(q, k, v, name="ring_self_attention")
    if q.ndim != 4:
        raise ValueError(f"ring_self_attention: q, k, v must be (B, H, C, d) chunks, got q{tuple(q.shape)}")
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(
            f"ring_self_attention: q and k chunks must have the same length C (self-attention), "
            f"got q{tuple(q.shape)} and k{tuple(k.shape)}"
        )
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0):
        raise ValueError(f"ring_self_attention: scale must be a positive number or None, got {scale!r}")
    rank, world = _group_info(group)
    _check_same_shapes(q, k, v, group, world)
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    chunk = q.shape[-2]
    scores = _RingScores.apply(q * scale, k, group, log)  # (B, H, C, T)
    mask = None
    if causal:
        query_pos = torch.arange(rank * chunk, (rank + 1) * chunk, device=q.device)  # (C,)
        key_pos = torch.arange(world * chunk, device=q.device)  # (T,)
        mask = key_pos[None, :] <= query_pos[:, None]  # (C, T), True = may attend
    weights = masked_softmax(scores, mask)  # (B, H, C, T): full rows, so the softmax is local and exact
    return _RingWeightedSum.apply(weights, v, group, log)  # (B, H, C, d_v)


def split_sequence(x: Tensor, world_size: int, dim: int = -2) -> list[Tensor]:
    """Cut ``x`` along ``dim`` (the sequence, ``-2`` for ``(B, H, T, d)``) into ``world_size`` equal chunks."""
    if not isinstance(x, Tensor):
        raise TypeError(f"split_sequence: x must be a torch.Tensor, got {type(x).__name__}")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"split_sequence: world_size must be a positive int, got {world_size!r}")
    length = x.shape[dim]
    if length % world_size:
        raise ValueError(
            f"split_sequence: sequence length T={length} (dim {dim} of x{tuple(x.shape)}) is not divisible by "
            f"world_size={world_size}; pad the sequence or pick a world size that divides it"
        )
    return [c.contiguous() for c in x.chunk(world_size, dim=dim)]


def ring_communication_bytes(
    batch: int, heads: int, length: int, world_size: int, head_dim: int, value_dim: int, itemsize: int
) -> dict[str, int]:
    """Bytes one rank sends in one forward and one backward of :func:`ring_self_attention`.

    Each stage passes a ``(B, H, C, ·)`` chunk ``R - 1`` times (keys and values in the forward, again in the
    backward); the backward hands two full-length gradients ``(B, H, T, d)`` and ``(B, H, T, d_v)`` to
    all-reduces. With ``R = 1`` nothing is sent.
    """
    for name, value in (("batch", batch), ("heads", heads), ("length", length), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"ring_communication_bytes: {name} must be a positive int, got {value!r}")
    if length % world_size:
        raise ValueError(f"ring_communication_bytes: length={length} is not divisible by world_size={world_size}")
    chunk = length // world_size
    passes = world_size - 1
    ring = passes * batch * heads * chunk * (head_dim + value_dim) * itemsize
    all_reduce = batch * heads * length * (head_dim + value_dim) * itemsize if world_size > 1 else 0
    return {"forward_ring": ring, "backward_ring": ring, "backward_all_reduce": all_reduce}


def _worker(rank: int, world_size: int, backend: str, store_path: str, out_dir: str, fn: Callable, args: tuple) -> None:
    torch.set_num_threads(1)  # R processes share the machine's cores; one thread each avoids oversubscription
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        store = dist.FileStore(store_path, world_size)
        dist.init_process_group(backend, store=store, rank=rank, world_size=world_size, timeout=timedelta(seconds=120))
        try:
            result = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        torch.save(result, os.path.join(out_dir, f"result-{rank}.pt"))
    except BaseException:
        with open(os.path.join(out_dir, f"error-{rank}.txt"), "w") as f:
            f.write(traceback.format_exc())
        raise SystemExit(1) from None


def _join_or_kill(processes: list, timeout: float) -> None:
    """Wait for every process; once one fails (or the time is up) the others would wait for it forever: end them."""
    deadline = time.monotonic() + timeout
    pending = list(processes)
    while pending:
        ready = multiprocessing.connection.wait([p.sentinel for p in pending], max(0.0, deadline - time.monotonic()))
        for p in [p for p in pending if p.sentinel in ready]:
            p.join()
            pending.remove(p)
        if not ready or any(p.exitcode != 0 for p in processes if p not in pending):
            for p in pending:
                p.kill()
                p.join()
            return


def run_distributed(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    backend: str | None = None,
    timeout: float = 300.0,
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` in ``world_size`` new local processes joined in one process group.

    The group uses ``gloo`` (CPU tensors) by default, or ``nccl`` when CUDA is available (rank ``r`` on GPU
    ``r mod`` the number of GPUs; pass ``backend="gloo"`` to force CPU). The processes meet through a file
    store in a temporary folder, so no network port is needed. On CPU they are forked, so ``fn`` may be
    defined in a notebook; NCCL needs a fresh CUDA context, so its processes are spawned and ``fn`` must be
    importable from a module (the NCCL path is written for GPUs but not exercised by the book's CPU-only tests:
    ``tests/test_ring.py`` runs it only where two CUDA devices exist). Each process uses one thread.

    Returns the ``world_size`` return values in rank order (they travel by :func:`torch.save`, so tensors are
    fine); if any rank fails, raises ``RuntimeError`` with its traceback, after ending the other ranks.
    """
    if not callable(fn):
        raise TypeError(f"run_distributed: fn must be callable, got {type(fn).__name__}")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"run_distributed: world_size must be a positive int, got {world_size!r}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"run_distributed: backend must be 'gloo' or 'nccl', got {backend!r}")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("run_distributed: backend='nccl' needs CUDA, which is not available here; use 'gloo'")
    if not dist.is_available():
        raise RuntimeError("run_distributed: this build of PyTorch has no torch.distributed")
    method = "spawn" if backend == "nccl" or "fork" not in multiprocessing.get_all_start_methods() else "fork"
    context = multiprocessing.get_context(method)
    with tempfile.TemporaryDirectory(prefix="attnbook-ring-") as out_dir:
        store_path = os.path.join(out_dir, "store")
        processes = [
            context.Process(target=_worker, args=(rank, world_size, backend, store_path, out_dir, fn, args))
            for rank in range(world_size)
        ]
        for p in processes:
            p.start()
        _join_or_kill(processes, timeout)
        errors = []
        for rank, p in enumerate(processes):
            error_file = os.path.join(out_dir, f"error-{rank}.txt")
            if os.path.exists(error_file):
                with open(error_file) as f:
                    errors.append(f"rank {rank}:\n{f.read()}")
            elif p.exitcode != 0:
                errors.append(f"rank {rank}: exit code {p.exitcode} (timed out after {timeout} s or killed)")
        if errors:
            raise RuntimeError("run_distributed: a rank failed\n" + "\n".join(errors))
        return [torch.load(os.path.join(out_dir, f"result-{r}.pt"), weights_only=False) for r in range(world_size)]
