"""Routing attention (chapter 10): exact limits, the explicit-mask equivalence, k-means, and lucidrains parity."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.attention.functional import scaled_dot_product_attention
from attnbook.attention.routing import (
    KMeans,
    RoutingAttention,
    centroid_scores,
    cluster_masks,
    ema_update,
    kmeans_init,
    kmeans_step,
    routing_attention,
    sqrt_routing_attention,
)

F64 = torch.float64


def qkv(b=2, h=3, t=12, d=8, d_v=5, t_k=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    t_k = t if t_k is None else t_k
    return (
        torch.randn(b, h, t, d, generator=gen, dtype=F64),
        torch.randn(b, h, t_k, d, generator=gen, dtype=F64),
        torch.randn(b, h, t_k, d_v, generator=gen, dtype=F64),
    )


def unit(h, c, d, seed=1):
    return F.normalize(torch.randn(h, c, d, generator=torch.Generator().manual_seed(seed), dtype=F64), dim=-1)


@pytest.mark.parametrize("causal", [False, True])
def test_one_cluster_is_full_attention(causal):
    q, k, v = qkv()
    out = routing_attention(q, k, v, unit(3, 1, 8), causal=causal)
    torch.testing.assert_close(out, scaled_dot_product_attention(q, k, v, is_causal=causal), rtol=0, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("num_clusters", [2, 3, 5])
def test_routed_equals_masked_full_attention(causal, num_clusters):
    """Each cluster is a masked full attention; a query's output is the mean over the clusters it is in."""
    q, k, v = qkv(t=15, t_k=15)
    out, routes = routing_attention(q, k, v, unit(3, num_clusters, 8), causal=causal, need_routes=True)
    masks = cluster_masks(routes, 15, 15)  # (B, H, C, T_q, T_k)
    outs = [scaled_dot_product_attention(q, k, v, masks[:, :, c], is_causal=causal) for c in range(num_clusters)]
    member = masks.any(-1)  # (B, H, C, T_q): the query is in cluster c
    total = sum(o * member[:, :, c, :, None] for c, o in enumerate(outs))
    want = total / member.sum(2).clamp(min=1)[..., None]
    torch.testing.assert_close(out, want, rtol=0, atol=1e-12)


def test_partition_routing_is_one_masked_attention():
    """Tokens lying exactly on their centroids split into equal clusters: one same-cluster mask reproduces it."""
    h, c, d, w = 2, 4, 8, 3
    centroids = F.normalize(torch.eye(d, dtype=F64)[:c].expand(h, c, d).clone(), dim=-1)
    labels = torch.randperm(c * w, generator=torch.Generator().manual_seed(3)) % c  # (T,), each cluster w times
    gen = torch.Generator().manual_seed(4)
    x = centroids[0, labels] * (1 + torch.rand(c * w, 1, generator=gen, dtype=F64))  # (T, d), any length
    q = x.expand(1, h, -1, -1).clone()
    k = q.clone()
    v = torch.randn(1, h, c * w, 6, generator=gen, dtype=F64)
    out = routing_attention(q, k, v, centroids)
    same = labels[:, None] == labels[None, :]  # (T, T): the cluster-membership mask
    torch.testing.assert_close(out, scaled_dot_product_attention(q, k, v, same), rtol=0, atol=1e-12)


def test_routes_are_balanced_and_by_score():
    q, k, v = qkv(t=20, t_k=16)
    centroids = unit(3, 4, 8)
    _, routes = routing_attention(q, k, v, centroids, need_routes=True)
    assert routes.queries.shape == (2, 3, 4, 5) and routes.keys.shape == (2, 3, 4, 4)
    scores = centroid_scores(q, centroids)  # (B, H, T, C)
    picked = scores.gather(2, routes.queries.transpose(-1, -2))  # (B, H, w, C)
    threshold = picked.min(dim=2).values  # (B, H, C): every other query scores no higher
    left_out = torch.ones_like(scores, dtype=torch.bool).scatter_(2, routes.queries.transpose(-1, -2), False)
    assert ((scores <= threshold[:, :, None, :]) | ~left_out).all()


