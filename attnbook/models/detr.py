"""A small DETR: object queries decoded against image tokens, matched to the objects as a set. Chapter 16.

DETR (Carion et al., 2020, :cite:`carion2020end`) predicts a *set* of ``N_q`` boxes. Learned **object queries**
attend to each other (self-attention) and to the image tokens (cross-attention) in a Transformer decoder; each query
ends in a class (one of ``C`` classes, or "no object", index ``C``) and a box ``(cx, cy, w, h)`` in ``[0, 1]``. The
loss first pairs predictions with ground truth by **Hungarian matching** on a cost of class probability, L1 box
distance and generalised IoU (:func:`match_cost`, :func:`hungarian_match`, solved exactly by
:func:`scipy.optimize.linear_sum_assignment`), then scores each pair (:func:`set_loss`); unmatched queries are
trained towards "no object".

* ``cross_attention="dense"``: DETR's decoder (post-norm; query positions added to queries, sine positions to keys).
* ``cross_attention="deformable"``: Deformable DETR's decoder cross-attention
  (:class:`~attnbook.attention.deformable.MultiScaleDeformableAttention`, one level) at a reference point predicted
  from each query's position embedding, as in MFDS-DETR :cite:`chen2024accurate` and SpecDETR :cite:`li2024specdetr`.
* :func:`one_to_many_match`: SpecDETR's one-to-many assignment, each ground-truth object matched to ``k`` queries.

Box utilities (:func:`box_cxcywh_to_xyxy`, :func:`box_iou`, :func:`generalized_box_iou`) and the detection score
:func:`average_precision` (AP at an IoU threshold, all-point interpolation, mean over classes) complete the module.
"""

from __future__ import annotations

import math
import numbers
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.core import MultiHeadAttention
from attnbook.attention.deformable import MultiScaleDeformableAttention

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_iou",
    "generalized_box_iou",
    "match_cost",
    "hungarian_match",
    "one_to_many_match",
    "set_loss",
    "sine_position_embedding",
    "DETR",
    "average_precision",
]


def _boxes(x: object, name: str, where: str) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[-1] != 4 or not x.is_floating_point():
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{where}: {name} must be a floating (N, 4) tensor of boxes, got {got}")
    return x


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` centre-size boxes ``(cx, cy, w, h)`` to corners ``(x0, y0, x1, y1)``."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` corners ``(x0, y0, x1, y1)`` to centre-size ``(cx, cy, w, h)``."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], -1)


def _area(boxes: Tensor) -> Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def _iou_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])  # (N, M, 2)
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)  # (N, M)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return inter / union, union


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of corner boxes ``a (N, 4)`` and ``b (M, 4)``: ``(N, M)``."""
    a, b = _boxes(a, "a", "box_iou"), _boxes(b, "b", "box_iou")
    return _iou_union(a, b)[0]


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise generalised IoU of corner boxes (Rezatofighi et al., 2019, :cite:`rezatofighi2019generalized`).

    ``GIoU = IoU - |C \\ (A u B)| / |C|``, ``C`` the smallest box enclosing both; in ``[-1, 1]``, and unlike IoU it
    still ranks boxes that do not overlap. ``a (N, 4)``, ``b (M, 4)`` -> ``(N, M)``.
    """
    a, b = _boxes(a, "a", "generalized_box_iou"), _boxes(b, "b", "generalized_box_iou")
    for name, x in (("a", a), ("b", b)):
        if (x[:, 2:] < x[:, :2]).any():
            raise ValueError(f"generalized_box_iou: {name} has boxes with x1 < x0 or y1 < y0 (not corner boxes?)")
    iou, union = _iou_union(a, b)
    enclosing = (torch.maximum(a[:, None, 2:], b[None, :, 2:]) - torch.minimum(a[:, None, :2], b[None, :, :2])).prod(-1)
    return iou - (enclosing - union) / enclosing


