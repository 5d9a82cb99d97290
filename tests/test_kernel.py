"""attnbook.attention.kernel (Nadaraya-Watson) and attnbook.data.regression: brute-force parity, limits, properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnbook.attention.core import AttentionCore
from attnbook.attention.kernel import GaussianKernelScores, NadarayaWatson, gaussian_kernel_logits, nadaraya_watson
from attnbook.data.regression import RegressionTask, make_regression_task, regression_target

F64 = torch.float64
Z = torch.zeros


def brute_force(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, width: float) -> torch.Tensor:
    """The definition, one query and one key at a time: sum_j K(q-k_j) v_j / sum_j K(q-k_j), Gaussian K."""
    q_points = queries.reshape(-1, 1) if queries.ndim == 1 else queries
    k_points = keys.reshape(-1, 1) if keys.ndim == 1 else keys
    v_rows = values.reshape(-1, 1) if values.ndim == 1 else values
    out = []
    for q in q_points.tolist():
        kernels = [
            math.exp(-sum((a - b) ** 2 for a, b in zip(q, k, strict=True)) / (2 * width**2)) for k in k_points.tolist()
        ]
        total = sum(kernels)
        rows = v_rows.tolist()
        out.append([sum(c * v[d] for c, v in zip(kernels, rows, strict=True)) / total for d in range(v_rows.shape[1])])
    result = torch.tensor(out, dtype=F64)
    return result.squeeze(-1) if values.ndim == 1 else result


def _random(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


@pytest.mark.parametrize("width", [0.05, 0.3, 1.0, 7.0])
def test_scalar_points_match_brute_force(width):
    keys, values, queries = _random((30,), 0, 5.0), _random((30,), 1) - 0.5, _random((17,), 2, 5.0)
    out, weights = nadaraya_watson(queries, keys, values, width, return_weights=True)
    assert out.shape == (17,) and weights.shape == (17, 30)
    torch.testing.assert_close(out, brute_force(queries, keys, values, width), rtol=1e-12, atol=1e-12)


def test_vector_points_and_values_match_brute_force():
    keys, values, queries = _random((25, 3), 3), _random((25, 2), 4), _random((9, 3), 5)
    out = nadaraya_watson(queries, keys, values, 0.4)
    assert out.shape == (9, 2)
    torch.testing.assert_close(out, brute_force(queries, keys, values, 0.4), rtol=1e-12, atol=1e-12)


def test_scalar_inputs_with_vector_values():
    keys, values, queries = _random((10,), 21), _random((10, 3), 22), _random((4,), 23)
    out = nadaraya_watson(queries, keys, values, 0.2)
    assert out.shape == (4, 3)
    for d in range(3):
        torch.testing.assert_close(out[:, d], nadaraya_watson(queries, keys, values[:, d], 0.2))


def test_leading_batch_dims_are_independent_problems():
    keys, values, queries = _random((2, 3, 12, 2), 6), _random((2, 3, 12, 4), 7), _random((2, 3, 5, 2), 8)
    out = nadaraya_watson(queries, keys, values, 0.25)
    assert out.shape == (2, 3, 5, 4)
    for b in range(2):
        for h in range(3):
            torch.testing.assert_close(out[b, h], nadaraya_watson(queries[b, h], keys[b, h], values[b, h], 0.25))


def test_hard_limit_is_nearest_neighbour_exactly():
    keys, values, queries = _random((40,), 9, 5.0), torch.randn(40, dtype=F64), _random((30,), 10, 5.0)
    nearest = values[(queries[:, None] - keys[None, :]).abs().argmin(dim=-1)]
    out, weights = nadaraya_watson(queries, keys, values, 1e-4, return_weights=True)
    assert torch.equal(out, nearest)
    assert torch.equal(weights.max(dim=-1).values, torch.ones(30, dtype=F64))


def test_infinite_width_is_the_mean():
    keys, values, queries = _random((40,), 11, 5.0), torch.randn(40, dtype=F64), _random((30,), 12, 5.0)
    out, weights = nadaraya_watson(queries, keys, values, math.inf, return_weights=True)
    assert torch.equal(weights, torch.full((30, 40), 1 / 40, dtype=F64))
    torch.testing.assert_close(out, values.mean().expand(30), rtol=1e-12, atol=1e-12)


def test_narrow_widths_stay_finite_where_the_direct_ratio_underflows():
    keys = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=F64)
    out = nadaraya_watson(torch.tensor([1.2, 10.0], dtype=F64), keys, keys**2, 1e-3)
    torch.testing.assert_close(out, torch.tensor([1.0, 9.0], dtype=F64))


def _nearest_neighbour_brute_force(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The hard lookup, one query at a time in Python numbers: the mean value of the nearest keys (ties share)."""
    out = []
    for q in queries.tolist():
        distances = [(q - k) ** 2 for k in keys.tolist()]
        nearest = [v for d, v in zip(distances, values.tolist(), strict=True) if d == min(distances)]
        out.append(sum(nearest) / len(nearest))
    return torch.tensor(out, dtype=values.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("width", [1e-20, 1e-30, 1e-45, 1e-200, 1e-320, 5e-324])
def test_tiny_widths_give_the_nearest_neighbour_limit_exactly(dtype, width):
    # Keys on an integer grid (exact in both dtypes) with repeated keys and queries halfway between two keys.
    keys = torch.tensor([0.0, 1.0, 2.0, 3.0, 3.0, 7.0], dtype=dtype)
    values = torch.tensor([0.5, -1.0, 4.0, 9.0, 5.0, 2.0], dtype=dtype)
    queries = torch.tensor([1.25, 2.5, 3.0, 10.0, -4.0, 0.0, 5.0, 1e6], dtype=dtype)
    out, weights = nadaraya_watson(queries, keys, values, width, return_weights=True)
    expected = _nearest_neighbour_brute_force(queries, keys, values)
    assert torch.isfinite(out).all() and torch.isfinite(weights).all(), out
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-15)
    # Ties share the weight equally: q = 2.5 between keys 2 and 3 (twice), q = 3 on the repeated key 3.
    torch.testing.assert_close(weights[1], torch.tensor([0, 0, 1 / 3, 1 / 3, 1 / 3, 0], dtype=dtype))
    torch.testing.assert_close(weights[2], torch.tensor([0, 0, 0, 0.5, 0.5, 0], dtype=dtype))


