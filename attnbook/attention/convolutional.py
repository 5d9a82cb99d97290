"""Convolution meets attention: gated positional self-attention, large-kernel attention, attentive convolution and
hyper-kernels (chapter 14).

**ConViT's gated positional self-attention (GPSA)** :cite:`dascoli2021convit`. On a grid of patches, head ``h``
mixes a content softmax and a positional softmax with a learned gate ``sigma(lambda_h)``::

    A_h = (1 - sigma(lambda_h)) softmax(Q_h K_h^T / sqrt(d)) + sigma(lambda_h) softmax(r @ v_h)

where ``r_ij = (dx, dy, dx^2 + dy^2)`` is the offset from query patch ``i`` to key patch ``j`` (key minus query,
``x`` the column) and ``v_h`` (with a bias that cancels in the softmax) is the head's positional projection. The
*local initialisation* ``v_h = -alpha (-2 Delta_x, -2 Delta_y, 1)`` makes ``r @ v_h = -alpha |delta - Delta_h|^2 +
const``: head ``h`` attends around the offset ``Delta_h``, and ``k x k`` heads together cover a ``k x k`` kernel.
:class:`GatedPositionalCore` is the pluggable core (positional projection ``pos_proj`` and gates
``gating_param``, named as in timm's ``GPSA``); :class:`GPSA` is multi-head attention with that core
(:class:`attnbook.models.convit.ConViT` stacks GPSA blocks into a classifier).

**VAN's large-kernel attention (LKA)** :cite:`guo2022visual`. A large depth-wise kernel decomposed into a small
depth-wise convolution, a depth-wise *dilated* convolution and a ``1 x 1`` convolution; the result multiplies the
input (``out = x * attn``: attention without a softmax). :class:`LargeKernelAttention` and the block's token
mixer :class:`VANAttention` follow the official code's names (``conv0``, ``conv_spatial``, ``conv1``;
``proj_1``, ``spatial_gating_unit``, ``proj_2``). :func:`lka_effective_kernel` composes the two depth-wise
kernels into the one large kernel they equal away from the borders.

**Attentive convolution (ATConv)** :cite:`attentive2025`. A depth-wise ``k x k`` kernel generated per sample and
channel from the input (*adaptive routing*: ``1 x 1`` projection, average over ``k^2`` strips of the flattened
image, activation, a ``k^2 -> k^2`` linear map), minus ``sigma(lambda_c)`` times its own mean (*lateral
inhibition*), applied to a projection of the input (:class:`AttentiveConv`, :func:`per_sample_depthwise_conv2d`).

**HyperZ.Z.W hyper-kernels** :cite:`zhang2024hyperz`. A *slow* coordinate network (a multiplicative filter
network with sinusoidal filters, :class:`CoordinateKernelNet`) writes a kernel as a function of the tap's
coordinates in ``[-1, 1]^2``; the *fast* network makes it context-dependent by sliding it over the hidden
activations ``Z`` and multiplying the result into ``Z`` (:class:`HyperZZW`, a reconstruction: see its docstring).

Shapes: GPSA works on tokens ``(B, T, E)`` with ``T = rows * cols`` in raster order; the convolutional
mechanisms on feature maps ``(B, C, H, W)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.core import AttentionCore, MultiHeadAttention

__all__ = [
    "relative_offsets",
    "kernel_offsets",
    "GatedPositionalCore",
    "GPSA",
    "load_timm_gpsa",
    "local_init",
    "LargeKernelAttention",
    "VANAttention",
    "lka_effective_kernel",
    "per_sample_depthwise_conv2d",
    "AttentiveConv",
    "CoordinateKernelNet",
    "HyperZZW",
]


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def _grid(grid: int | tuple[int, int]) -> tuple[int, int]:
    rows, cols = (grid, grid) if isinstance(grid, numbers.Integral) and not isinstance(grid, bool) else tuple(grid)
    return _positive_int("grid rows", rows), _positive_int("grid cols", cols)


def _check_map(x: object, channels: int, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name}: x must have shape (B, {channels}, H, W), got {tuple(x.shape)}")


# --------------------------------------------------------------------------------------------------------------------
# ConViT: gated positional self-attention
# --------------------------------------------------------------------------------------------------------------------


def relative_offsets(grid: int | tuple[int, int], *, dtype: torch.dtype | None = None, device=None) -> Tensor:
    """``r_ij = (dx, dy, dx^2 + dy^2)`` for every pair of patches of a ``rows x cols`` grid: ``(T, T, 3)``.

    Patches are in raster order (``t = row * cols + col``); ``dx = col_j - col_i`` and ``dy = row_j - row_i`` are
    the offset of key ``j`` from query ``i``, the layout of timm's ``GPSA.get_rel_indices``.
    """
    rows, cols = _grid(grid)
    row = torch.arange(rows, device=device).repeat_interleave(cols)  # (T,)
    col = torch.arange(cols, device=device).repeat(rows)  # (T,)
    dx = (col[None, :] - col[:, None]).to(dtype or torch.get_default_dtype())  # (T, T)
    dy = (row[None, :] - row[:, None]).to(dx.dtype)
    return torch.stack([dx, dy, dx**2 + dy**2], dim=-1)  # (T, T, 3)


def kernel_offsets(num_heads: int) -> Tensor:
    """The offset ``Delta_h = (Delta_x, Delta_y)`` each head covers at local initialisation: ``(H, 2)``.

    ``H = k^2`` heads tile a ``k x k`` kernel centred on the query (centre ``(k - 1) / 2``, so an even ``k`` has
    half-integer offsets). Head ``h = a + k b`` gets ``Delta_y = a - centre`` and ``Delta_x = b - centre``, the
    order of timm's ``GPSA.local_init``.
    """
    num_heads = _positive_int("num_heads", num_heads)
    k = math.isqrt(num_heads)
    if k * k != num_heads:
        raise ValueError(
            f"local initialisation needs a square number of heads (k x k kernel), got num_heads={num_heads}"
        )
    centre = (k - 1) / 2
    a, b = torch.arange(num_heads) % k, torch.arange(num_heads) // k
    return torch.stack([b - centre, a - centre], dim=-1).to(torch.get_default_dtype())  # (H, 2)


class GatedPositionalCore(AttentionCore):
    """The GPSA core: content and positional softmaxes mixed by a sigmoid gate per head.

    ``A_h = (1 - sigma(lambda_h)) softmax(q_h k_h^T * scale) + sigma(lambda_h) softmax(r @ W_pos[h] + b_pos[h])``,
    ``out_h = A_h v_h``, on a fixed ``rows x cols`` grid (``T = rows * cols`` tokens in raster order).

    Parameters: ``pos_proj`` (``Linear(3, H)``) and ``gating_param`` (``lambda``, initialised to 1 as in the paper).
    :meth:`local_init` sets ``pos_proj`` so that head ``h`` attends around :func:`kernel_offsets` ``[h]`` with
    strength ``locality_strength``. ``weights`` (returned with ``need_weights``) is the mixed ``A``.
    Masks are refused: GPSA attends over a whole image.
    """

    def __init__(self, num_heads: int, grid: int | tuple[int, int], dropout: float = 0.0) -> None:
        super().__init__(dropout=dropout, backend="manual")
        self.num_heads = _positive_int("num_heads", num_heads)
        self.grid = _grid(grid)
        self.pos_proj = nn.Linear(3, self.num_heads)
        self.gating_param = nn.Parameter(torch.ones(self.num_heads))
        self.register_buffer("rel_indices", relative_offsets(self.grid), persistent=False)

    def can_fuse(self) -> bool:
        return False

    @torch.no_grad()
    def local_init(self, locality_strength: float = 1.0) -> None:
        """``W_pos[h] = alpha (2 Delta_x, 2 Delta_y, -1)``: head ``h``'s positional logits are
        ``-alpha |delta - Delta_h|^2`` up to a constant, peaked at its kernel offset (:func:`kernel_offsets`)."""
        if not locality_strength > 0:
            raise ValueError(f"locality_strength must be positive, got {locality_strength!r}")
        offsets = kernel_offsets(self.num_heads).to(self.pos_proj.weight)  # (H, 2)
        weight = torch.cat([2 * offsets, -torch.ones_like(offsets[:, :1])], dim=1)  # (H, 3)
        self.pos_proj.weight.copy_(locality_strength * weight)

    def gates(self) -> Tensor:
        """``sigma(lambda_h)``, the weight each head gives its positional attention: ``(H,)``."""
        return torch.sigmoid(self.gating_param)

    def positional_weights(self) -> Tensor:
        """``softmax_j(r_ij @ W_pos[h] + b_pos[h])``: ``(H, T, T)``, the same for every input."""
        logits = self.pos_proj(self.rel_indices.to(self.pos_proj.weight.dtype))  # (T, T, H)
        return logits.permute(2, 0, 1).softmax(dim=-1)  # (H, T, T)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None = None,
        *,
        is_causal: bool = False,
        need_weights: bool = False,
        q_pos: Tensor | None = None,
        k_pos: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``q, k (B, H, T, d)``, ``v (B, H, T, d_v)`` -> ``(out (B, H, T, d_v), A (B, H, T, T) or None)``."""
        if mask is not None or is_causal or q_pos is not None or k_pos is not None:
            raise ValueError(
                "GatedPositionalCore attends over the whole grid: mask, is_causal and q_pos/k_pos are not supported"
            )
        T = self.grid[0] * self.grid[1]
        if q.ndim != 4 or q.shape[1] != self.num_heads or q.shape[2] != T or k.shape[2] != T:
            raise ValueError(
                f"GatedPositionalCore: q and k must be (B, {self.num_heads}, {T}, d) for a {self.grid[0]} x "
                f"{self.grid[1]} grid, got q{tuple(q.shape)}, k{tuple(k.shape)}"
            )
        content = (self.scores(q, k)).softmax(dim=-1)  # (B, H, T, T)
        positional = self.positional_weights().to(content.dtype)  # (H, T, T)
        gate = self.gates().to(content.dtype)[:, None, None]  # (H, 1, 1)
        weights = (1 - gate) * content + gate * positional  # (B, H, T, T); rows already sum to 1
        attn = F.dropout(weights, self.dropout, self.training) if self.dropout else weights
        return attn @ v, (weights if need_weights else None)  # (B, H, T, d_v)


