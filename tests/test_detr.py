"""DETR's pieces (chapter 16): box utilities against torchvision, Hungarian and one-to-many matching against brute
force over all assignments, the set loss, average precision on hand-made cases, the generated shapes, the model."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from attnbook.data.shapes import SHAPE_CLASSES, make_shapes
from attnbook.models.detr import (
    DETR,
    average_precision,
    box_cxcywh_to_xyxy,
    box_iou,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    hungarian_match,
    match_cost,
    one_to_many_match,
    set_loss,
    sine_position_embedding,
)


def random_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    centre, size = (
        torch.rand(n, 2, generator=g, dtype=torch.float64),
        torch.rand(n, 2, generator=g, dtype=torch.float64),
    )
    return torch.cat([centre, 0.05 + 0.5 * size], -1)  # (cx, cy, w, h)


def test_box_conversions_are_inverse():
    b = random_boxes(7, 0)
    torch.testing.assert_close(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(b)), b, rtol=0, atol=1e-15)


def test_iou_and_giou_equal_torchvision():
    from torchvision.ops import box_iou as tv_iou
    from torchvision.ops import generalized_box_iou as tv_giou

    a, b = box_cxcywh_to_xyxy(random_boxes(9, 1)), box_cxcywh_to_xyxy(random_boxes(6, 2))
    torch.testing.assert_close(box_iou(a, b), tv_iou(a, b), rtol=0, atol=1e-12)
    torch.testing.assert_close(generalized_box_iou(a, b), tv_giou(a, b), rtol=0, atol=1e-12)
    giou = generalized_box_iou(a, a)
    torch.testing.assert_close(torch.diag(giou), torch.ones(9, dtype=torch.float64))  # a box with itself: 1
    assert (giou >= -1).all() and (giou <= 1).all()


def test_giou_ranks_disjoint_boxes_by_distance():
    base = torch.tensor([[0.0, 0.0, 1.0, 1.0]], dtype=torch.float64)
    near, far = torch.tensor([[2.0, 0.0, 3.0, 1.0]]).double(), torch.tensor([[5.0, 0.0, 6.0, 1.0]]).double()
    assert box_iou(base, near) == box_iou(base, far) == 0
    assert generalized_box_iou(base, near) > generalized_box_iou(base, far)


def brute_force_assignment(cost, k=1):
    """Least total cost over every way of giving each of the n objects k distinct queries."""
    n_q, n = cost.shape
    best, best_pairs = math.inf, None
    for chosen in itertools.permutations(range(n_q), k * n):  # query chosen[m] serves object m % n
        total = sum(cost[q, m % n].item() for m, q in enumerate(chosen))
        if total < best - 1e-12:
            best, best_pairs = total, chosen
    return best, best_pairs


@pytest.mark.parametrize(("n_q", "n"), [(3, 3), (5, 2), (6, 4), (4, 1), (5, 0)])
def test_hungarian_equals_brute_force(n_q, n):
    for seed in range(5):
        cost = torch.randn(n_q, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        rows, cols = hungarian_match(cost)
        assert len(rows) == n and sorted(cols.tolist()) == list(range(n)) and len(set(rows.tolist())) == n
        best, _ = brute_force_assignment(cost) if n else (0.0, None)
        assert abs(cost[rows, cols].sum().item() - best) < 1e-12


@pytest.mark.parametrize(("n_q", "n", "k"), [(4, 2, 2), (6, 2, 3), (7, 3, 2), (5, 1, 4)])
def test_one_to_many_equals_brute_force(n_q, n, k):
    for seed in range(3):
        cost = torch.randn(n_q, n, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
        rows, cols = one_to_many_match(cost, k)
        assert len(rows) == k * n and len(set(rows.tolist())) == k * n  # distinct queries
        assert torch.bincount(cols, minlength=n).tolist() == [k] * n  # each object exactly k queries
        best, _ = brute_force_assignment(cost, k)
        assert abs(cost[rows, cols].sum().item() - best) < 1e-12


def test_one_to_many_with_k_1_is_hungarian():
    cost = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    for a, b in zip(one_to_many_match(cost, 1), hungarian_match(cost), strict=True):
        assert torch.equal(a, b)


def test_match_cost_is_its_formula():
    g = torch.Generator().manual_seed(0)
    logits, boxes = torch.randn(4, 3, generator=g, dtype=torch.float64), random_boxes(4, 3)
    labels, targets = torch.tensor([1, 0]), random_boxes(2, 4)
    cost = match_cost(logits, boxes, labels, targets, class_weight=1.5, l1_weight=2.0, giou_weight=3.0)
    for i in range(4):
        for j in range(2):
            p = logits[i].softmax(-1)[labels[j]]
            l1 = (boxes[i] - targets[j]).abs().sum()
            giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes[i : i + 1]), box_cxcywh_to_xyxy(targets[j : j + 1]))
            torch.testing.assert_close(cost[i, j], -1.5 * p + 2.0 * l1 - 3.0 * giou[0, 0], rtol=0, atol=1e-12)


def test_set_loss_is_zero_free_for_a_perfect_prediction_and_matches_a_permutation():
    """Queries in any order: the loss depends on the set, so permuting the queries leaves it unchanged."""
    labels, targets = [torch.tensor([2, 0])], [random_boxes(2, 5)]
    logits = torch.full((1, 4, 4), -20.0, dtype=torch.float64)
    boxes = random_boxes(4, 6)[None].clone()
    logits[0, 1, 2] = logits[0, 3, 0] = 20.0  # query 1 says class 2, query 3 class 0; the others "no object"
    logits[0, 0, 3] = logits[0, 2, 3] = 20.0
    boxes[0, 1], boxes[0, 3] = targets[0][0], targets[0][1]
    loss, matches = set_loss(logits, boxes, labels, targets)
    assert loss.item() < 1e-6
    assert matches[0][0].tolist() == [1, 3] and matches[0][1].tolist() == [0, 1]
    perm = torch.tensor([2, 0, 3, 1])
    loss_perm, _ = set_loss(logits[:, perm], boxes[:, perm], labels, targets)
    torch.testing.assert_close(loss_perm, loss)


def test_set_loss_one_to_many_gives_k_queries_per_object():
    g = torch.Generator().manual_seed(1)
    logits, boxes = torch.randn(2, 6, 4, generator=g), torch.rand(2, 6, 4, generator=g) * 0.5 + 0.25
    labels = [torch.tensor([0, 1]), torch.tensor([2])]
    targets = [torch.rand(2, 4, generator=g) * 0.5 + 0.25, torch.rand(1, 4, generator=g) * 0.5 + 0.25]
    loss, matches = set_loss(logits, boxes, labels, targets, k=3)
    assert torch.isfinite(loss) and [len(r) for r, _ in matches] == [6, 3]


def test_average_precision_hand_cases():
    t_labels, t_boxes = [torch.tensor([0, 0])], [torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.75, 0.75, 0.2, 0.2]])]
    perfect = average_precision([torch.tensor([0.9, 0.8])], [torch.tensor([0, 0])], t_boxes, t_labels, t_boxes,
                                num_classes=1)  # fmt: skip
    assert perfect[0] == 1.0
    # the higher-scored prediction is a miss, then one hit: precision 1/2 at recall 1/2 -> AP 0.25
    wrong = torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.25, 0.25, 0.2, 0.2]])
    ap, _ = average_precision([torch.tensor([0.9, 0.8])], [torch.tensor([0, 0])], [wrong], t_labels, t_boxes,
                              num_classes=1)  # fmt: skip
    assert abs(ap - 0.25) < 1e-12
    # a duplicate detection of one object counts once
    dup = torch.tensor([[0.25, 0.25, 0.2, 0.2], [0.25, 0.25, 0.2, 0.2]])
    ap, _ = average_precision([torch.tensor([0.9, 0.8])], [torch.tensor([0, 0])], [dup], t_labels, t_boxes,
                              num_classes=1)  # fmt: skip
    assert abs(ap - 0.5) < 1e-12
    ap, per = average_precision([torch.tensor([0.9])], [torch.tensor([1])], [wrong[:1]], t_labels, t_boxes,
                                num_classes=2)  # fmt: skip
    assert ap == 0.0 and math.isnan(per[1])


def test_shapes_are_seeded_and_boxes_enclose_the_objects():
    a, b = make_shapes(20, seed=3), make_shapes(20, seed=3)
    assert torch.equal(a.images, b.images) and all(torch.equal(x, y) for x, y in zip(a.boxes, b.boxes, strict=True))
    assert a.images.shape == (20, 1, 32, 32) and 0 <= a.images.min() and a.images.max() <= 1
    for img, labels, boxes in zip(a.images, a.labels, a.boxes, strict=True):
        assert 1 <= len(labels) <= 3 and labels.max() < len(SHAPE_CLASSES)
        bright = img[0] > 0.5
        covered = torch.zeros_like(bright)
        for x0, y0, x1, y1 in (box_cxcywh_to_xyxy(boxes) * 32).round().long().tolist():
            covered[y0:y1, x0:x1] = True
            assert bright[y0:y1, x0:x1].any(dim=1).all() and bright[y0:y1, x0:x1].any(dim=0).all()  # tight box
        assert torch.equal(bright & ~covered, torch.zeros_like(bright))  # every bright pixel lies in a box


def test_sine_positions_are_distinct():
    pos = sine_position_embedding(4, 5, 16)
    assert pos.shape == (20, 16) and torch.cdist(pos, pos).add(torch.eye(20)).min() > 1e-3


@pytest.mark.parametrize("cross", ["dense", "deformable"])
def test_detr_shapes_and_a_training_step(cross):
    model = DETR(3, image_size=16, dim=16, num_heads=2, num_queries=5, cross_attention=cross)
    data = make_shapes(4, image_size=16, min_size=3, max_size=6, seed=0)
    out = model(data.images)
    assert out["logits"].shape == (4, 5, 4) and out["boxes"].shape == (4, 5, 4) and len(out["aux"]) == 1
    assert ((out["boxes"] > 0) & (out["boxes"] < 1)).all()
    loss, _ = set_loss(out["logits"], out["boxes"], data.labels, data.boxes)
    loss.backward()
    assert model.query_pos.grad.abs().sum() > 0


def test_deformable_detr_samples_around_each_querys_reference_point():
    """At initialisation the offsets are Deformable DETR's rings: point k is k + 1 pixels from the reference."""
    model = DETR(3, image_size=16, dim=16, num_heads=4, num_queries=5, cross_attention="deformable", num_points=2)
    out = model(make_shapes(2, image_size=16, min_size=3, max_size=6, seed=1).images)
    ref, loc = out["reference_points"], out["sampling_locations"]  # (B, T_q, 2), (B, T_q, H, 1, K, 2)
    assert loc.shape == (2, 5, 4, 1, 2, 2)
    pixels = (loc - ref[:, :, None, None, None, :]) * 4  # a 4 x 4 token grid: offsets in pixels
    expected = model.decoder[-1].cross_attn.sampling_offsets.bias.reshape(4, 1, 2, 2)
    torch.testing.assert_close(pixels, expected.expand_as(pixels), rtol=0, atol=1e-5)
    torch.testing.assert_close(out["cross_attention"].sum((-2, -1)), torch.ones(2, 5, 4))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: hungarian_match(torch.randn(3)), "cost"),
        (lambda: hungarian_match(torch.tensor([[float("nan")]])), "non-finite"),
        (lambda: one_to_many_match(torch.randn(3, 2), 2), "N_q=3"),
        (lambda: one_to_many_match(torch.randn(3, 2), 0), "k must be"),
        (lambda: match_cost(torch.randn(3, 4), torch.rand(3, 4), torch.tensor([3]), torch.rand(1, 4)), "0..2"),
        (lambda: match_cost(torch.randn(3, 4), torch.rand(2, 4), torch.tensor([0]), torch.rand(1, 4)), "N_q"),
        (lambda: generalized_box_iou(torch.rand(2, 3), torch.rand(2, 4)), "a must be"),
        (lambda: generalized_box_iou(torch.tensor([[1.0, 1, 0, 0]]), torch.rand(1, 4)), "x1 < x0"),
        (lambda: set_loss(torch.randn(2, 3, 4), torch.rand(2, 3, 4), [torch.tensor([0])], [torch.rand(1, 4)]), "B=2"),
        (lambda: DETR(3, image_size=30, patch_size=4), "must divide"),
        (lambda: DETR(3, cross_attention="sparse"), "cross_attention"),
        (lambda: DETR(3)(torch.rand(1, 3, 32, 32)), "images must be"),
        (lambda: make_shapes(0), "num_images"),
        (lambda: make_shapes(2, image_size=16, max_size=12), "max_size"),
        (lambda: make_shapes(2, noise=0.7), "noise"),
    ],
)
def test_bad_input_is_refused(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()