def test_tiny_widths_match_brute_force_nearest_neighbour_on_random_points():
    keys, values, queries = _random((50, 3), 30, 5.0), torch.randn(50, 2, dtype=F64), _random((40, 3), 31, 5.0)
    nearest = values[torch.cdist(queries, keys).argmin(dim=-1)]  # (40, 2), no ties on random points
    for width in (1e-6, 1e-100, 1e-200, 1e-300, 5e-324):
        torch.testing.assert_close(nadaraya_watson(queries, keys, values, width), nearest, rtol=0, atol=0)
    for width in (1e-10, 1e-25, 1e-40):  # float32 too, with a tensor width
        out = nadaraya_watson(queries.float(), keys.float(), values.float(), torch.tensor(width))
        torch.testing.assert_close(out, nearest.float(), rtol=0, atol=0)


def test_tiny_widths_respect_the_mask_and_keep_gradients_finite():
    keys = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=F64)
    values = (keys**2).requires_grad_()
    loo = ~torch.eye(4, dtype=torch.bool)  # each key's own value is hidden: its nearest usable neighbours share
    out = nadaraya_watson(keys, keys, values, 1e-200, mask=loo)
    torch.testing.assert_close(out, torch.tensor([1.0, 2.0, 5.0, 4.0], dtype=F64))
    out.sum().backward()
    assert torch.isfinite(values.grad).all()
    width = torch.tensor(1e-30, dtype=F64, requires_grad=True)
    out = nadaraya_watson(torch.tensor([1.2, 2.5], dtype=F64), keys, keys**2, width)
    torch.testing.assert_close(out, torch.tensor([1.0, 6.5], dtype=F64))
    out.sum().backward()
    assert torch.isfinite(width.grad)