class GPSA(MultiHeadAttention):
    """Gated positional self-attention :cite:`dascoli2021convit`: multi-head attention with a
    :class:`GatedPositionalCore` over a ``rows x cols`` grid of tokens.

    ``forward(x (B, T, E)) -> (out (B, T, E), weights)`` as :class:`MultiHeadAttention` (self-attention only).
    :meth:`local_init` is ConViT's initialisation: the value projection is the identity and the heads cover a
    convolution kernel (:func:`kernel_offsets`), so at ``lambda -> inf`` the layer is a convolution.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        grid: int | tuple[int, int],
        *,
        bias: bool = True,
        dropout: float = 0.0,
        locality_strength: float | None = 1.0,
    ) -> None:
        super().__init__(embed_dim, num_heads, bias=bias, core=GatedPositionalCore(num_heads, grid, dropout))
        if locality_strength is not None:
            self.local_init(locality_strength)

    @torch.no_grad()
    def local_init(self, locality_strength: float = 1.0) -> None:
        """``W_V = I`` and each head's positional attention at its kernel offset with strength ``alpha``."""
        local_init(self, locality_strength)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None, **kwargs):
        if key is not None or value is not None:
            raise ValueError("GPSA is self-attention on one grid of tokens: pass only query (B, T, E)")
        return super().forward(query, **kwargs)


