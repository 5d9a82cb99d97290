"""attnbook.viz: heatmaps and layer x head grids draw what they are given, with colour bars, and reject bad shapes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from attnbook.viz import attention_grid, attention_heatmap  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _softmax_rows(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).softmax(dim=-1)


def _colorbar_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


@pytest.mark.parametrize("as_numpy", [False, True])
def test_heatmap_draws_the_map_with_a_colour_bar(as_numpy):
    weights = _softmax_rows((3, 5))
    ax = attention_heatmap(weights.numpy() if as_numpy else weights, title="rows sum to one")
    assert len(ax.images) == 1
    np.testing.assert_allclose(ax.images[0].get_array(), weights.numpy(), rtol=1e-6)
    assert ax.get_xlabel() == "key" and ax.get_ylabel() == "query"
    assert ax.get_title() == "rows sum to one"
    assert len(_colorbar_axes(ax.figure)) == 1


def test_heatmap_accepts_grad_tensors_labels_and_an_existing_axes():
    weights = _softmax_rows((2, 4)).requires_grad_()
    fig, given = plt.subplots()
    ax = attention_heatmap(
        weights, ax=given, x_labels=list("abcd"), y_labels=["q0", "q1"], annotate=True, colorbar=False
    )
    assert ax is given
    assert [t.get_text() for t in ax.get_xticklabels()] == list("abcd")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["q0", "q1"]
    assert len(ax.texts) == 8  # one annotation per cell
    assert _colorbar_axes(fig) == []


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), (0, 3)])
def test_heatmap_rejects_maps_that_are_not_2d(shape):
    with pytest.raises(ValueError, match=r"weights .*got shape \(" + ", ".join(map(str, shape))):
        attention_heatmap(torch.zeros(shape))


def test_heatmap_rejects_labels_of_the_wrong_length_and_non_numbers():
    with pytest.raises(ValueError, match="x_labels has 2 labels but the map has 3"):
        attention_heatmap(torch.ones(2, 3), x_labels=["a", "b"])
    with pytest.raises(ValueError, match="y_labels has 3 labels but the map has 2"):
        attention_heatmap(torch.ones(2, 3), y_labels=["a", "b", "c"])
    with pytest.raises(TypeError, match="weights must be a torch.Tensor or a numeric array"):
        attention_heatmap({"not": "a map"})


def test_grid_from_a_4d_tensor_has_one_heatmap_per_layer_and_head_and_one_colour_bar():
    weights = _softmax_rows((2, 3, 4, 5))
    fig = attention_grid(weights, layer_names=["enc", "dec"], title="two layers")
    grid = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(grid) == 6
    assert len(_colorbar_axes(fig)) == 1
    for index, ax in enumerate(grid):
        layer, head = divmod(index, 3)
        np.testing.assert_allclose(ax.images[0].get_array(), weights[layer, head].numpy(), rtol=1e-6)
        assert ax.images[0].get_clim() == pytest.approx((0.0, weights.max().item()))
    assert [ax.get_title() for ax in grid[:3]] == ["head 0", "head 1", "head 2"]
    assert grid[3].get_ylabel().startswith("dec")
    assert fig._suptitle.get_text() == "two layers"


def test_grid_from_a_list_of_layers_with_different_head_counts_and_own_scales():
    layers = [_softmax_rows((2, 3, 3), seed=1), _softmax_rows((1, 4, 6), seed=2)]
    fig = attention_grid(layers, shared_scale=False, head_names=["h0", "h1"])
    grid = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(grid) == 4
    assert [len(ax.images) for ax in grid] == [1, 1, 1, 0]  # the second layer's missing head is left empty
    assert not grid[3].axison
    assert grid[2].images[0].get_array().shape == (4, 6)
    assert len(_colorbar_axes(fig)) == 3


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        (torch.zeros(3, 4, 4), r"must have shape \(layers, heads, T_q, T_k\), got \(3, 4, 4\).*weights\[None\]"),
        (np.zeros((1, 1, 1, 1, 1)), r"weights must have shape \(layers, heads, T_q, T_k\), got \(1, 1, 1, 1, 1\)"),
        ([torch.zeros(2, 3, 3), torch.zeros(3, 3)], r"weights\[1\] must have shape \(heads, T_q, T_k\), got \(3, 3\)"),
        ([], "at least one layer"),
        (torch.zeros(1, 0, 2, 2), r"weights\[0\] must not be empty"),
    ],
)
def test_grid_rejects_bad_shapes_naming_the_argument(weights, match):
    with pytest.raises(ValueError, match=match):
        attention_grid(weights)


def test_grid_rejects_names_of_the_wrong_length():
    with pytest.raises(ValueError, match="layer_names has 1 labels but the map has 2 layers"):
        attention_grid(torch.ones(2, 1, 2, 2), layer_names=["only one"])
    with pytest.raises(ValueError, match="head_names has 3 labels but the map has 2 heads"):
        attention_grid(torch.ones(1, 2, 2, 2), head_names=["a", "b", "c"])
    with pytest.raises(TypeError, match="weights must be a 4-D tensor"):
        attention_grid(3.0)
