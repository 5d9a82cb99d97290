"""Pictures of attention: one weight matrix as a heatmap, and a layer x head grid of them.

An attention map is the matrix of weights ``A (T_q, T_k)`` of eq. (1) of *Attention Is All You Need*
(2017, :cite:`vaswani2017attention`): row ``i`` is the distribution over keys that query ``i`` reads,
so each row of a softmax map sums to 1. The book draws it with queries down the rows and keys along
the columns, always with a colour bar, so a reader can tell a sharp (near one-hot) row from a diffuse one.

* :func:`attention_heatmap` -- one ``(T_q, T_k)`` map on one ``Axes`` (chapter 01 onward).
* :func:`attention_grid` -- a ``(layers, heads, T_q, T_k)`` tensor, or a list of per-layer
  ``(heads, T_q, T_k)`` tensors, as a grid of heatmaps with one shared colour bar (chapter 04 onward).

Both accept PyTorch tensors (detached and moved to the CPU here) or NumPy arrays, and raise ``ValueError``
naming the argument and the shape seen when the input is not the documented shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["attention_heatmap", "attention_grid"]

DEFAULT_CMAP = "viridis"


def _as_array(weights: Any, name: str) -> np.ndarray:
    """A float64 NumPy copy of ``weights`` (tensor, array or nested sequence of numbers)."""
    if isinstance(weights, torch.Tensor):
        if weights.is_complex():
            raise TypeError(f"{name} must be real, got a complex tensor of shape {tuple(weights.shape)}")
        return weights.detach().to("cpu", torch.float64).numpy()
    try:
        array = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a torch.Tensor or a numeric array, got {type(weights).__name__}") from error
    return array


def _check_labels(labels: Sequence[Any] | None, length: int, name: str, axis: str) -> list[str] | None:
    if labels is None:
        return None
    labels = [str(label) for label in labels]
    if len(labels) != length:
        raise ValueError(f"{name} has {len(labels)} labels but the map has {length} {axis}")
    return labels


def attention_heatmap(
    weights: Any,
    *,
    x_labels: Sequence[Any] | None = None,
    y_labels: Sequence[Any] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    cmap: str = DEFAULT_CMAP,
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool = False,
    colorbar: bool = True,
    xlabel: str = "key",
    ylabel: str = "query",
) -> Axes:
    """Draw one attention map ``weights (T_q, T_k)`` as a heatmap: queries down, keys across.

    Args:
        weights: the map, a tensor or array of shape ``(T_q, T_k)``; row ``i`` = the weights query ``i``
            puts on each key.
        x_labels, y_labels: tick labels for the ``T_k`` keys and the ``T_q`` queries (e.g. the tokens).
        ax: the ``Axes`` to draw on; a new figure is made when omitted.
        title: the axes title (the book's convention: a title that states the finding).
        cmap, vmin, vmax: the colour map and its range (default: the map's own min and max).
        annotate: write each weight in its cell (for small maps worked by hand).
        colorbar: add a colour bar beside the axes (the default, and the book's convention).
        xlabel, ylabel: axis labels, ``"key"`` and ``"query"`` by default.

    Returns:
        The ``Axes``; its figure is ``ax.figure`` and the image is ``ax.images[0]``.
    """
    array = _as_array(weights, "weights")
    if array.ndim != 2:
        raise ValueError(f"weights must be a 2-D (T_q, T_k) map, got shape {tuple(array.shape)}")
    if 0 in array.shape:
        raise ValueError(f"weights must not be empty, got shape {tuple(array.shape)}")
    num_queries, num_keys = array.shape
    xs = _check_labels(x_labels, num_keys, "x_labels", "keys (columns)")
    ys = _check_labels(y_labels, num_queries, "y_labels", "queries (rows)")
    if ax is None:
        _, ax = plt.subplots(figsize=(min(1.0 + 0.45 * num_keys, 8.0), min(0.8 + 0.45 * num_queries, 7.0)))
    image = ax.imshow(array, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xs is not None:
        ax.set_xticks(range(num_keys), xs, rotation=90 if max(map(len, xs)) > 3 else 0)
    if ys is not None:
        ax.set_yticks(range(num_queries), ys)
    if title is not None:
        ax.set_title(title)
    if annotate:
        low, high = image.get_clim()
        middle = (low + high) / 2
        for i in range(num_queries):
            for j in range(num_keys):
                ax.text(
                    j,
                    i,
                    f"{array[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if array[i, j] > middle else "white",
                )
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label="attention weight")
    return ax


def attention_grid(
    weights: Any,
    *,
    layer_names: Sequence[Any] | None = None,
    head_names: Sequence[Any] | None = None,
    x_labels: Sequence[Any] | None = None,
    y_labels: Sequence[Any] | None = None,
    title: str | None = None,
    cmap: str = DEFAULT_CMAP,
    shared_scale: bool = True,
    cell_size: float = 2.2,
) -> Figure:
    """Draw a grid of attention maps, one row per layer and one column per head.

    Args:
        weights: a ``(layers, heads, T_q, T_k)`` tensor/array, or a list with one ``(heads, T_q, T_k)``
            tensor per layer (layers may differ in head count and map size; missing cells stay empty).
        layer_names, head_names: row and column titles (default ``"layer i"``, ``"head j"``).
        x_labels, y_labels: key and query tick labels, used when every map has matching sizes.
        title: the figure's title (``suptitle``).
        cmap: the colour map.
        shared_scale: one colour range for every cell (from 0, or the minimum if negative, to the overall
            maximum) and one shared colour bar; otherwise each cell has its own range and colour bar.
        cell_size: inches per cell.

    Returns:
        The ``Figure``; ``fig.axes`` holds the ``layers x heads`` grid row by row, then the colour bar(s).
    """
    layers = _grid_layers(weights)
    num_layers = len(layers)
    num_heads = max(layer.shape[0] for layer in layers)
    layer_titles = _check_labels(layer_names, num_layers, "layer_names", "layers")
    head_titles = _check_labels(head_names, num_heads, "head_names", "heads")
    fig, axes = plt.subplots(
        num_layers,
        num_heads,
        squeeze=False,
        layout="constrained",
        figsize=(cell_size * num_heads + (1.2 if shared_scale else 0.0), cell_size * num_layers),
    )
    low = min(0.0, min(float(layer.min()) for layer in layers))
    high = max(float(layer.max()) for layer in layers)
    image = None
    for row, layer in enumerate(layers):
        for col in range(num_heads):
            ax = axes[row, col]
            if col >= layer.shape[0]:
                ax.set_axis_off()
                continue
            if col == 0 and (num_layers > 1 or layer_titles):
                ylabel = f"{layer_titles[row] if layer_titles else f'layer {row}'}\nquery"
            else:
                ylabel = "query" if col == 0 else ""
            attention_heatmap(
                layer[col],
                ax=ax,
                cmap=cmap,
                colorbar=not shared_scale,
                vmin=low if shared_scale else None,
                vmax=high if shared_scale else None,
                x_labels=x_labels,
                y_labels=y_labels,
                xlabel="key" if row == num_layers - 1 else "",
                ylabel=ylabel,
            )
            image = ax.images[0]
            if row == 0:
                ax.set_title(head_titles[col] if head_titles else f"head {col}")
    if shared_scale and image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="attention weight", shrink=0.9)
    if title is not None:
        fig.suptitle(title)
    return fig


def _grid_layers(weights: Any) -> list[np.ndarray]:
    """Split ``weights`` into per-layer ``(heads, T_q, T_k)`` arrays, validating every shape."""
    if isinstance(weights, torch.Tensor | np.ndarray):
        array = _as_array(weights, "weights")
        if array.ndim != 4:
            hint = " (for one layer pass weights[None] or [weights])" if array.ndim == 3 else ""
            raise ValueError(f"weights must have shape (layers, heads, T_q, T_k), got {tuple(array.shape)}{hint}")
        layers = list(array)
    elif isinstance(weights, Sequence) and not isinstance(weights, str):
        layers = [_as_array(layer, f"weights[{i}]") for i, layer in enumerate(weights)]
        for i, layer in enumerate(layers):
            if layer.ndim != 3:
                raise ValueError(f"weights[{i}] must have shape (heads, T_q, T_k), got {tuple(layer.shape)}")
    else:
        raise TypeError(f"weights must be a 4-D tensor/array or a list of 3-D ones, got {type(weights).__name__}")
    if not layers:
        raise ValueError("weights must hold at least one layer, got 0")
    for i, layer in enumerate(layers):
        if 0 in layer.shape:
            raise ValueError(f"weights[{i}] must not be empty, got shape {tuple(layer.shape)}")
    return layers