@torch.no_grad()
def local_init(attention: MultiHeadAttention, locality_strength: float = 1.0) -> None:
    """ConViT's local initialisation of a multi-head attention whose core is a :class:`GatedPositionalCore`."""
    if not isinstance(attention.core, GatedPositionalCore):
        raise TypeError(f"local_init needs a GatedPositionalCore, got {type(attention.core).__name__}")
    attention.v_proj.weight.copy_(torch.eye(attention.embed_dim))
    attention.core.local_init(locality_strength)


@torch.no_grad()
def load_timm_gpsa(attention: MultiHeadAttention, ref: nn.Module) -> MultiHeadAttention:
    """Copy a timm ``GPSA`` (or ConViT ``MHSA``) into ``attention`` (a :class:`GPSA`, or a multi-head attention
    with biases for a ``MHSA``). timm stores ``qk = [W_q; W_k]`` (``2E x E``, bias optional), ``v``, ``proj``,
    ``pos_proj`` and ``gating_param``; a missing query/key/value bias is copied as zeros. Returns ``attention``."""
    E = attention.embed_dim
    if getattr(ref, "num_heads", None) != attention.num_heads:
        raise ValueError(
            f"load_timm_gpsa: ref has num_heads={getattr(ref, 'num_heads', None)}, this module {attention.num_heads}"
        )
    if hasattr(ref, "qk"):
        weights = ref.qk.weight.chunk(2) + (ref.v.weight,)
        biases = (ref.qk.bias.chunk(2) if ref.qk.bias is not None else (None, None)) + (ref.v.bias,)
    else:
        weights, biases = ref.qkv.weight.chunk(3), (ref.qkv.bias.chunk(3) if ref.qkv.bias is not None else (None,) * 3)
    if weights[0].shape != (E, E):
        raise ValueError(f"load_timm_gpsa: ref has width {weights[0].shape[1]}, this module {E}")
    for proj, w, b in zip((attention.q_proj, attention.k_proj, attention.v_proj), weights, biases, strict=True):
        proj.weight.copy_(w)
        proj.bias.copy_(torch.zeros_like(proj.bias) if b is None else b)
    attention.out_proj.weight.copy_(ref.proj.weight)
    attention.out_proj.bias.copy_(ref.proj.bias)
    if hasattr(ref, "pos_proj"):
        if not isinstance(attention.core, GatedPositionalCore):
            raise TypeError("load_timm_gpsa: ref is a GPSA, so attention needs a GatedPositionalCore")
        attention.core.pos_proj.load_state_dict(ref.pos_proj.state_dict())
        attention.core.gating_param.copy_(ref.gating_param)
    return attention


