"""Routing attention: queries and keys routed to shared k-means clusters, attention inside each (chapter 10).

Paper: *Efficient Content-Based Sparse Attention with Routing Transformers* (Roy, Saffar, Vaswani and
Grangier, 2020, :cite:`roy2020efficient`). The structure follows the paper's reference code and lucidrains'
PyTorch port (``routing_transformer.KmeansAttention``, ``Kmeans``), which the tests match to 1e-12.

Per head, ``C`` centroids ``mu_1..mu_C`` (shape ``(H, C, d)``) are shared by queries and keys. Each query and
key is L2-normalised and scored against every centroid, ``r_ic = q_i/|q_i| . mu_c`` (and the same for keys).
*Balanced* routing keeps, for every cluster ``c``, the ``w`` queries and the ``w`` keys with the largest score
(``w = T / C`` by default), so every cluster holds exactly ``w`` of each and the work is a batch of ``C`` small
attentions:

.. math::
    O_{\\mathcal Q_c} = \\operatorname{softmax}\\!\\left(\\frac{Q_{\\mathcal Q_c} K_{\\mathcal K_c}^\\top}{\\sqrt d}
    + M_c\\right) V_{\\mathcal K_c}

with ``M_c`` the causal mask (query position >= key position) in the causal variant. A token routed to
several clusters receives the mean of its outputs; a token routed to none receives zeros. With ``C ~ sqrt(T)``
the cost is ``O(T^1.5 d)`` instead of ``O(T^2 d)``.

The centroids are learned by online (mini-batch) spherical k-means, not by gradient descent: each step assigns
the normalised vectors to their nearest centroid, takes the normalised mean of each cluster's members
(:func:`kmeans_step`) and moves the centroids towards it by an exponential moving average (:func:`ema_update`).

Shapes: ``q (B, H, T_q, d)``, ``k (B, H, T_k, d)``, ``v (B, H, T_k, d_v)``, ``centroids (H, C, d)``; output
``(B, H, T_q, d_v)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.functional import check_qkv, masked_softmax

__all__ = [
    "Routes",
    "centroid_scores",
    "balanced_routes",
    "cluster_masks",
    "routing_attention",
    "kmeans_step",
    "ema_update",
    "kmeans_init",
    "KMeans",
    "RoutingAttention",
    "sqrt_routing_attention",
]


class Routes(NamedTuple):
    """Which tokens each cluster holds: ``queries (B, H, C, w_q)`` and ``keys (B, H, C, w_k)`` (positions)."""

    queries: Tensor
    keys: Tensor


def _check_centroids(centroids: object, num_heads: int, head_dim: int, where: str) -> Tensor:
    if not isinstance(centroids, Tensor):
        raise TypeError(f"{where}: centroids must be a torch.Tensor, got {type(centroids).__name__}")
    if centroids.ndim != 3 or centroids.shape[0] != num_heads or centroids.shape[2] != head_dim:
        raise ValueError(
            f"{where}: centroids must have shape (H, C, d) = ({num_heads}, C, {head_dim}), got {tuple(centroids.shape)}"
        )
    if centroids.shape[1] == 0:
        raise ValueError(f"{where}: centroids must hold at least one cluster, got shape {tuple(centroids.shape)}")
    return centroids


def _check_4d(name: str, t: Tensor, where: str) -> None:
    if t.ndim != 4:
        raise ValueError(f"{where}: {name} must have shape (B, H, T, d), got {tuple(t.shape)}")


def _window(name: str, value: int | None, length: int, num_clusters: int, where: str) -> int:
    if value is None:
        return math.ceil(length / num_clusters)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int or None, got {value!r}")
    return min(value, length)  # a cluster cannot hold more tokens than there are


def centroid_scores(x: Tensor, centroids: Tensor) -> Tensor:
    """Routing scores ``x_t/|x_t| . mu_c``: ``x (B, H, T, d)``, ``centroids (H, C, d)`` -> ``(B, H, T, C)``."""
    _check_4d("x", x, "centroid_scores")
    _check_centroids(centroids, x.shape[1], x.shape[-1], "centroid_scores")
    return torch.einsum("bhtd,hcd->bhtc", F.normalize(x, dim=-1), centroids.to(x.dtype))


def balanced_routes(scores: Tensor, window_size: int) -> Tensor:
    """The ``window_size`` tokens with the largest score for each cluster: ``(B, H, T, C)`` -> ``(B, H, C, w)``."""
    if not 1 <= window_size <= scores.shape[-2]:
        raise ValueError(f"balanced_routes: window_size must be in [1, T={scores.shape[-2]}], got {window_size}")
    return scores.topk(window_size, dim=-2).indices.transpose(-1, -2)  # (B, H, C, w)


def cluster_masks(routes: Routes, q_len: int, k_len: int) -> Tensor:
    """The explicit masks of the routing: ``(B, H, C, T_q, T_k)``, True where query i and key j share cluster c."""
    b, h, c, _ = routes.queries.shape
    member_q = torch.zeros(b, h, c, q_len, dtype=torch.bool, device=routes.queries.device)
    member_k = torch.zeros(b, h, c, k_len, dtype=torch.bool, device=routes.keys.device)
    member_q.scatter_(-1, routes.queries, True)
    member_k.scatter_(-1, routes.keys, True)
    return member_q[..., :, None] & member_k[..., None, :]  # (B, H, C, T_q, T_k)


def _gather(x: Tensor, index: Tensor) -> Tensor:
    """Rows ``index (B, H, C, w)`` of ``x (B, H, T, e)`` -> ``(B, H, C, w, e)``."""
    b, h, c, w = index.shape
    flat = index.reshape(b, h, c * w, 1).expand(-1, -1, -1, x.shape[-1])  # (B, H, C*w, e)
    return x.gather(2, flat).reshape(b, h, c, w, x.shape[-1])


def routing_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    centroids: Tensor,
    window_size: int | None = None,
    key_window_size: int | None = None,
    *,
    causal: bool = False,
    scale: float | None = None,
    memory_key: Tensor | None = None,
    memory_value: Tensor | None = None,
    need_routes: bool = False,
) -> Tensor | tuple[Tensor, Routes]:
    """Attention inside the clusters of shared centroids :cite:`roy2020efficient` (see the module docstring).

    Args:
        q: queries ``(B, H, T_q, d)``; k: keys ``(B, H, T_k, d)``; v: values ``(B, H, T_k, d_v)``.
        centroids: ``(H, C, d)``, shared by queries and keys (scored against L2-normalised q and k).
        window_size: queries kept per cluster, ``ceil(T_q / C)`` by default (capped at ``T_q``).
        key_window_size: keys kept per cluster; by default ``window_size`` when that is given, else
            ``ceil(T_k / C)`` (capped at ``T_k``).
        causal: query at position i sees only keys at positions <= i (within its cluster).
        scale: logit scale, ``1/sqrt(d)`` by default.
        memory_key, memory_value: optional learned keys/values ``(H, C, M, d)`` / ``(H, C, M, d_v)`` that every
            query of cluster c also sees (never masked). The causal reference code adds one per cluster so no
            query is left without a key.
        need_routes: also return the :class:`Routes`.

    Returns:
        ``(B, H, T_q, d_v)``: for each query the mean of its outputs over the clusters it was routed to, zeros
        if it was routed to none (and zeros for a query that sees no key). With ``need_routes``, ``(out, routes)``.
    """
    where = "routing_attention"
    check_qkv(q, k, v, name=where)
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_4d(name, t, where)
    b, h, t_q, d = q.shape
    t_k = k.shape[2]
    centroids = _check_centroids(centroids, h, d, where)
    num_clusters = centroids.shape[1]
    w_q = _window("window_size", window_size, t_q, num_clusters, where)
    if key_window_size is None:
        key_window_size = window_size
    w_k = _window("key_window_size", key_window_size, t_k, num_clusters, where)
    if (memory_key is None) != (memory_value is None):
        raise ValueError(f"{where}: pass both memory_key and memory_value, or neither")

    routes = Routes(
        balanced_routes(centroid_scores(q, centroids), w_q), balanced_routes(centroid_scores(k, centroids), w_k)
    )
    q_c, k_c, v_c = _gather(q, routes.queries), _gather(k, routes.keys), _gather(v, routes.keys)  # (B, H, C, w, .)
    scores = torch.einsum("bhcid,bhcjd->bhcij", q_c, k_c) * (d**-0.5 if scale is None else scale)  # (B, H, C, w_q, w_k)
    mask = None
    if causal:
        mask = routes.queries[..., :, None] >= routes.keys[..., None, :]  # (B, H, C, w_q, w_k)
    if memory_key is not None:
        m = memory_key.shape[-2]
        if memory_key.shape != (h, num_clusters, m, d) or memory_value.shape[:-1] != (h, num_clusters, m):
            raise ValueError(
                f"{where}: memory_key must be (H, C, M, d) = ({h}, {num_clusters}, M, {d}) and memory_value "
                f"(H, C, M, d_v), got {tuple(memory_key.shape)} and {tuple(memory_value.shape)}"
            )
        mem_scores = torch.einsum("bhcid,hcmd->bhcim", q_c, memory_key.to(q.dtype)) * (
            d**-0.5 if scale is None else scale
        )  # (B, H, C, w_q, M)
        scores = torch.cat([mem_scores, scores], dim=-1)  # (B, H, C, w_q, M + w_k)
        v_c = torch.cat([memory_value.to(v.dtype).expand(b, -1, -1, -1, -1), v_c], dim=-2)  # (B, H, C, M + w_k, d_v)
        if mask is not None:
            mask = F.pad(mask, (m, 0), value=True)
    weights = masked_softmax(scores, mask)  # (B, H, C, w_q, w_k [+ M])
    out_c = weights @ v_c  # (B, H, C, w_q, d_v)

    d_v = v.shape[-1]
    flat = routes.queries.reshape(b, h, -1)  # (B, H, C*w_q)
    total = q.new_zeros(b, h, t_q, d_v).scatter_add(
        2, flat[..., None].expand(-1, -1, -1, d_v), out_c.reshape(b, h, -1, d_v)
    )
    count = q.new_zeros(b, h, t_q).scatter_add(2, flat, q.new_ones(flat.shape))  # clusters each query is in
    out = total / count.clamp(min=1)[..., None]  # (B, H, T_q, d_v)
    return (out, routes) if need_routes else out


def kmeans_step(x: Tensor, centroids: Tensor) -> Tensor:
    """One Lloyd step of spherical k-means over a mini-batch; the new centroids ``(H, C, d)``.

    ``x (B, H, T, d)`` is L2-normalised and each vector assigned to its highest-scoring centroid; a cluster's
    new centroid is the normalised sum of its members over the batch and the sequence. A cluster with no member
    keeps its centroid (the reference code does the same).
    """
    _check_4d("x", x, "kmeans_step")
    centroids = _check_centroids(centroids, x.shape[1], x.shape[-1], "kmeans_step")
    b, h, t, d = x.shape
    x = F.normalize(x, dim=-1)
    assign = centroid_scores(x, centroids).argmax(dim=-1)  # (B, H, T)
    flat = assign.transpose(0, 1).reshape(h, b * t)  # (H, B*T)
    sums = x.new_zeros(h, centroids.shape[1], d).scatter_add_(
        1, flat[..., None].expand(-1, -1, d), x.transpose(0, 1).reshape(h, b * t, d)
    )  # (H, C, d)
    counts = torch.zeros(h, centroids.shape[1], dtype=torch.long, device=x.device).scatter_add_(
        1, flat, torch.ones_like(flat)
    )  # (H, C)
    return torch.where((counts > 0)[..., None], F.normalize(sums, dim=-1), centroids.to(x.dtype))


def ema_update(centroids: Tensor, new: Tensor, decay: float) -> Tensor:
    """The exponential moving average ``decay * centroids + (1 - decay) * new`` (``decay`` in [0, 1])."""
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay <= 1.0:
        raise ValueError(f"ema_update: decay must be a number in [0, 1], got {decay!r}")
    if centroids.shape != new.shape:
        raise ValueError(f"ema_update: centroids {tuple(centroids.shape)} and new {tuple(new.shape)} differ in shape")
    return decay * centroids + (1.0 - decay) * new


def kmeans_init(x: Tensor, num_clusters: int, iters: int = 10, generator: torch.Generator | None = None) -> Tensor:
    """Initial centroids ``(H, C, d)``: ``C`` random normalised vectors of ``x (B, H, T, d)``, then ``iters`` steps."""
    _check_4d("x", x, "kmeans_init")
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, int) or num_clusters < 1:
        raise ValueError(f"kmeans_init: num_clusters must be a positive int, got {num_clusters!r}")
    b, h, t, d = x.shape
    pool = F.normalize(x, dim=-1).transpose(0, 1).reshape(h, b * t, d)  # (H, B*T, d)
    if b * t >= num_clusters:
        pick = torch.randperm(b * t, generator=generator)[:num_clusters]
    else:
        pick = torch.randint(0, b * t, (num_clusters,), generator=generator)
    centroids = pool[:, pick.to(x.device)]  # (H, C, d)
    for _ in range(iters):
        centroids = kmeans_step(x, centroids)
    return centroids


class KMeans(nn.Module):
    """Online spherical k-means for ``num_heads`` heads, ``num_clusters`` centroids of width ``head_dim``.

    The centroids are a buffer, not a parameter: :meth:`update` sets them from the first batch it sees
    (:func:`kmeans_init`) and afterwards moves them by ``ema_update(centroids, kmeans_step(x, centroids), decay)``.
    """

    def __init__(self, num_heads: int, head_dim: int, num_clusters: int, decay: float = 0.999) -> None:
        super().__init__()
        for name, value in (("num_heads", num_heads), ("head_dim", head_dim), ("num_clusters", num_clusters)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"KMeans: {name} must be a positive int, got {value!r}")
        ema_update(torch.zeros(1), torch.zeros(1), decay)  # validates decay
        self.decay = float(decay)
        self.register_buffer("centroids", F.normalize(torch.randn(num_heads, num_clusters, head_dim), dim=-1))
        self.register_buffer("initialised", torch.tensor(False))

    @torch.no_grad()
    def update(self, x: Tensor, init_iters: int = 10) -> Tensor:
        """One online step on ``x (B, H, T, d)`` (the first call initialises); returns the new centroids."""
        x = x.detach()
        if not bool(self.initialised):
            self.centroids.copy_(kmeans_init(x, self.centroids.shape[1], init_iters))
            self.initialised.fill_(True)
        else:
            self.centroids.copy_(ema_update(self.centroids, kmeans_step(x, self.centroids), self.decay))
        return self.centroids

    def forward(self, x: Tensor) -> Tensor:
        """Routing scores ``(B, H, T, C)`` of ``x (B, H, T, d)``."""
        return centroid_scores(x, self.centroids)


class RoutingAttention(nn.Module):
    """Routing attention over split heads: ``(q, k, v) (B, H, T, d)`` -> ``(B, H, T_q, d_v)``.

    In training mode each call first moves the shared centroids with one online k-means step on the queries and
    keys together (detached: the centroids get no gradient); in ``eval()`` mode they stay fixed.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        num_clusters: int,
        window_size: int | None = None,
        *,
        causal: bool = False,
        decay: float = 0.999,
    ) -> None:
        super().__init__()
        self.kmeans = KMeans(num_heads, head_dim, num_clusters, decay)
        self.window_size = window_size
        self.causal = causal

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self.training:
            self.kmeans.update(torch.cat([q, k], dim=2))  # queries and keys share the centroids
        return routing_attention(q, k, v, self.kmeans.centroids, self.window_size, self.window_size, causal=self.causal)  # type: ignore[return-value]


def sqrt_routing_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False, iters: int = 2) -> Tensor:
    """Routing attention with ``C = round(sqrt(T_k))`` clusters fitted to these q and k (for benchmarks).

    The centroids come from :func:`kmeans_init` on the normalised queries and keys (``iters`` Lloyd steps,
    seeded, so a call is deterministic); the cost stays ``O(T^1.5 d)``. Shapes as :func:`routing_attention`.
    """
    check_qkv(q, k, v, name="sqrt_routing_attention")
    _check_4d("q", q, "sqrt_routing_attention")
    num_clusters = max(1, round(math.sqrt(k.shape[-2])))
    generator = torch.Generator().manual_seed(0)
    centroids = kmeans_init(torch.cat([q, k], dim=2).detach(), num_clusters, iters, generator)
    return routing_attention(q, k, v, centroids, causal=causal)  # type: ignore[return-value]
