"""Reading a trained Vision Transformer's attention: attention rollout and attention against patch distance (ch. 13).

**Attention rollout** (Abnar and Zuidema, 2020, :cite:`abnar2020quantifying`) estimates how much each input token
contributes to each token after ``L`` layers. A layer's output is its input plus the attention's output, so the
layer's "mixing" matrix is taken as the heads' mean attention plus the identity of the residual path, rows
renormalised; the layers compose by matrix product::

    Â_l = normalise_rows(alpha * mean_h A_l,h + (1 - alpha) * I)        (T, T), alpha = 1/2 by default
    R   = Â_L Â_(L-1) ... Â_1                                          (T, T)

Row ``i`` of ``R`` is a distribution over the input tokens (each factor is row-stochastic, and so is their
product); for a ViT, the class token's row over the patches is the rollout map. ``alpha`` weights attention
against the residual; with identity attention every factor is ``I`` and so is ``R``.

**Attention against distance** (the visual-analytics view of :cite:`li2023how`): for each head, the attention
mass a query patch gives to the patches at each spatial distance on the patch grid, averaged over queries and
images. Local heads put their mass at distance 0-1; global heads spread it.

Shapes: attention weights ``(B, H, T, T)`` per layer (a list, or a ``(L, B, H, T, T)`` tensor); ``T = P + N``
tokens, ``P`` prefix tokens (the class token) then ``N = rows * cols`` patch tokens in raster order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["attention_rollout", "attention_by_distance", "patch_distances"]


def _stack_layers(weights: Sequence[Tensor] | Tensor, name: str) -> Tensor:
    if isinstance(weights, Tensor):
        stacked = weights
    elif isinstance(weights, Sequence) and weights and all(isinstance(w, Tensor) for w in weights):
        shapes = {tuple(w.shape) for w in weights}
        if len(shapes) != 1:
            raise ValueError(f"{name}: every layer's weights must have one shape (B, H, T, T), got {sorted(shapes)}")
        stacked = torch.stack(list(weights))
    else:
        kind = type(weights).__name__
        raise TypeError(f"{name}: weights must be a non-empty list of tensors or a tensor, got {kind}")
    if stacked.ndim != 5 or stacked.shape[-1] != stacked.shape[-2]:
        shape = tuple(stacked.shape)
        raise ValueError(f"{name}: weights must be (L, B, H, T, T) or a list of (B, H, T, T), got {shape}")
    if not stacked.is_floating_point():
        raise TypeError(f"{name}: weights must be floating point, got {stacked.dtype}")
    return stacked  # (L, B, H, T, T)


def attention_rollout(weights: Sequence[Tensor] | Tensor, *, alpha: float = 0.5) -> Tensor:
    """Attention rollout :cite:`abnar2020quantifying`: ``R = Â_L ... Â_1`` with ``Â_l`` the heads' mean plus identity.

    Args:
        weights: per-layer attention weights, a list of ``(B, H, T, T)`` (first layer first) or ``(L, B, H, T, T)``.
        alpha: weight of the attention against the residual identity, in ``[0, 1]`` (``1/2`` in the paper).

    Returns:
        ``(B, T, T)``: row ``i`` is the share of each input token in token ``i`` after the last layer (rows sum to 1
        whenever the weights' rows do).
    """
    stacked = _stack_layers(weights, "attention_rollout")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"attention_rollout: alpha must be a number in [0, 1], got {alpha!r}")
    T = stacked.shape[-1]
    eye = torch.eye(T, dtype=stacked.dtype, device=stacked.device)
    mixed = alpha * stacked.mean(dim=2) + (1.0 - alpha) * eye  # (L, B, T, T): heads averaged, residual added
    mixed = mixed / mixed.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(mixed.dtype).tiny)  # rows renormalised
    rollout = mixed[0]  # (B, T, T)
    for layer in mixed[1:]:
        rollout = layer @ rollout  # later layers act on the left: (B, T, T)
    return rollout


def patch_distances(grid: tuple[int, int], *, device: torch.device | None = None) -> Tensor:
    """Euclidean distances between the patches of a ``rows x cols`` grid in raster order, ``(N, N)`` float."""
    if (
        not isinstance(grid, (tuple, list))
        or len(grid) != 2
        or not all(isinstance(g, int) and not isinstance(g, bool) and g > 0 for g in grid)
    ):
        raise ValueError(f"grid must be (rows, cols) of positive ints, got {grid!r}")
    rows, cols = torch.meshgrid(
        torch.arange(grid[0], device=device), torch.arange(grid[1], device=device), indexing="ij"
    )
    coords = torch.stack([rows.flatten(), cols.flatten()], dim=-1).double()  # (N, 2), raster order
    return torch.cdist(coords, coords)  # (N, N)


def attention_by_distance(
    weights: Tensor, grid: tuple[int, int], *, num_prefix_tokens: int = 1
) -> tuple[Tensor, Tensor]:
    """The attention mass each head gives to patches at each spatial distance, averaged over queries and images.

    Only patch-to-patch attention counts (the rows and columns of the ``num_prefix_tokens`` class tokens are
    dropped); a query's mass is not renormalised, so a head that looks at the class token gives less to patches.

    Args:
        weights: one layer's attention ``(B, H, T, T)`` with ``T = num_prefix_tokens + rows * cols``.
        grid: ``(rows, cols)`` of the patch grid.

    Returns:
        ``(distances (K,), mass (H, K))``: the ``K`` distinct patch distances in increasing order, and per head the
        mean over images and query patches of the total weight on the key patches at that distance.
    """
    if not isinstance(weights, Tensor) or weights.ndim != 4 or weights.shape[-1] != weights.shape[-2]:
        shape = tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__
        raise ValueError(f"attention_by_distance: weights must be (B, H, T, T), got {shape}")
    dist = patch_distances(grid, device=weights.device)  # (N, N)
    n = dist.shape[0]
    if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
        raise ValueError(f"attention_by_distance: num_prefix_tokens must be an int >= 0, got {num_prefix_tokens!r}")
    if weights.shape[-1] != num_prefix_tokens + n:
        raise ValueError(
            f"attention_by_distance: weights have T = {weights.shape[-1]} tokens, but grid {tuple(grid)} and "
            f"num_prefix_tokens={num_prefix_tokens} make {num_prefix_tokens + n}"
        )
    patches = weights[..., num_prefix_tokens:, num_prefix_tokens:].double()  # (B, H, N, N)
    distances, bucket = torch.unique(dist.round(decimals=9), return_inverse=True)  # (K,), (N, N) in 0..K-1
    onehot = torch.nn.functional.one_hot(bucket, len(distances)).double()  # (N, N, K)
    mass = torch.einsum("bhij,ijk->bhik", patches, onehot)  # (B, H, N, K): a query's mass at each distance
    return distances, mass.mean(dim=(0, 2)).to(weights.dtype)  # (K,), (H, K)