def match_cost(
    logits: Tensor,
    boxes: Tensor,
    target_labels: Tensor,
    target_boxes: Tensor,
    *,
    class_weight: float = 1.0,
    l1_weight: float = 5.0,
    giou_weight: float = 2.0,
) -> Tensor:
    """DETR's matching cost between ``N_q`` predictions and ``n`` objects of one image: ``(N_q, n)``.

    ``cost_ij = -class_weight p_i(c_j) + l1_weight |b_i - b_j|_1 - giou_weight GIoU(b_i, b_j)``, with ``p_i`` the
    softmax of ``logits (N_q, C + 1)``, boxes ``(cx, cy, w, h)`` and ``target_labels (n,)`` in ``0..C-1``.
    """
    where = "match_cost"
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[-1] < 2:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"{where}: logits must be (N_q, C + 1), got {got}")
    boxes, target_boxes = _boxes(boxes, "boxes", where), _boxes(target_boxes, "target_boxes", where)
    if boxes.shape[0] != logits.shape[0]:
        raise ValueError(f"{where}: boxes {tuple(boxes.shape)} and logits {tuple(logits.shape)} disagree on N_q")
    if not isinstance(target_labels, Tensor) or target_labels.shape != target_boxes.shape[:1]:
        got = tuple(target_labels.shape) if isinstance(target_labels, Tensor) else type(target_labels).__name__
        raise ValueError(f"{where}: target_labels must be (n,) = {tuple(target_boxes.shape[:1])}, got {got}")
    if target_labels.numel() and (target_labels.min() < 0 or target_labels.max() >= logits.shape[-1] - 1):
        raise ValueError(f"{where}: target_labels must lie in 0..{logits.shape[-1] - 2}, got {target_labels.tolist()}")
    prob = logits.softmax(-1)[:, target_labels]  # (N_q, n)
    l1 = torch.cdist(boxes, target_boxes.to(boxes.dtype), p=1)  # (N_q, n)
    giou = generalized_box_iou(box_cxcywh_to_xyxy(boxes), box_cxcywh_to_xyxy(target_boxes.to(boxes.dtype)))
    return -class_weight * prob + l1_weight * l1 - giou_weight * giou


def _check_cost(cost: object, where: str) -> Tensor:
    if not isinstance(cost, Tensor) or cost.ndim != 2:
        got = tuple(cost.shape) if isinstance(cost, Tensor) else type(cost).__name__
        raise ValueError(f"{where}: cost must be a 2-D (N_q, n) tensor, got {got}")
    if not torch.isfinite(cost).all():
        raise ValueError(f"{where}: cost has non-finite entries")
    return cost


def hungarian_match(cost: Tensor) -> tuple[Tensor, Tensor]:
    """The one-to-one assignment of least total cost: ``(query_idx, target_idx)``, each ``(min(N_q, n),)``.

    ``cost (N_q, n)``; every object gets exactly one query when ``N_q >= n``. Solved exactly by
    :func:`scipy.optimize.linear_sum_assignment` (the Hungarian method's modern form); ``target_idx`` ascends.
    """
    from scipy.optimize import linear_sum_assignment

    cost = _check_cost(cost, "hungarian_match")
    rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
    order = cols.argsort()
    return torch.as_tensor(rows[order], dtype=torch.long), torch.as_tensor(cols[order], dtype=torch.long)


def one_to_many_match(cost: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """SpecDETR's one-to-many assignment :cite:`li2024specdetr`: each object gets ``k`` distinct queries.

    The cost columns are repeated ``k`` times and the one-to-one problem is solved on ``(N_q, k n)``, so the total
    cost of all ``k n`` pairs is least; needs ``N_q >= k n``. Returns ``(query_idx, target_idx)`` of length ``k n``.
    """
    cost = _check_cost(cost, "one_to_many_match")
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"one_to_many_match: k must be a positive int, got {k!r}")
    n_q, n = cost.shape
    if n_q < k * n:
        raise ValueError(f"one_to_many_match: N_q={n_q} queries cannot give k={k} queries to each of n={n} objects")
    rows, cols = hungarian_match(cost.repeat(1, k))  # column j + m n is copy m of object j
    cols = cols % max(n, 1)
    order = torch.argsort(cols * n_q + rows)
    return rows[order], cols[order]