# --------------------------------------------------------------------------------------------------------------------
# VAN: large-kernel attention
# --------------------------------------------------------------------------------------------------------------------


class LargeKernelAttention(nn.Module):
    """VAN's LKA :cite:`guo2022visual`: ``attn = conv1(conv_spatial(conv0(x)))``, ``out = x * attn``.

    ``conv0``: depth-wise ``(2 dilation - 1)`` square kernel; ``conv_spatial``: depth-wise ``ceil(kernel_size /
    dilation)`` kernel with ``dilation``; ``conv1``: ``1 x 1`` (channel mixing). Both depth-wise convolutions keep
    the size (zero padding). The defaults are the paper's: ``kernel_size=21, dilation=3`` gives ``5 x 5`` and
    ``7 x 7`` (dilation 3), a ``23 x 23`` receptive field (:func:`lka_effective_kernel`).
    Shapes: ``x (B, dim, H, W) -> (B, dim, H, W)``.
    """

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int = 3) -> None:
        super().__init__()
        self.dim = _positive_int("dim", dim)
        kernel_size, dilation = _positive_int("kernel_size", kernel_size), _positive_int("dilation", dilation)
        local = 2 * dilation - 1
        dilated = math.ceil(kernel_size / dilation)
        if dilated % 2 == 0:
            dilated += 1  # an odd kernel keeps the centre: 'same' padding
        self.kernel_size, self.dilation = kernel_size, dilation
        self.conv0 = nn.Conv2d(dim, dim, local, padding=local // 2, groups=dim)
        self.conv_spatial = nn.Conv2d(
            dim, dim, dilated, padding=(dilated // 2) * dilation, groups=dim, dilation=dilation
        )
        self.conv1 = nn.Conv2d(dim, dim, 1)

    def attention_map(self, x: Tensor) -> Tensor:
        """``attn = conv1(conv_spatial(conv0(x)))``: ``(B, dim, H, W)``, the weights multiplied into ``x``."""
        _check_map(x, self.dim, "LargeKernelAttention")
        return self.conv1(self.conv_spatial(self.conv0(x)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.attention_map(x)  # (B, dim, H, W)


class VANAttention(nn.Module):
    """VAN's token mixer: ``x + proj_2(LKA(GELU(proj_1(x))))`` with ``1 x 1`` convolutions ``proj_1/2``.
    ``x (B, dim, H, W) -> (B, dim, H, W)``."""

    def __init__(self, dim: int, kernel_size: int = 21, dilation: int = 3) -> None:
        super().__init__()
        self.dim = _positive_int("dim", dim)
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LargeKernelAttention(dim, kernel_size, dilation)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        _check_map(x, self.dim, "VANAttention")
        return x + self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x))))