@settings(max_examples=40, deadline=None)
@given(
    n_keys=st.integers(1, 20),
    n_queries=st.integers(1, 8),
    log_width=st.floats(-3.0, 3.0),
    seed=st.integers(0, 2**16),
)
def test_properties_weights_are_a_distribution_and_pairs_are_unordered(n_keys, n_queries, log_width, seed):
    width = 10.0**log_width
    keys, values, queries = _random((n_keys,), seed, 4.0), _random((n_keys,), seed + 1), _random((n_queries,), seed + 2)
    out, weights = nadaraya_watson(queries, keys, values, width, return_weights=True)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(n_queries, dtype=F64))
    # A convex combination of the values lies between their extremes.
    assert (out >= values.min() - 1e-12).all() and (out <= values.max() + 1e-12).all()
    permutation = torch.randperm(n_keys, generator=torch.Generator().manual_seed(seed))
    shuffled = nadaraya_watson(queries, keys[permutation], values[permutation], width)
    torch.testing.assert_close(shuffled, out, rtol=1e-10, atol=1e-12)


def test_leave_one_out_mask_ignores_each_points_own_value():
    keys, values = _random((15,), 13, 3.0), torch.randn(15, dtype=F64)
    loo = ~torch.eye(15, dtype=torch.bool)
    before = nadaraya_watson(keys, keys, values, 0.3, mask=loo)
    changed = values.clone()
    changed[4] += 100.0
    after = nadaraya_watson(keys, keys, changed, 0.3, mask=loo)
    assert after[4] == before[4]
    assert not torch.equal(after, before)  # the other points do read value 4


def test_a_query_with_no_usable_key_predicts_zero_without_nan():
    keys, values = _random((5,), 14), torch.randn(5, dtype=F64, requires_grad=True)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False
    out = nadaraya_watson(_random((3,), 15), keys, values, 0.5, mask=mask)
    assert out[1] == 0 and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(values.grad).all()


def test_module_learns_a_sensible_width_by_leave_one_out():
    task = make_regression_task(n_train=40, n_test=50, noise=0.3, seed=3, dtype=F64)
    loo = ~torch.eye(40, dtype=torch.bool)
    widths = []
    for start in (2.0, 0.02):
        model = NadarayaWatson(start).double()
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(150):
            optimizer.zero_grad()
            loss = ((model(task.x_train, task.x_train, task.y_train, mask=loo) - task.y_train) ** 2).mean()
            loss.backward()
            optimizer.step()
        widths.append(model.width.item())
    assert abs(math.log(widths[0] / widths[1])) < 0.05, widths
    assert 5.0 / 40 < widths[0] < 1.0, widths

    def test_mse(width: float) -> float:
        return ((nadaraya_watson(task.x_test, task.x_train, task.y_train, width) - task.y_test) ** 2).mean().item()

    assert test_mse(widths[0]) < min(test_mse(2.0), test_mse(0.02))


def test_module_parameter_buffer_and_weights():
    learnable = NadarayaWatson(0.5)
    assert isinstance(learnable.log_width, torch.nn.Parameter)
    torch.testing.assert_close(learnable.width, torch.tensor(0.5))
    frozen = NadarayaWatson(0.5, learnable=False)
    assert list(frozen.parameters()) == [] and "log_width" in dict(frozen.named_buffers())
    assert "width=0.5" in repr(frozen)
    keys, queries = _random((6,), 16), _random((4,), 17)
    torch.testing.assert_close(
        learnable.double().weights(queries, keys),
        nadaraya_watson(queries, keys, torch.zeros(6, dtype=F64), 0.5, return_weights=True)[1],
    )


def test_gaussian_scores_part_in_the_attention_core_is_kernel_regression():
    q, k, v = _random((2, 3, 7, 4), 18), _random((2, 3, 9, 4), 19), _random((2, 3, 9, 5), 20)
    core = AttentionCore(scores=GaussianKernelScores(0.6, learnable=False)).double()
    assert not core.can_fuse()
    out, weights = core(q, k, v, need_weights=True)
    expected, expected_weights = nadaraya_watson(q, k, v, 0.6, return_weights=True)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(weights, expected_weights)
    assert [name for name, _ in GaussianKernelScores(0.6).named_parameters()] == ["kernel.log_width"]