def set_loss(
    logits: Tensor,
    boxes: Tensor,
    target_labels: list[Tensor],
    target_boxes: list[Tensor],
    *,
    k: int = 1,
    no_object_weight: float = 0.1,
    class_weight: float = 1.0,
    l1_weight: float = 5.0,
    giou_weight: float = 2.0,
) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """DETR's set loss for a batch: match each image, then cross-entropy + L1 + GIoU on the pairs.

    ``logits (B, N_q, C + 1)``, ``boxes (B, N_q, 4)``; per image ``target_labels[b] (n_b,)`` and
    ``target_boxes[b] (n_b, 4)``. Unmatched queries are trained towards "no object" (class ``C``, its
    cross-entropy weighted by ``no_object_weight``); box terms are averaged over the matched pairs. ``k > 1``
    uses :func:`one_to_many_match`. Returns ``(loss, matches)``.
    """
    if not isinstance(logits, Tensor) or logits.ndim != 3:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"set_loss: logits must be (B, N_q, C + 1), got {got}")
    B, n_q, classes = logits.shape
    if not isinstance(boxes, Tensor) or boxes.shape != (B, n_q, 4):
        got = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"set_loss: boxes must be (B={B}, N_q={n_q}, 4), got {got}")
    if len(target_labels) != B or len(target_boxes) != B:
        raise ValueError(
            f"set_loss: need one target per image, got {len(target_labels)} and {len(target_boxes)} for B={B}"
        )
    weights = dict(class_weight=class_weight, l1_weight=l1_weight, giou_weight=giou_weight)
    counts = [len(t) for t in target_labels]
    with torch.no_grad():  # one cost matrix for the whole batch, (B N_q, sum n_b), cut into the images' blocks
        all_labels = torch.cat([t.to(logits.device) for t in target_labels])
        all_boxes = torch.cat([t.to(boxes) for t in target_boxes])
        cost = match_cost(logits.reshape(-1, classes), boxes.reshape(-1, 4), all_labels, all_boxes, **weights)
        costs = [c.cpu() for c in cost.reshape(B, n_q, -1).split(counts, dim=-1)]
    matches = [hungarian_match(costs[b][b]) if k == 1 else one_to_many_match(costs[b][b], k) for b in range(B)]
    offsets = torch.tensor([0, *counts]).cumsum(0)[:-1].tolist()  # where image b's objects start in all_labels
    image = torch.cat([torch.full_like(rows, b) for b, (rows, _) in enumerate(matches)]).to(logits.device)
    query = torch.cat([rows for rows, _ in matches]).to(logits.device)
    target = torch.cat([cols + offsets[b] for b, (_, cols) in enumerate(matches)]).to(logits.device)
    target_class = torch.full((B, n_q), classes - 1, dtype=torch.long, device=logits.device)
    target_class[image, query] = all_labels[target]
    class_weights = torch.ones(classes, dtype=logits.dtype, device=logits.device)
    class_weights[-1] = no_object_weight
    loss = class_weight * F.cross_entropy(logits.reshape(-1, classes), target_class.reshape(-1), weight=class_weights)
    if len(target):
        pred, true = boxes[image, query], all_boxes[target]  # (M, 4) matched pairs
        l1 = (pred - true).abs().sum(-1).mean()
        giou = torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(pred), box_cxcywh_to_xyxy(true)))
        loss = loss + l1_weight * l1 + giou_weight * (1 - giou).mean()
    return loss, matches


def sine_position_embedding(height: int, width: int, dim: int) -> Tensor:
    """DETR's fixed 2-D sine positions ``(height width, dim)``: half the channels encode the row, half the column,
    each as sines and cosines of the normalised coordinate at geometric frequencies (``dim`` divisible by 4)."""
    if dim % 4:
        raise ValueError(f"sine_position_embedding: dim must be divisible by 4, got {dim}")
    quarter = dim // 4
    freq = 10000 ** (-torch.arange(quarter, dtype=torch.float32) / quarter)  # (dim/4,)
    y = (torch.arange(height, dtype=torch.float32) + 0.5) / height * 2 * math.pi
    x = (torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 * math.pi
    ey = torch.cat([(y[:, None] * freq).sin(), (y[:, None] * freq).cos()], -1)  # (H, dim/2)
    ex = torch.cat([(x[:, None] * freq).sin(), (x[:, None] * freq).cos()], -1)  # (W, dim/2)
    return torch.cat([ey[:, None].expand(height, width, -1), ex[None].expand(height, width, -1)], -1).reshape(-1, dim)


class _EncoderLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, hidden: int) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(dim, num_heads)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        qk = x + pos  # DETR adds positions to queries and keys, not to values
        x = self.norm1(x + self.attn(qk, qk, x)[0])
        return self.norm2(x + self.mlp(x))


class _DecoderLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, hidden: int, cross: str, num_points: int) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, num_heads)
        self.cross = cross
        if cross == "dense":
            self.cross_attn: nn.Module = MultiHeadAttention(dim, num_heads)
        else:
            self.cross_attn = MultiScaleDeformableAttention(dim, num_heads, 1, num_points)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))

    def forward(
        self, tgt: Tensor, query_pos: Tensor, memory: Tensor, pos: Tensor, reference: Tensor, grid: tuple[int, int]
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        qk = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(qk, qk, tgt)[0])
        if self.cross == "dense":
            out, weights = self.cross_attn(tgt + query_pos, memory + pos, memory, need_weights=True)
            locations = None
        else:
            out, weights, locations = self.cross_attn(tgt, memory, reference, [grid], query_pos=query_pos)
        tgt = self.norm2(tgt + out)
        return self.norm3(tgt + self.mlp(tgt)), weights, locations