def test_unrouted_query_gets_zeros_and_memory_keys():
    q, k, v = qkv(t=8)
    out, routes = routing_attention(q, k, v, unit(3, 2, 8), window_size=1, need_routes=True)
    member = torch.zeros(2, 3, 8, dtype=torch.bool).scatter_(2, routes.queries.flatten(2), True)
    assert (out[~member] == 0).all() and (out[member] != 0).any()
    mem_k, mem_v = torch.randn(3, 2, 1, 8, dtype=F64), torch.randn(3, 2, 1, 5, dtype=F64)
    out = routing_attention(q, k, v, unit(3, 2, 8), causal=True, memory_key=mem_k, memory_value=mem_v)
    assert torch.isfinite(out).all()


def test_bad_input_raises():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="centroids must have shape"):
        routing_attention(q, k, v, unit(2, 3, 8))
    with pytest.raises(ValueError, match="window_size"):
        routing_attention(q, k, v, unit(3, 3, 8), window_size=0)
    with pytest.raises(ValueError, match=r"q must have shape \(B, H, T, d\)"):
        routing_attention(q[0], k[0], v[0], unit(3, 3, 8))
    with pytest.raises(ValueError, match="memory_key and memory_value"):
        routing_attention(q, k, v, unit(3, 3, 8), memory_key=torch.zeros(3, 3, 1, 8, dtype=F64))
    with pytest.raises(TypeError, match="centroids must be a torch.Tensor"):
        routing_attention(q, k, v, [[0.0]])
    with pytest.raises(ValueError, match="decay"):
        ema_update(unit(3, 3, 8), unit(3, 3, 8), 1.5)
    with pytest.raises(ValueError, match="num_clusters"):
        KMeans(2, 8, 0)


# k-means ------------------------------------------------------------------------------------------------------


def blobs(h=2, c=3, d=6, per=10, spread=0.05, seed=0):
    """Points around ``c`` random unit directions (B=1), and the directions."""
    gen = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(h, c, d, generator=gen, dtype=F64), dim=-1)
    labels = torch.arange(c).repeat_interleave(per)
    x = centres[:, labels] + spread * torch.randn(h, c * per, d, generator=gen, dtype=F64)
    return x[None], centres, labels


def test_kmeans_step_is_the_normalised_cluster_mean():
    x, centres, labels = blobs()
    new = kmeans_step(x, centres)
    xn = F.normalize(x[0], dim=-1)
    for c in range(3):
        torch.testing.assert_close(new[:, c], F.normalize(xn[:, labels == c].sum(1), dim=-1))


def test_kmeans_step_keeps_an_empty_cluster_and_ignores_order():
    x, centres, _ = blobs()
    far = torch.cat([centres, -centres.sum(1, keepdim=True) * 10], dim=1)  # a 4th centroid nobody is near
    new = kmeans_step(x, F.normalize(far, dim=-1))
    torch.testing.assert_close(new[:, 3], F.normalize(far, dim=-1)[:, 3])
    perm = torch.randperm(x.shape[2], generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(kmeans_step(x[:, :, perm], centres), kmeans_step(x, centres))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), clusters=st.integers(1, 6))
def test_lloyd_steps_never_lower_the_objective(seed, clusters):
    """Spherical k-means: assignment and mean steps each keep or raise sum_t max_c x_t . mu_c."""
    x = torch.randn(2, 2, 17, 4, generator=torch.Generator().manual_seed(seed), dtype=F64)
    centroids = kmeans_init(x, clusters, iters=0, generator=torch.Generator().manual_seed(seed))

    def objective(mu):
        return centroid_scores(x, mu).amax(-1).sum()

    for _ in range(4):
        new = kmeans_step(x, centroids)
        assert objective(new) >= objective(centroids) - 1e-12
        centroids = new


def test_ema_and_online_updates():
    old, new = unit(2, 3, 4, seed=1), unit(2, 3, 4, seed=2)
    torch.testing.assert_close(ema_update(old, new, 0.9), 0.9 * old + 0.1 * new)
    torch.testing.assert_close(ema_update(old, new, 1.0), old)
    torch.testing.assert_close(ema_update(old, new, 0.0), new)
    x, centres, _ = blobs(spread=0.02)
    km = KMeans(2, 6, 3, decay=0.5)
    km.update(x)  # initialises from the data
    assert bool(km.initialised)
    before = km.centroids.clone()
    step = kmeans_step(x, before)
    km.update(x)
    torch.testing.assert_close(km.centroids, 0.5 * before + 0.5 * step.float())
    # starting from the true directions, repeated online steps on the same data converge to the cluster means
    km.centroids.copy_(centres.float())
    for _ in range(40):
        km.update(x)
    torch.testing.assert_close(km.centroids.double(), kmeans_step(x, centres), atol=1e-6, rtol=0)


