"""Channel and subspace attention: weights over the channels of a feature map, or over its positions per subspace.
Introduced in chapter 15.

A convolutional feature map ``x (B, C, H, W)`` can be re-weighted along its channels or its positions with weights
computed from ``x`` itself (or, for class-semantics attention, from another signal):

* **Squeeze-and-excitation** (Hu et al., 2018, :cite:`hu2018squeeze`): average over the positions, a two-layer
  bottleneck, a sigmoid gate per channel (:class:`SqueezeExcitation`; its ``fc1``/``fc2`` have the names and shapes
  of timm's ``SEModule``, so a state dict copies over).
* **ULSAM** (Saini et al., 2020, :cite:`saini2020ulsam`): the channels are split into ``g`` subspaces; each subspace
  gets one spatial map, a softmax over the ``H W`` positions, and ``out = a * x + x`` (:class:`ULSAM`).
* **Position and channel attention modules** of the multi-scale self-guided network (Sinha and Dolz, 2019,
  :cite:`sinha2019multiscale`, after DANet): PAM is self-attention among the ``H W`` positions with ``C/8``-wide queries
  and keys and no scaling (:func:`position_attention`, :class:`PositionAttentionModule`); CAM is attention among the
  ``C`` channels with weights ``softmax(rowmax(E) - E)``, ``E = X X^T`` (:func:`channel_self_attention`,
  :class:`ChannelAttentionModule`). Both add their output to the input through a learned scale ``gamma`` that starts
  at 0. The guided block (:class:`GuidedAttentionBlock`, :class:`SelfGuidedAttention`) multiplies their sum by a map
  decoded by an encoder-decoder (:class:`SemanticModule`) and returns that module's code and reconstruction, from
  which :func:`guided_losses` forms the guided loss ``||e_1 - e_2||^2`` and the reconstruction loss.
* **Class-semantics attention** (CSA, Sridhar et al., 2021, :cite:`sridhar2021class`), a reconstruction: channel
  and temporal weights for features ``f (B, C, T)`` computed from class-semantic features ``r (B, C_r, T)``
  (:class:`ClassSemanticsAttention`).

DaViT's channel *tokens* (channel group attention) live in :mod:`attnbook.attention.grouped` (chapter 09).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.functional import scaled_dot_product_attention
from attnbook.attention.grouped import _positive_int

__all__ = [
    "SqueezeExcitation",
    "ULSAM",
    "position_attention",
    "channel_self_attention",
    "PositionAttentionModule",
    "ChannelAttentionModule",
    "SemanticModule",
    "GuidedAttentionBlock",
    "SelfGuidedAttention",
    "guided_losses",
    "ClassSemanticsAttention",
]


def _check_features(x: object, channels: int | None, ndim: int, where: str, name: str = "x") -> Tensor:
    """A floating tensor of ``ndim`` dims whose dim 1 is ``channels`` (any when ``None``)."""
    layout = "(B, C, H, W)" if ndim == 4 else "(B, C, T)"
    if not isinstance(x, Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{where}: {name} must be a floating tensor, got dtype {x.dtype}")
    if x.ndim != ndim or (channels is not None and x.shape[1] != channels):
        want = layout if channels is None else layout.replace("C", f"C={channels}")
        raise ValueError(f"{where}: {name} must be {want}, got shape {tuple(x.shape)}")
    return x


# --- squeeze-and-excitation -------------------------------------------------------------------------------------


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation :cite:`hu2018squeeze`: ``x * sigmoid(W_2 relu(W_1 mean_HW(x) + b_1) + b_2)``.

    Args:
        channels: ``C``. reduction: the bottleneck is ``hidden = max(1, C // reduction)`` channels wide (the paper's
            ``r = 16``), unless ``hidden`` is given.

    ``fc1`` (``C -> hidden``) and ``fc2`` (``hidden -> C``) are 1x1 convolutions, named and shaped as in timm's
    ``SEModule``. Input and output ``(B, C, H, W)``; :meth:`gate` returns the channel weights ``(B, C, 1, 1)``.
    """

    def __init__(self, channels: int, reduction: int = 16, *, hidden: int | None = None) -> None:
        super().__init__()
        self.channels = _positive_int(channels, "channels", "SqueezeExcitation")
        reduction = _positive_int(reduction, "reduction", "SqueezeExcitation")
        hidden = (
            max(1, channels // reduction) if hidden is None else _positive_int(hidden, "hidden", "SqueezeExcitation")
        )
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def gate(self, x: Tensor) -> Tensor:
        x = _check_features(x, self.channels, 4, "SqueezeExcitation")
        squeezed = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1): the squeeze
        return torch.sigmoid(self.fc2(F.relu(self.fc1(squeezed))))  # (B, C, 1, 1): the excitation

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x)