def test_logits_are_negative_half_squared_distance_over_width_squared():
    logits = gaussian_kernel_logits(torch.tensor([0.0, 1.0]), torch.tensor([0.0, 2.0, 3.0]), 2.0)
    expected = -torch.tensor([[0.0, 4.0, 9.0], [1.0, 1.0, 4.0]]) / 8.0
    torch.testing.assert_close(logits, expected)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: nadaraya_watson([0.0], Z(3), Z(3), 1.0), TypeError, "queries must be a torch"),
        (lambda: nadaraya_watson(Z(2), torch.arange(3), Z(3), 1.0), TypeError, "keys must be a floating"),
        (lambda: nadaraya_watson(Z(2), Z(0), Z(0), 1.0), ValueError, "keys must not be empty"),
        (lambda: nadaraya_watson(torch.tensor(1.0), Z(3), Z(3), 1.0), ValueError, "queries must have shape"),
        (
            lambda: nadaraya_watson(Z(2, 3), Z(4, 2), Z(4, 1), 1.0),
            ValueError,
            r"queries and keys .* got queries \(2, 3\) and keys \(4, 2\)",
        ),
        (lambda: nadaraya_watson(Z(2), Z(3, dtype=F64), Z(3), 1.0), TypeError, "queries and keys must share a dtype"),
        (
            lambda: nadaraya_watson(Z(2), Z(3), Z(4), 1.0),
            ValueError,
            r"values must be .* got values \(4,\) and keys \(3,\)",
        ),
        (lambda: nadaraya_watson(Z(2), Z(3), Z(3, dtype=F64), 1.0), TypeError, "values must have the keys' dtype"),
        (lambda: nadaraya_watson(Z(2), Z(3), Z(3), 0.0), ValueError, "width must be > 0"),
        (lambda: nadaraya_watson(Z(2), Z(3), Z(3), math.nan), ValueError, "width must be > 0"),
        (
            lambda: nadaraya_watson(Z(2), Z(3), Z(3), torch.ones(2)),
            ValueError,
            r"width must be a single number, got a tensor of shape \(2,\)",
        ),
        (lambda: nadaraya_watson(Z(2), Z(3), Z(3), "wide"), TypeError, "width must be"),
        (
            lambda: nadaraya_watson(Z(2), Z(3), Z(3), 1.0, mask=torch.ones(2, 3)),
            TypeError,
            "mask must be a boolean tensor",
        ),
        (
            lambda: nadaraya_watson(Z(2), Z(3), Z(3), 1.0, mask=torch.ones(3, 3, dtype=torch.bool)),
            ValueError,
            r"mask of shape \(3, 3\) does not broadcast .* \(2, 3\)",
        ),
        (lambda: NadarayaWatson(-1.0), ValueError, "width must be > 0"),
        (lambda: NadarayaWatson(math.inf), ValueError, "width must be finite"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_regression_task_is_seeded_sorted_and_shaped():
    task = make_regression_task(n_train=30, n_test=11, noise=0.2, seed=7)
    assert isinstance(task, RegressionTask)
    assert [t.shape for t in task] == [(30,), (30,), (11,), (11,), (11,)]
    assert all(t.dtype == torch.float32 for t in task)
    assert torch.all(task.x_train[1:] >= task.x_train[:-1])
    assert task.x_train.min() >= 0 and task.x_train.max() <= 5
    torch.testing.assert_close(task.x_test, torch.linspace(0, 5, 11))
    torch.testing.assert_close(task.f_test, regression_target(task.x_test))
    again = make_regression_task(n_train=30, n_test=11, noise=0.2, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(task, again, strict=True))
    other = make_regression_task(n_train=30, n_test=11, noise=0.2, seed=8)
    assert not torch.equal(task.x_train, other.x_train)
    residual = task.y_train - regression_target(task.x_train)
    assert 0.05 < residual.std().item() < 0.5  # noise of standard deviation 0.2 is there
    clean = make_regression_task(n_train=30, n_test=11, noise=0.0, seed=7, dtype=F64)
    torch.testing.assert_close(clean.y_train, regression_target(clean.x_train))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_train": 0}, "n_train must be a positive int"),
        ({"n_test": 2.5}, "n_test must be a positive int"),
        ({"noise": -0.1}, "noise must be a finite number >= 0"),
        ({"seed": -1}, "seed must be a non-negative int"),
        ({"low": 1.0, "high": 1.0}, "low < high"),
    ],
)
def test_regression_task_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_regression_task(**kwargs)
    with pytest.raises(TypeError, match="x must be a floating torch.Tensor"):
        regression_target(torch.arange(3))