def test_module_updates_only_in_training():
    q, k, v = (t.float() for t in qkv())
    attn = RoutingAttention(3, 8, num_clusters=2)
    attn(q, k, v)
    first = attn.kmeans.centroids.clone()
    attn.eval()
    out = attn(q, k, v)
    torch.testing.assert_close(attn.kmeans.centroids, first)
    assert out.shape == (2, 3, 12, 5)


def test_sqrt_routing_shapes_and_limit():
    q, k, v = qkv(b=1, h=2, t=64, d=8, d_v=8)
    out = sqrt_routing_attention(q, k, v)
    assert out.shape == (1, 2, 64, 8) and torch.isfinite(out).all()
    q1, k1, v1 = qkv(b=1, h=2, t=1, d=8, d_v=8)  # one token: one cluster, exactly full attention
    torch.testing.assert_close(sqrt_routing_attention(q1, k1, v1), v1)


# parity with lucidrains' routing-transformer ------------------------------------------------------------------


@pytest.mark.parametrize("causal", [False, True])
def test_parity_with_lucidrains(causal):
    rt = pytest.importorskip("routing_transformer.routing_transformer")
    b, h, t, d, c, w = 2, 3, 16, 8, 4, 4
    ref = rt.KmeansAttention(num_clusters=c, window_size=w, num_heads=h, head_dim=d, causal=causal).double().eval()
    centroids = unit(h, c, d, seed=5)
    ref.kmeans.means.copy_(centroids)
    ref.kmeans.initted.fill_(True)
    q, k, v = qkv(b, h, t, d, d, seed=6)
    want, _ = ref(q, k, v)
    memory = dict(memory_key=ref.mem_key, memory_value=ref.mem_value) if causal else {}
    out, routes = routing_attention(q, k, v, centroids, w, causal=causal, need_routes=True, **memory)
    count = torch.zeros(b, h, t, dtype=F64).scatter_add_(
        2, routes.queries.flatten(2), torch.ones(b, h, c * w, dtype=F64)
    )
    torch.testing.assert_close(out * (count / (count + 1e-5))[..., None], want, rtol=0, atol=1e-12)  # its +1e-5


def test_parity_with_lucidrains_kmeans_step():
    rt = pytest.importorskip("routing_transformer.routing_transformer")
    x, centres, _ = blobs(spread=0.3)
    torch.testing.assert_close(rt.kmeans_iter(F.normalize(x, dim=-1), centres), kmeans_step(x, centres))


def test_cost_scales_as_t_to_the_1_5_in_memory():
    """Peak tensor memory with C = sqrt(T) grows as T^1.5 (both the T x C scores and the C blocks of w x w)."""
    from attnbook.profiling import peak_memory

    lengths, mem = [4096, 16384], []  # long enough that the T^1.5 terms outweigh the T d ones (q, k, v copies)
    for t in lengths:
        q, k, v = (x.float() for x in qkv(b=1, h=1, t=t, d=8, d_v=8))
        c = round(math.sqrt(t))
        mem.append(peak_memory(lambda q=q, k=k, v=v, c=c: routing_attention(q, k, v, unit(1, c, 8).float())))
    slope = math.log(mem[-1] / mem[0]) / math.log(lengths[-1] / lengths[0])
    assert abs(slope - 1.5) < 0.1, slope


def test_gradients_flow_to_q_k_v():
    """Routing is piecewise constant in q and k; between its jumps the layer is smooth, and gradcheck passes."""
    q, k, v = (t[:1, :1, :6, :3].clone().requires_grad_() for t in qkv())
    centroids = unit(1, 2, 3)
    for causal in (False, True):
        assert torch.autograd.gradcheck(
            lambda q, k, v, c=causal: routing_attention(q, k, v, centroids, causal=c), (q, k, v)
        )


def test_benchmark_callable_costs_t_to_the_1_5():
    from attnbook.profiling import peak_memory

    mem = []
    for t in (4096, 16384):
        q, k, v = (x.float() for x in qkv(b=1, h=1, t=t, d=8, d_v=8))
        mem.append(peak_memory(lambda q=q, k=k, v=v: sqrt_routing_attention(q, k, v)))
    slope = math.log(mem[1] / mem[0]) / math.log(4)
    assert abs(slope - 1.5) < 0.15, slope