# --- ULSAM: ultra-lightweight subspace attention ------------------------------------------------------------------


class ULSAM(nn.Module):
    """Ultra-lightweight subspace attention :cite:`saini2020ulsam` (the official ``ulsam.py``, vectorised).

    The ``C`` channels are split into ``num_subspaces`` groups ``x_n (B, C/g, H, W)``. Per group: depth-wise 1x1
    convolution + BatchNorm + ReLU, 3x3 max-pool (stride 1), point-wise convolution to one channel + BatchNorm +
    ReLU, softmax over the ``H W`` positions -> ``a_n (B, 1, H, W)``; ``out_n = a_n * x_n + x_n``; the groups are
    concatenated. The per-group layers are one grouped convolution each (a depth-wise convolution is already
    per-channel; the point-wise one has ``groups = g``), and the per-group BatchNorms are one BatchNorm over the
    concatenated channels. The official code sets BatchNorm's ``momentum=0.9``; this module keeps PyTorch's
    default (it only changes the running statistics). :meth:`maps` returns ``a (B, g, H, W)``.
    """

    def __init__(self, channels: int, num_subspaces: int) -> None:
        super().__init__()
        self.channels = _positive_int(channels, "channels", "ULSAM")
        self.num_subspaces = _positive_int(num_subspaces, "num_subspaces", "ULSAM")
        if channels % num_subspaces:
            raise ValueError(f"ULSAM: num_subspaces={num_subspaces} must divide channels={channels}")
        self.depthwise = nn.Conv2d(channels, channels, kernel_size=1, groups=channels)
        self.depthwise_norm = nn.BatchNorm2d(channels)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
        self.pointwise = nn.Conv2d(channels, num_subspaces, kernel_size=1, groups=num_subspaces)
        self.pointwise_norm = nn.BatchNorm2d(num_subspaces)

    def maps(self, x: Tensor) -> Tensor:
        x = _check_features(x, self.channels, 4, "ULSAM")
        B, _, H, W = x.shape
        h = self.pool(F.relu(self.depthwise_norm(self.depthwise(x))))  # (B, C, H, W)
        h = F.relu(self.pointwise_norm(self.pointwise(h)))  # (B, g, H, W): one logit map per subspace
        return h.reshape(B, self.num_subspaces, H * W).softmax(-1).reshape(B, self.num_subspaces, H, W)

    def forward(self, x: Tensor) -> Tensor:
        a = self.maps(x).repeat_interleave(self.channels // self.num_subspaces, dim=1)  # (B, C, H, W)
        return a * x + x


# --- PAM and CAM (DANet / multi-scale self-guided attention) ------------------------------------------------------


def position_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """PAM's attention among positions: ``softmax(q k^T) v`` with no ``1/sqrt(d)`` scaling :cite:`sinha2019multiscale`.

    ``q, k (B, T, d_k)``, ``v (B, T, C)`` -> ``(B, T, C)``; ``T = H W`` positions are the tokens.
    """
    return scaled_dot_product_attention(q, k, v, scale=1.0)


def channel_self_attention(x: Tensor) -> Tensor:
    """CAM's attention among channels :cite:`sinha2019multiscale`: ``E = x x^T``, ``softmax(rowmax(E) - E) x``.

    ``x (B, C, T)`` -> ``(B, C, T)``: channel ``c`` is a token whose features are its ``T = H W`` values. Since a
    softmax is unchanged by a shift along its row, ``A = softmax(-E)``: a channel gives most weight to the channels
    *least* similar to it. There are no projections and no scaling.
    """
    x = _check_features(x, None, 3, "channel_self_attention")
    energy = x @ x.mT  # (B, C, C)
    weights = (energy.amax(-1, keepdim=True) - energy).softmax(-1)  # (B, C, C)
    return weights @ x  # (B, C, T)


class PositionAttentionModule(nn.Module):
    """Position attention module (PAM): ``gamma * position_attention(Q, K, V) + x`` on ``x (B, C, H, W)``.

    ``query``, ``key``: 1x1 convolutions ``C -> C // reduction`` (the paper's ``C/8``); ``value``: ``C -> C``;
    ``gamma`` starts at 0, so the module starts as the identity.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.channels = _positive_int(channels, "channels", "PositionAttentionModule")
        reduction = _positive_int(reduction, "reduction", "PositionAttentionModule")
        width = max(1, channels // reduction)
        self.query = nn.Conv2d(channels, width, kernel_size=1)
        self.key = nn.Conv2d(channels, width, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        x = _check_features(x, self.channels, 4, "PositionAttentionModule")
        B, C, H, W = x.shape
        q, k, v = (proj(x).flatten(2).mT for proj in (self.query, self.key, self.value))  # (B, H W, width or C)
        out = position_attention(q, k, v).mT.reshape(B, C, H, W)  # (B, C, H, W)
        return self.gamma * out + x


class ChannelAttentionModule(nn.Module):
    """Channel attention module (CAM): ``gamma * channel_self_attention(x) + x`` on ``x (B, C, H, W)``; no
    projections, one parameter ``gamma`` (starts at 0). ``channels=None`` accepts any ``C``."""

    def __init__(self, channels: int | None = None) -> None:
        super().__init__()
        self.channels = None if channels is None else _positive_int(channels, "channels", "ChannelAttentionModule")
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        x = _check_features(x, self.channels, 4, "ChannelAttentionModule")
        return self.gamma * channel_self_attention(x.flatten(2)).reshape(x.shape) + x


# --- the self-guided block --------------------------------------------------------------------------------------


def _conv_bn_act(c_in: int, c_out: int, act: nn.Module) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1), nn.BatchNorm2d(c_out), act]


class SemanticModule(nn.Module):
    """The guided block's encoder-decoder :cite:`sinha2019multiscale`: two encoder blocks (two 3x3 conv + BN + ReLU, a
    2x2 max-pool; ``C -> 2C -> 4C``) and two decoder blocks (two 3x3 conv + BN + ReLU, a 2x2 transposed convolution;
    ``4C -> 2C -> C``). ``forward(x (B, C, H, W))`` returns the code ``(B, 4C * H/4 * W/4)`` and the
    reconstruction ``(B, C, H, W)``; ``H`` and ``W`` must be multiples of 4."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = C = _positive_int(channels, "channels", "SemanticModule")
        self.encode = nn.Sequential(
            *_conv_bn_act(C, 2 * C, nn.ReLU()), *_conv_bn_act(2 * C, 2 * C, nn.ReLU()), nn.MaxPool2d(2),
            *_conv_bn_act(2 * C, 4 * C, nn.ReLU()), *_conv_bn_act(4 * C, 4 * C, nn.ReLU()), nn.MaxPool2d(2),
        )  # fmt: skip
        self.decode = nn.Sequential(
            *_conv_bn_act(4 * C, 2 * C, nn.ReLU()), *_conv_bn_act(2 * C, 2 * C, nn.ReLU()),
            nn.ConvTranspose2d(2 * C, 2 * C, kernel_size=2, stride=2),
            *_conv_bn_act(2 * C, C, nn.ReLU()), *_conv_bn_act(C, C, nn.ReLU()),
            nn.ConvTranspose2d(C, C, kernel_size=2, stride=2),
        )  # fmt: skip

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = _check_features(x, self.channels, 4, "SemanticModule")
        if x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(f"SemanticModule: H and W must be multiples of 4, got x of shape {tuple(x.shape)}")
        code = self.encode(x)  # (B, 4C, H/4, W/4)
        return code.flatten(1), self.decode(code)