@torch.no_grad()
def lka_effective_kernel(lka: LargeKernelAttention) -> tuple[Tensor, Tensor]:
    """The one depth-wise kernel that ``conv_spatial(conv0(.))`` equals away from the borders.

    Returns ``(kernel (dim, 1, S, S), bias (dim,))`` with ``S = (k0 - 1) + dilation (k1 - 1) + 1``; applying it with
    padding ``S // 2`` matches the two-step convolution wherever neither step's zero padding is read (at least
    ``S // 2`` pixels from the border). Cross-correlation composes by adding offsets: tap ``b`` of the dilated
    kernel and tap ``a`` of the small one land at ``dilation * b + a``.
    """
    k0, k1 = lka.conv0.weight, lka.conv_spatial.weight  # (C, 1, k0, k0), (C, 1, k1, k1)
    n0, n1, dil = k0.shape[-1], k1.shape[-1], lka.dilation
    size = (n0 - 1) + dil * (n1 - 1) + 1
    kernel = k0.new_zeros(k0.shape[0], 1, size, size)
    for by in range(n1):
        for bx in range(n1):
            kernel[..., dil * by : dil * by + n0, dil * bx : dil * bx + n0] += k1[..., by : by + 1, bx : bx + 1] * k0
    bias = lka.conv_spatial.bias + lka.conv0.bias * k1.sum(dim=(1, 2, 3))  # (C,)
    return kernel, bias


# --------------------------------------------------------------------------------------------------------------------
# Attentive convolution
# --------------------------------------------------------------------------------------------------------------------


def per_sample_depthwise_conv2d(x: Tensor, kernels: Tensor, padding: int | None = None) -> Tensor:
    """Depth-wise convolution with a different kernel for every sample and channel.

    ``x (B, C, H, W)``, ``kernels (B, C, k, k)`` -> ``(B, C, H', W')`` (``padding = k // 2`` keeps the size). The
    batch is folded into the channels, so one grouped convolution (``groups = B C``) applies all ``B C`` kernels.
    """
    if not isinstance(x, Tensor) or not isinstance(kernels, Tensor):
        raise TypeError("per_sample_depthwise_conv2d: x and kernels must be torch.Tensors")
    if x.ndim != 4 or kernels.ndim != 4 or kernels.shape[:2] != x.shape[:2] or kernels.shape[2] != kernels.shape[3]:
        raise ValueError(
            f"per_sample_depthwise_conv2d: need x (B, C, H, W) and kernels (B, C, k, k) with the same B, C; "
            f"got x{tuple(x.shape)}, kernels{tuple(kernels.shape)}"
        )
    B, C, H, W = x.shape
    k = kernels.shape[-1]
    padding = k // 2 if padding is None else padding
    out = F.conv2d(x.reshape(1, B * C, H, W), kernels.reshape(B * C, 1, k, k), padding=padding, groups=B * C)
    return out.reshape(B, C, *out.shape[-2:])  # (B, C, H', W')


