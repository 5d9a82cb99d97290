"""Pointer Networks and their tasks: data generators (hull vs scipy), geometry, model shapes and masking invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.data.pointer import (
    IGNORE_INDEX,
    PointerDataset,
    convex_hull,
    convex_hull_task,
    hull_coverage,
    is_simple_polygon,
    pad_pointer_batch,
    polygon_area,
    sorting_task,
)
from attnbook.models.pointer import PointerNetwork, masked_log_softmax, pointer_loss

# ------------------------------------------------------------------------------------------------ data


def test_sorting_task_is_seeded_and_correct():
    x, y = sorting_task(50, 7, seed=3)
    assert x.shape == (50, 7, 1) and y.shape == (50, 7) and y.dtype == torch.long
    assert (x[..., 0].gather(1, y).diff(dim=1) >= 0).all()
    x2, y2 = sorting_task(50, 7, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, sorting_task(50, 7, seed=4).inputs)


@pytest.mark.parametrize("n", [3, 5, 10, 30])
def test_convex_hull_matches_scipy(n):
    spatial = pytest.importorskip("scipy.spatial")
    rng = np.random.default_rng(n)
    for _ in range(50):
        pts = rng.random((n, 2))
        ours = convex_hull(pts)
        ref = [int(i) for i in spatial.ConvexHull(pts).vertices]  # counter-clockwise in 2-D
        start = ref.index(min(ref))
        assert ours == ref[start:] + ref[:start]


def test_convex_hull_edge_cases():
    square_with_collinear = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0], [0.5, 0.5]], dtype=float)
    assert convex_hull(square_with_collinear) == [0, 1, 2, 3]  # collinear edge point and interior point excluded
    assert convex_hull(np.array([[0.0, 0.0], [1.0, 1.0]])) == [0, 1]
    with pytest.raises(ValueError, match="points"):
        convex_hull(np.zeros((4, 3)))


def test_convex_hull_task_targets():
    x, y = convex_hull_task(40, 8, seed=1)
    assert x.shape == (40, 8, 2) and y.shape == (40, 9)
    for b in range(40):
        row = y[b].tolist()
        end = row.index(8)
        assert row[:end] == convex_hull(x[b]) and all(t == IGNORE_INDEX for t in row[end + 1 :])
        assert row[0] == min(row[:end])  # canonical start: the smallest index on the hull
        assert end >= 3
    assert torch.equal(y, convex_hull_task(40, 8, seed=1).targets)


def test_polygon_area_and_coverage():
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0.25, 0.5]], dtype=float)
    assert polygon_area(square, [0, 1, 2, 3]) == pytest.approx(1.0)
    assert polygon_area(square, [3, 2, 1, 0]) == pytest.approx(1.0)  # orientation does not matter
    assert polygon_area(square, [0, 1]) == 0.0
    hull = [0, 1, 2, 3]
    assert hull_coverage([0, 1, 2, 3], square, hull) == pytest.approx(1.0)
    assert hull_coverage([0, 1, 2], square, hull) == pytest.approx(0.5)
    assert hull_coverage([0, 1, 2, 4], square, hull) == pytest.approx(0.625)
    assert hull_coverage([0, 2, 1, 3], square, hull) == 0.0  # self-intersecting (a bow tie)
    assert hull_coverage([0, 1, 1, 2], square, hull) == 0.0  # repeated vertex
    assert hull_coverage([0, 1], square, hull) == 0.0  # not a polygon
    assert hull_coverage(torch.tensor([0, 1, 2, 3, 5, -1]), square, torch.tensor([0, 1, 2, 3, 5, -100])) == 1.0
    assert not is_simple_polygon(square, [0, 1, 7])
    with pytest.raises(ValueError, match="zero area"):
        hull_coverage([0, 1, 2], square, [0, 1])


def test_dataset_and_padding_collate():
    ds = PointerDataset([convex_hull_task(3, 5, seed=0), convex_hull_task(2, 7, seed=1)])
    assert len(ds) == 5
    inputs, targets, lengths = pad_pointer_batch([ds[0], ds[4]])
    assert inputs.shape == (2, 7, 2) and lengths.tolist() == [5, 7]
    assert (inputs[0, 5:] == 0).all()
    for b, (x, t) in enumerate([ds[0], ds[4]]):
        end = t.tolist().index(x.shape[0])
        assert targets[b, :end].tolist() == t[:end].tolist() and targets[b, end] == 7
    with pytest.raises(ValueError, match="examples"):
        pad_pointer_batch([])
    with pytest.raises(ValueError, match="tasks"):
        PointerDataset([])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sorting_task(0, 5), "num_samples"),
        (lambda: sorting_task(5, 0), "n must"),
        (lambda: convex_hull_task(5, 2), "n must"),
        (lambda: convex_hull_task(5, 5, seed=-1), "seed"),
    ],
)
def test_bad_task_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------------------------------------ model


def random_targets(g: torch.Generator, lengths: torch.Tensor, n: int, end_token: bool) -> torch.Tensor:
    """Random valid teacher-forcing targets: distinct real inputs, then END (hull) or the rest (sorting)."""
    B = len(lengths)
    targets = torch.full((B, n + int(end_token)), IGNORE_INDEX)
    for b in range(B):
        L = int(lengths[b])
        k = int(torch.randint(3, L + 1, (1,), generator=g)) if end_token else L
        targets[b, :k] = torch.randperm(L, generator=g)[:k]
        if end_token:
            targets[b, k] = n
    return targets


def test_shapes_and_loss():
    model = PointerNetwork(input_dim=2, hidden_dim=8, end_token=True)
    x, y = convex_hull_task(4, 6, seed=0)
    log_probs = model(x, y)
    assert log_probs.shape == (4, 7, 7)
    loss = model.loss(log_probs, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    indices, lp = model.decode(x, return_log_probs=True)
    assert indices.shape == (4, 7) and lp.shape == (4, 7, 7)
    sorter = PointerNetwork(input_dim=1, hidden_dim=8)
    xs, ys = sorting_task(3, 5)
    assert sorter(xs, ys).shape == (3, 5, 5) and sorter.decode(xs).shape == (3, 5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(3, 8), end_token=st.booleans())
def test_masked_log_probs_are_exactly_zero_where_forbidden(seed, n, end_token):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = PointerNetwork(input_dim=2, hidden_dim=8, end_token=end_token)
    lengths = torch.randint(3, n + 1, (3,), generator=g)
    x = torch.rand(3, n, 2, generator=g)
    y = random_targets(g, lengths, n, end_token)
    with torch.no_grad():
        probs = model(x, y, lengths).exp()
    assert not probs.isnan().any()
    for b in range(3):
        steps = int((y[b] != IGNORE_INDEX).sum())
        for i in range(steps):
            seen = set(y[b, :i].tolist())
            for j in range(n):
                forbidden = j >= int(lengths[b]) or j in seen
                assert (probs[b, i, j] == 0) if forbidden else (probs[b, i, j] > 0)
            if end_token:
                may_end = i >= model.min_outputs or len(seen) == int(lengths[b])
                assert (probs[b, i, n] > 0) == may_end
            assert probs[b, i].sum() == pytest.approx(1.0, abs=1e-5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 9), end_token=st.booleans())
def test_decode_indexes_valid_unvisited_inputs(seed, n, end_token):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = PointerNetwork(input_dim=2, hidden_dim=8, end_token=end_token)
    lengths = torch.randint(1, n + 1, (4,), generator=g)
    x = torch.rand(4, n, 2, generator=g)
    indices, log_probs = model.decode(x, lengths, return_log_probs=True)
    assert indices.shape == (4, n + int(end_token))
    for b in range(4):
        row = indices[b].tolist()
        chosen = [j for j in row if j >= 0]
        assert row[: len(chosen)] == chosen, "-1 only after the end"
        assert len(set(chosen)) == len(chosen) and all(j < int(lengths[b]) for j in chosen)
        if not end_token:
            assert sorted(chosen) == list(range(int(lengths[b]))), "sorting outputs a permutation"
        for i, j in enumerate(chosen):  # the chosen index had positive probability at its step
            assert log_probs[b, i, j] > float("-inf")


@pytest.mark.parametrize("end_token", [False, True])
def test_forward_without_targets_scores_the_greedy_path(end_token):
    torch.manual_seed(0)
    model = PointerNetwork(input_dim=2, hidden_dim=8, end_token=end_token)
    x = torch.rand(3, 6, 2)
    lengths = torch.tensor([6, 4, 5])
    targets = model.greedy_targets(x, lengths)
    log_probs = model(x, lengths=lengths)
    torch.testing.assert_close(log_probs, model(x, targets, lengths))
    picked = log_probs.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    keep = targets != IGNORE_INDEX
    assert torch.isfinite(picked[keep]).all()
    assert (picked[keep] == log_probs[keep].max(dim=-1).values).all(), "greedy: each target is the argmax"
    if end_token:
        assert (targets == 6).sum(dim=1).tolist() == [1, 1, 1]


def test_padding_does_not_change_the_answer():
    torch.manual_seed(0)
    model = PointerNetwork(input_dim=2, hidden_dim=8, end_token=True)
    short = convex_hull_task(1, 5, seed=2)
    long = convex_hull_task(1, 8, seed=3)
    examples = [(short.inputs[0], short.targets[0]), (long.inputs[0], long.targets[0])]
    inputs, targets, lengths = pad_pointer_batch(examples)
    with torch.no_grad():
        padded = model(inputs, targets, lengths)  # (2, 9, 9)
        alone = model(short.inputs, short.targets)  # (1, 6, 6)
        dec_padded = model.decode(inputs, lengths)
        dec_alone = model.decode(short.inputs)
    steps = int((short.targets[0] != IGNORE_INDEX).sum())
    real = torch.cat([padded[0, :steps, :5], padded[0, :steps, 8:]], dim=-1)  # real inputs and END
    torch.testing.assert_close(real, alone[0, :steps], rtol=0, atol=1e-6)
    assert (padded[0, :, 5:8] == float("-inf")).all()
    assert dec_padded[0, :6].tolist() == dec_alone[0].tolist()


def test_masked_log_softmax_empty_rows_and_gradients():
    logits = torch.randn(2, 4, requires_grad=True)
    mask = torch.tensor([[True, False, True, False], [False, False, False, False]])
    out = masked_log_softmax(logits, mask)
    assert (out[1] == float("-inf")).all() and not out.isnan().any()
    assert out[0].exp().sum().item() == pytest.approx(1.0)
    out[0, 0].backward()
    assert torch.isfinite(logits.grad).all()
    with pytest.raises(TypeError, match="mask"):
        masked_log_softmax(logits, mask.float())


def test_bad_inputs():
    model = PointerNetwork(input_dim=2, hidden_dim=8, end_token=True)
    x, y = convex_hull_task(2, 5, seed=0)
    with pytest.raises(ValueError, match="input_dim=2"):
        model(x[..., :1], y)
    with pytest.raises(ValueError, match="inputs"):
        model(x[0], y)
    with pytest.raises(TypeError, match="inputs"):
        model(x.long(), y)
    with pytest.raises(ValueError, match="lengths"):
        model(x, y, torch.tensor([5, 6]))
    with pytest.raises(ValueError, match="lengths"):
        model(x, y, torch.tensor([5]))
    with pytest.raises(ValueError, match="targets"):
        model(x, y.float())
    with pytest.raises(ValueError, match="targets"):
        model(x, torch.full((2, 3), 7))
    bad = y.clone()
    bad[:, 1] = bad[:, 0]  # teacher forcing a repeated index
    with pytest.raises(ValueError, match="masked"):
        pointer_loss(model(x, bad), bad)
    with pytest.raises(ValueError, match="log_probs"):
        pointer_loss(torch.zeros(2, 3), y)
    with pytest.raises(ValueError, match="hidden_dim"):
        PointerNetwork(input_dim=2, hidden_dim=0)
    with pytest.raises(ValueError, match="empty|n > 0"):
        model.decode(torch.zeros(2, 0, 2))