class _DualBranch(nn.Module):
    """3x3 conv (2C -> C) + BN + PReLU, PAM or CAM, 3x3 conv + BN + PReLU: the code's ``PAM_CAM_Layer``."""

    def __init__(self, channels: int, attention: nn.Module) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            *_conv_bn_act(2 * channels, channels, nn.PReLU()), attention, *_conv_bn_act(channels, channels, nn.PReLU())
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class GuidedAttentionBlock(nn.Module):
    """One guided attention step :cite:`sinha2019multiscale`: on ``a = [F_s; F_MS] (B, 2C, H, W)``,
    ``att = W_1x1((PAM(a) + CAM(a)) * conv3x3(reconstruction of a))`` ``(B, C, H, W)``.

    Returns ``(att, code, reconstruction)``: the :class:`SemanticModule` code and its reconstruction of ``a``, which
    the losses of :func:`guided_losses` use.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = C = _positive_int(channels, "channels", "GuidedAttentionBlock")
        self.position = _DualBranch(C, PositionAttentionModule(C))
        self.channel = _DualBranch(C, ChannelAttentionModule(C))
        self.semantic = SemanticModule(2 * C)
        self.guide = nn.Conv2d(2 * C, C, kernel_size=3, padding=1)
        self.fuse = nn.Conv2d(C, C, kernel_size=1)

    def forward(self, a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a = _check_features(a, 2 * self.channels, 4, "GuidedAttentionBlock", "a")
        code, reconstruction = self.semantic(a)  # (B, 8C H W / 16), (B, 2C, H, W)
        att = self.fuse((self.position(a) + self.channel(a)) * self.guide(reconstruction))  # (B, C, H, W)
        return att, code, reconstruction


class SelfGuidedAttention(nn.Module):
    """The two-step self-guided attention of one scale :cite:`sinha2019multiscale` (``DAF_stack`` in the code).

    ``forward(f_s, f_ms)`` with the scale's features ``f_s`` and the fused multi-scale features ``f_ms``, both
    ``(B, C, H, W)``: step 1 attends on ``a_1 = [f_s; f_ms]``; step 2 on ``a_2 = [f_s; att_1 * f_ms]``. Returns
    ``(att_2, aux)`` with ``aux = {"inputs": (a_1, a_2), "codes": (e_1, e_2), "reconstructions": (r_1, r_2)}``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = _positive_int(channels, "channels", "SelfGuidedAttention")
        self.step1 = GuidedAttentionBlock(self.channels)
        self.step2 = GuidedAttentionBlock(self.channels)

    def forward(self, f_s: Tensor, f_ms: Tensor) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
        f_s = _check_features(f_s, self.channels, 4, "SelfGuidedAttention", "f_s")
        f_ms = _check_features(f_ms, self.channels, 4, "SelfGuidedAttention", "f_ms")
        if f_s.shape != f_ms.shape:
            raise ValueError(f"SelfGuidedAttention: f_s {tuple(f_s.shape)} and f_ms {tuple(f_ms.shape)} must match")
        a1 = torch.cat([f_s, f_ms], 1)  # (B, 2C, H, W)
        att1, e1, r1 = self.step1(a1)
        a2 = torch.cat([f_s, att1 * f_ms], 1)  # (B, 2C, H, W): the first step's attention guides the second
        att2, e2, r2 = self.step2(a2)
        return att2, {"inputs": (a1, a2), "codes": (e1, e2), "reconstructions": (r1, r2)}