class AttentiveConv(nn.Module):
    """Attentive convolution (ATConv) :cite:`attentive2025`, after the official ``ATConv`` module.

    * adaptive routing: ``K0 = kernel_gen(act(pool_{k^2}(flatten_HW(kernel_proj(x)))))``, one ``k x k`` kernel per
      sample and channel, generated from the input (``pool`` averages ``k^2`` contiguous strips of the image);
    * lateral inhibition: ``K = K0 - sigma(lambda_c) mean(K0)`` (``difference_control = lambda``, initialised to 0);
    * ``y = proj(per_sample_depthwise_conv2d(x_proj(x), K))``.

    ``x (B, dim, H, W) -> (B, dim, H, W)``; ``H W >= k^2`` so every strip holds a pixel.
    """

    def __init__(self, dim: int, kernel_size: int = 3, activation: Callable[[], nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.dim, self.kernel_size = _positive_int("dim", dim), _positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centred kernel), got {kernel_size}")
        k2 = kernel_size * kernel_size
        self.kernel_proj = nn.Conv2d(dim, dim, 1)
        self.pool = nn.AdaptiveAvgPool1d(k2)
        self.kernel_act = activation()
        self.kernel_gen = nn.Linear(k2, k2)
        self.x_proj = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.difference_control = nn.Parameter(torch.zeros(dim))

    def kernels(self, x: Tensor) -> Tensor:
        """The inhibited per-sample kernels ``K (B, dim, k, k)``."""
        _check_map(x, self.dim, "AttentiveConv")
        B, C, H, W = x.shape
        if H * W < self.kernel_size**2:
            raise ValueError(f"AttentiveConv: the image ({H} x {W}) needs at least k^2 = {self.kernel_size**2} pixels")
        routed = self.kernel_act(self.pool(self.kernel_proj(x).reshape(B, C, H * W)))  # (B, C, k^2)
        k0 = self.kernel_gen(routed).reshape(B, C, self.kernel_size, self.kernel_size)  # (B, C, k, k)
        inhibition = torch.sigmoid(self.difference_control).view(1, C, 1, 1)
        return k0 - inhibition * k0.mean(dim=(2, 3), keepdim=True)

    def forward(self, x: Tensor) -> Tensor:
        kernels = self.kernels(x)
        return self.proj(per_sample_depthwise_conv2d(self.x_proj(x), kernels))  # (B, dim, H, W)


# --------------------------------------------------------------------------------------------------------------------
# HyperZ.Z.W: hyper-kernels from a coordinate network
# --------------------------------------------------------------------------------------------------------------------


class CoordinateKernelNet(nn.Module):
    """The *slow* network of HyperZ.Z.W :cite:`zhang2024hyperz`: a multiplicative filter network on coordinates.

    ``h_1 = g_1(c)``, ``h_{i+1} = (W_i h_i + b_i) * g_{i+1}(c)``, ``out = W_o h + b_o`` with sinusoidal filters
    ``g_i(c) = sin(Theta_i c + phi_i)`` and ``c`` in ``[-1, 1]^2``. :meth:`kernel` evaluates it on an
    ``rows x cols`` grid of taps: ``(out_channels, rows, cols)``. Its parameter count does not depend on the
    kernel's size.
    """

    def __init__(self, out_channels: int, hidden: int = 16, num_layers: int = 2, frequency: float = 3.0) -> None:
        super().__init__()
        self.out_channels = _positive_int("out_channels", out_channels)
        hidden, num_layers = _positive_int("hidden", hidden), _positive_int("num_layers", num_layers)
        self.filters = nn.ModuleList(nn.Linear(2, hidden) for _ in range(num_layers))
        for f in self.filters:
            nn.init.uniform_(f.weight, -frequency, frequency)
            nn.init.uniform_(f.bias, -math.pi, math.pi)
        self.linears = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(num_layers - 1))
        self.out = nn.Linear(hidden, out_channels)

    def forward(self, coords: Tensor) -> Tensor:
        """``coords (..., 2) -> (..., out_channels)``."""
        h = torch.sin(self.filters[0](coords))
        for linear, filt in zip(self.linears, self.filters[1:], strict=True):
            h = linear(h) * torch.sin(filt(coords))
        return self.out(h)

    def kernel(self, rows: int, cols: int | None = None) -> Tensor:
        """The hyper-kernel on a ``rows x cols`` grid of taps spanning ``[-1, 1]^2``: ``(out_channels, rows, cols)``."""
        rows = _positive_int("rows", rows)
        cols = rows if cols is None else _positive_int("cols", cols)
        w = self.out.weight
        ys = torch.linspace(-1, 1, rows, dtype=w.dtype, device=w.device) if rows > 1 else w.new_zeros(1)
        xs = torch.linspace(-1, 1, cols, dtype=w.dtype, device=w.device) if cols > 1 else w.new_zeros(1)
        coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)  # (rows, cols, 2)
        return self(coords).permute(2, 0, 1)  # (out_channels, rows, cols)