class DETR(nn.Module):
    """A small DETR :cite:`carion2020end` for ``(B, C_in, S, S)`` images.

    A convolutional stem turns the image into ``(S / P)^2`` tokens of width ``dim`` (a ``3 x 3`` convolution, then a
    ``P x P`` patch convolution); fixed sine positions; ``encoder_layers`` post-norm self-attention layers;
    ``num_queries`` learned object queries (DETR's decoder starts from zero content plus learned query positions)
    through ``decoder_layers`` layers of self-attention, cross-attention (``"dense"`` or ``"deformable"``) and a
    feed-forward block; a class head (``num_classes + 1``, the last is "no object") and a 3-layer box MLP with a
    sigmoid, both applied after every decoder layer (the auxiliary outputs DETR also trains). Each query has a
    reference point ``sigmoid(W p_i)`` from its position embedding ``p_i``; the box head predicts the centre as an
    offset from it in logit space, ``sigmoid(logit(ref) + delta)``, as Deformable DETR does :cite:`zhu2021deformable`
    (the original DETR predicts the box directly); the deformable cross-attention samples around the same point.

    ``forward(images)`` returns a dict: ``logits (B, N_q, C + 1)``, ``boxes (B, N_q, 4)`` (last layer),
    ``aux`` (a list of ``(logits, boxes)`` of the earlier layers) and ``cross_attention`` (the last layer's
    weights: ``(B, N_q, T)`` averaged over heads if dense, ``(B, N_q, H, 1, K)`` if deformable), and for
    ``"deformable"`` also ``reference_points (B, N_q, 2)`` and ``sampling_locations (B, N_q, H, 1, K, 2)``.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        image_size: int = 32,
        in_channels: int = 1,
        patch_size: int = 4,
        dim: int = 64,
        num_heads: int = 4,
        num_queries: int = 8,
        encoder_layers: int = 1,
        decoder_layers: int = 2,
        mlp_ratio: int = 2,
        cross_attention: Literal["dense", "deformable"] = "dense",
        num_points: int = 4,
    ) -> None:
        super().__init__()
        sizes = dict(num_classes=num_classes, image_size=image_size, in_channels=in_channels, patch_size=patch_size,
                     dim=dim, num_heads=num_heads, num_queries=num_queries, decoder_layers=decoder_layers,
                     mlp_ratio=mlp_ratio, num_points=num_points)  # fmt: skip
        for name, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ValueError(f"DETR: {name} must be a positive int, got {value!r}")
        if isinstance(encoder_layers, bool) or not isinstance(encoder_layers, numbers.Integral) or encoder_layers < 0:
            raise ValueError(f"DETR: encoder_layers must be a non-negative int, got {encoder_layers!r}")
        if image_size % patch_size:
            raise ValueError(f"DETR: patch_size={patch_size} must divide image_size={image_size}")
        if cross_attention not in ("dense", "deformable"):
            raise ValueError(f"DETR: cross_attention must be 'dense' or 'deformable', got {cross_attention!r}")
        if dim % 4 or dim % num_heads:
            raise ValueError(f"DETR: dim={dim} must be divisible by 4 and by num_heads={num_heads}")
        self.num_classes, self.image_size, self.in_channels = num_classes, image_size, in_channels
        self.grid = (image_size // patch_size, image_size // patch_size)
        self.cross = cross_attention
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, dim, patch_size, patch_size), nn.ReLU(), nn.Conv2d(dim, dim, 1)
        )
        self.register_buffer("pos", sine_position_embedding(*self.grid, dim), persistent=False)
        hidden = mlp_ratio * dim
        self.encoder = nn.ModuleList(_EncoderLayer(dim, num_heads, hidden) for _ in range(encoder_layers))
        self.query_pos = nn.Parameter(torch.randn(num_queries, dim))
        self.decoder = nn.ModuleList(
            _DecoderLayer(dim, num_heads, hidden, cross_attention, num_points) for _ in range(decoder_layers)
        )
        self.reference = nn.Linear(dim, 2)  # deformable: each query's reference point, sigmoid(W query_pos)
        self.class_head = nn.Linear(dim, num_classes + 1)
        self.box_head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, 4))

    def forward(self, images: Tensor) -> dict[str, object]:
        expected = (self.in_channels, self.image_size, self.image_size)
        if not isinstance(images, Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != expected:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"DETR: images must be (B, {', '.join(map(str, expected))}), got {got}")
        B = images.shape[0]
        memory = self.stem(images).flatten(2).transpose(1, 2)  # (B, T, D), T = (S/P)^2 tokens, raster order
        pos = self.pos.to(memory.dtype).expand(B, -1, -1)  # (B, T, D)
        for layer in self.encoder:
            memory = layer(memory, pos)
        query_pos = self.query_pos.to(memory.dtype).expand(B, -1, -1)  # (B, N_q, D)
        reference = self.reference(query_pos).sigmoid()  # (B, N_q, 2)
        tgt = torch.zeros_like(query_pos)
        outputs = []
        for layer in self.decoder:
            tgt, weights, locations = layer(tgt, query_pos, memory, pos, reference, self.grid)
            raw = self.box_head(tgt)  # (B, N_q, 4): the centre as an offset from the reference point, in logits
            centre = raw[..., :2] + torch.logit(reference, eps=1e-4)
            outputs.append((self.class_head(tgt), torch.cat([centre, raw[..., 2:]], -1).sigmoid()))
        logits, boxes = outputs[-1]
        result: dict[str, object] = {"logits": logits, "boxes": boxes, "aux": outputs[:-1], "cross_attention": weights}
        if self.cross == "deformable":
            result["reference_points"], result["sampling_locations"] = reference, locations
        return result


def average_precision(
    scores: list[Tensor],
    labels: list[Tensor],
    boxes: list[Tensor],
    target_labels: list[Tensor],
    target_boxes: list[Tensor],
    *,
    num_classes: int,
    iou_threshold: float = 0.5,
) -> tuple[float, list[float]]:
    """Mean average precision at one IoU threshold (PASCAL VOC's all-point interpolation).

    Per image ``b``: predictions ``scores[b] (m,)``, ``labels[b] (m,)``, ``boxes[b] (m, 4)`` and objects
    ``target_labels[b] (n,)``, ``target_boxes[b] (n, 4)``, boxes ``(cx, cy, w, h)``. For each class, predictions are
    taken in descending score over all images; one is a true positive when its IoU with a not-yet-claimed object of
    its class and image reaches ``iou_threshold``. AP is the area under the precision envelope of the
    precision-recall curve. Returns ``(mean over classes with objects, per-class AP)`` (``nan`` for a class without
    objects).
    """
    if not (len(scores) == len(labels) == len(boxes) == len(target_labels) == len(target_boxes)):
        raise ValueError("average_precision: scores, labels, boxes and the targets need one entry per image")
    per_class = []
    for c in range(num_classes):
        records = []  # (score, image, box)
        for b, (s, lab, box) in enumerate(zip(scores, labels, boxes, strict=True)):
            for i in torch.nonzero(lab == c).flatten().tolist():
                records.append((float(s[i]), b, box[i]))
        objects = {
            b: box_cxcywh_to_xyxy(tb[tl == c].double())
            for b, (tl, tb) in enumerate(zip(target_labels, target_boxes, strict=True))
        }
        total = sum(len(v) for v in objects.values())
        if total == 0:
            per_class.append(float("nan"))
            continue
        claimed = {b: torch.zeros(len(v), dtype=torch.bool) for b, v in objects.items()}
        hits = []
        for _, b, box in sorted(records, key=lambda r: -r[0]):
            hit = False
            if len(objects[b]):
                iou = box_iou(box_cxcywh_to_xyxy(box.double())[None], objects[b])[0].masked_fill(claimed[b], -1.0)
                best = int(iou.argmax())
                if iou[best] >= iou_threshold:
                    claimed[b][best] = hit = True
            hits.append(hit)
        tp = torch.tensor(hits, dtype=torch.float64).cumsum(0)
        recall = torch.cat([torch.zeros(1, dtype=torch.float64), tp / total])
        precision = torch.cat([torch.ones(1, dtype=torch.float64), tp / torch.arange(1, len(hits) + 1)])
        envelope = precision.flip(0).cummax(0).values.flip(0)  # best precision at this recall or beyond
        per_class.append(float(((recall[1:] - recall[:-1]) * envelope[1:]).sum()))
    valid = [a for a in per_class if not math.isnan(a)]
    return (sum(valid) / len(valid) if valid else float("nan")), per_class