def guided_losses(aux: dict[str, tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """The guided loss ``mean (e_1 - e_2)^2`` and the reconstruction loss ``sum_s mean (a_s - r_s)^2`` from the
    ``aux`` of :class:`SelfGuidedAttention` (the code weights them 0.25 and 0.1 beside the segmentation losses)."""
    if not isinstance(aux, dict) or any(key not in aux for key in ("inputs", "codes", "reconstructions")):
        raise ValueError("guided_losses: aux must be the dict of SelfGuidedAttention (inputs, codes, reconstructions)")
    e1, e2 = aux["codes"]
    guided = F.mse_loss(e1, e2)
    reconstruction = sum(F.mse_loss(r, a) for a, r in zip(aux["inputs"], aux["reconstructions"], strict=True))
    return guided, reconstruction


# --- class-semantics attention (reconstruction) -----------------------------------------------------------------


class ClassSemanticsAttention(nn.Module):
    """Class-semantics-based attention (CSA) :cite:`sridhar2021class`, as reconstructed in chapter 15.

    The weights come from class-semantic features ``r (B, C_r, T)`` (an action-recognition encoder's), not from the
    features ``f (B, C, T)`` they re-weight:

    * channel weights ``a_c = sigmoid(MLP(mean_T(conv1d(r))))`` ``(B, C)``,
    * temporal weights ``a_t = sigmoid(conv1d(r))`` ``(B, T)``,
    * ``f' = a_c * f + a_t * f``.

    Args: ``channels`` ``C``, ``semantic_channels`` ``C_r``, ``hidden`` the width of ``conv1d(r)`` and of the MLP,
    ``kernel_size`` the (odd) temporal kernel of both convolutions. :meth:`weights` returns ``(a_c, a_t)``.
    """

    def __init__(self, channels: int, semantic_channels: int, hidden: int = 16, kernel_size: int = 3) -> None:
        super().__init__()
        where = "ClassSemanticsAttention"
        self.channels = _positive_int(channels, "channels", where)
        self.semantic_channels = _positive_int(semantic_channels, "semantic_channels", where)
        hidden = _positive_int(hidden, "hidden", where)
        kernel_size = _positive_int(kernel_size, "kernel_size", where)
        if kernel_size % 2 == 0:
            raise ValueError(f"{where}: kernel_size must be odd (same-length output), got {kernel_size}")
        self.embed = nn.Conv1d(semantic_channels, hidden, kernel_size, padding=kernel_size // 2)
        self.channel_mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, channels))
        self.temporal = nn.Conv1d(semantic_channels, 1, kernel_size, padding=kernel_size // 2)

    def weights(self, r: Tensor) -> tuple[Tensor, Tensor]:
        r = _check_features(r, self.semantic_channels, 3, "ClassSemanticsAttention", "r")
        a_c = torch.sigmoid(self.channel_mlp(self.embed(r).mean(-1)))  # (B, C)
        a_t = torch.sigmoid(self.temporal(r))[:, 0]  # (B, T)
        return a_c, a_t

    def forward(self, f: Tensor, r: Tensor) -> Tensor:
        f = _check_features(f, self.channels, 3, "ClassSemanticsAttention", "f")
        if not isinstance(r, Tensor) or r.ndim != 3 or r.shape[0] != f.shape[0] or r.shape[2] != f.shape[2]:
            got = tuple(r.shape) if isinstance(r, Tensor) else type(r).__name__
            raise ValueError(
                f"ClassSemanticsAttention: r must be (B={f.shape[0]}, C_r, T={f.shape[2]}) like f {tuple(f.shape)}, "
                f"got {got}"
            )
        a_c, a_t = self.weights(r)
        return a_c[:, :, None] * f + a_t[:, None, :] * f