class HyperZZW(nn.Module):
    """A HyperZ.Z.W layer :cite:`zhang2024hyperz` with one local and one global branch (a reconstruction).

    Hyper-kernels come from two :class:`CoordinateKernelNet` s: a local ``K_l (C, k, k)`` and a global
    ``K_g (C, H, W)`` as large as the feature map. The fast network makes them context-dependent:

    * local: ``W_l = depthwise_conv(Z, K_l)`` (the hyper-kernel slides over ``Z``), ``y_l = W_l * Z``;
    * global: ``w_g[c] = mean_{hw}(K_g[c] * Z[c])`` (every position of the image), ``y_g = w_g * Z``;
    * ``out = bottleneck([y_l; y_g])`` (a ``1 x 1`` convolution from ``2C`` to ``C`` channels).

    The paper states that hyper-kernels and activations meet by element-wise multiplication followed by a
    convolution of ``Z`` with the context-dependent weights; the exact order above is our reading (see chapter 14).
    ``z (B, dim, H, W) -> (B, dim, H, W)`` with ``(H, W) = image_size``.
    """

    def __init__(self, dim: int, image_size: int | tuple[int, int], kernel_size: int = 3, hidden: int = 16) -> None:
        super().__init__()
        self.dim = _positive_int("dim", dim)
        self.image_size = _grid(image_size)
        self.kernel_size = _positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centred kernel), got {kernel_size}")
        self.local_net = CoordinateKernelNet(dim, hidden)
        self.global_net = CoordinateKernelNet(dim, hidden)
        self.bottleneck = nn.Conv2d(2 * dim, dim, 1)

    def local_weights(self, z: Tensor) -> Tensor:
        """``W_l = depthwise_conv(z, K_l)``: ``(B, dim, H, W)``."""
        kernel = self.local_net.kernel(self.kernel_size)[:, None]  # (C, 1, k, k)
        return F.conv2d(z, kernel, padding=self.kernel_size // 2, groups=self.dim)

    def global_weights(self, z: Tensor) -> Tensor:
        """``w_g = mean_{hw}(K_g * z)``: ``(B, dim, 1, 1)``."""
        kernel = self.global_net.kernel(*self.image_size)  # (C, H, W)
        return (kernel * z).mean(dim=(2, 3), keepdim=True)

    def forward(self, z: Tensor) -> Tensor:
        _check_map(z, self.dim, "HyperZZW")
        if tuple(z.shape[2:]) != self.image_size:
            raise ValueError(
                f"HyperZZW: z must be (B, {self.dim}, {self.image_size[0]}, {self.image_size[1]}), got {tuple(z.shape)}"
            )
        y_local = self.local_weights(z) * z  # (B, C, H, W)
        y_global = self.global_weights(z) * z  # (B, C, H, W)
        return self.bottleneck(torch.cat([y_local, y_global], dim=1))
