"""Attention for video, control and embodied agents (chapter 22).

Three papers, three places where attention decides what a model looks at.

**Temporal self-attention over frame maps** (CT-D2GAN: *Convolutional Transformer based Dual Discriminator
Generative Adversarial Networks for Video Anomaly Detection*, Feng et al., 2021, :cite:`feng2021convolutional`). Each
frame ``t`` of a clip has a feature map ``F_t (C, S_1, S_2)``. Head ``h`` convolves it, ``M_t = conv_h(F_t)``,
average-pools ``M_t`` over space and appends a positional encoding of ``t``; a query and a key are linear maps of
that vector. The frame's output is a softmax-weighted sum of the other frames' *spatial maps*:

.. math::
    u_t = [\\operatorname{GAP}(M_t);\\ \\operatorname{PE}(t)],\\quad
    a_{ts} = \\operatorname{softmax}_s\\!\\left(\\frac{(W_q u_t)\\cdot(W_k u_s)}{\\sqrt{d_k}}\\right),\\quad
    O_t = \\sum_s a_{ts} M_s .

The paper has no public code; its structure is known from a review page, so the exact form of the similarity is
a reconstruction (chapter 22 says which parts). :class:`ConvTransformerPredictor` puts the attention between a
convolutional encoder and decoder to predict the next frame; the prediction error is the anomaly score.

**Control-aided attention** (*End-to-End Visual Autonomous Parking via Control-Aided Attention*, Chen et al.,
2025, :cite:`chen2025endtoend`). A spatial attention map ``alpha (S_1 S_2,)`` over a feature map pools the
features for a policy head; the attention is trained not by the imitation loss but towards a Grad-CAM-style
map computed from the gradient of the *control output* ``u``:

.. math::
    w_c = \\frac{1}{S_1 S_2}\\sum_{ij} \\frac{\\partial \\sum_m |u_m|}{\\partial F_{c,ij}},\\quad
    \\tilde G_{ij} = \\operatorname{ReLU}\\big(\\textstyle\\sum_c w_c F_{c,ij}\\big),\\quad
    G_{ij} = \\tilde G_{ij} / \\textstyle\\sum_{i'j'} \\tilde G_{i'j'},
    \\quad L_{\\text{CAA}} = \\operatorname{KL}(\\operatorname{sg}(G)\\,\\|\\,\\alpha) .

The released repository holds no module for it; the form of the target and of the distance are reconstructed
from the paper's text and a review (:func:`control_gradcam`, :func:`caa_loss`).

**Task-conditioned codebook attention** (*Selective Visual Representations Improve Convergence and
Generalization for Embodied AI*, Eftekhar et al., 2023, :cite:`eftekhar2023selective`), from the same lab's code
(``allenai/promptable-behaviors``, ``VisualNavActorCriticCodebook``). A task-conditioned embedding ``e`` (the
observation encoded together with the goal) picks a convex combination of ``K`` learned codes ``C (K, d_c)``:

.. math::
    p = \\operatorname{softmax}(W\\,\\operatorname{ReLU}(e) + b),\\qquad c = p\\,C,\\qquad e' = U c ,

cross-attention with one query ``ReLU(e)``, keys the rows of ``W``, the bias ``b`` as an additive mask, scale 1,
and values the codes (:func:`codebook_attention`). With ``d_c`` small, ``e'`` is a bottleneck: only what the
codes can express passes to the policy (:class:`TaskCodebookBottleneck`).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnbook.attention.functional import scaled_dot_product_attention
from attnbook.attention.positional import sinusoidal_encoding

__all__ = [
    "temporal_self_attention",
    "TemporalSelfAttention",
    "ConvTransformerPredictor",
    "FrameStackPredictor",
    "prediction_error",
    "spatial_attention_pool",
    "control_gradcam",
    "caa_loss",
    "ControlAidedAttentionPolicy",
    "codebook_attention",
    "TaskCodebookBottleneck",
]


def _check_tensor(x: object, ndim: int, where: str, name: str, layout: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{where}: {name} must have shape {layout}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{where}: {name} must be a floating tensor, got {x.dtype}")
    return x


def _positive_int(name: str, value: object, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive int, got {value!r}")


# ---------------------------------------------------------------------------------------------------------------
# Temporal self-attention over frame maps (CT-D2GAN, reconstructed)
# ---------------------------------------------------------------------------------------------------------------


def temporal_self_attention(
    q: Tensor, k: Tensor, maps: Tensor, *, need_weights: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Softmax over time of frame-vector similarities, applied to whole spatial maps.

    ``O[b, h, t] = sum_s softmax_s(q[b, h, t] . k[b, h, s] / sqrt(d_k)) maps[b, h, s]``: scaled dot-product
    attention (:func:`~attnbook.attention.functional.scaled_dot_product_attention`) whose values are the maps
    flattened to vectors of ``C_h * S_1 * S_2`` entries.

    Shapes: ``q``, ``k (B, H, T, d_k)``, ``maps (B, H, T, C_h, S_1, S_2)``; returns ``(B, H, T, C_h, S_1, S_2)``,
    and the weights ``(B, H, T, T)`` when ``need_weights``.
    """
    where = "temporal_self_attention"
    _check_tensor(q, 4, where, "q", "(B, H, T, d_k)")
    _check_tensor(k, 4, where, "k", "(B, H, T, d_k)")
    _check_tensor(maps, 6, where, "maps", "(B, H, T, C_h, S_1, S_2)")
    if q.shape != k.shape:
        raise ValueError(f"{where}: q and k must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if maps.shape[:3] != k.shape[:3]:
        raise ValueError(
            f"{where}: maps (B, H, T, ...) = {tuple(maps.shape[:3])} must match k's (B, H, T) = {tuple(k.shape[:3])}"
        )
    values = maps.flatten(3)  # (B, H, T, C_h * S_1 * S_2)
    result = scaled_dot_product_attention(q, k, values, need_weights=need_weights)
    if need_weights:
        out, weights = result
        return out.reshape(maps.shape), weights  # (B, H, T, C_h, S_1, S_2), (B, H, T, T)
    return result.reshape(maps.shape)


class TemporalSelfAttention(nn.Module):
    """CT-D2GAN-style temporal self-attention over frame feature maps (reconstruction; module docstring).

    Per head ``h``: a ``kernel_size`` convolution ``C -> head_channels`` gives the map ``M_t``; its spatial average
    concatenated with the sinusoidal encoding of ``t`` (``pos_dim`` entries) is ``u_t``; ``q_t = W_q u_t``,
    ``k_t = W_k u_t`` (``key_dim``); the output is :func:`temporal_self_attention` of the maps.

    Shapes: ``features (B, T, C, S_1, S_2)`` -> ``(B, T, num_heads * head_channels, S_1, S_2)``, and the weights
    ``(B, num_heads, T, T)`` when ``need_weights``.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int = 2,
        head_channels: int = 8,
        key_dim: int = 8,
        pos_dim: int = 8,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        where = "TemporalSelfAttention"
        for name, value in (
            ("channels", channels),
            ("num_heads", num_heads),
            ("head_channels", head_channels),
            ("key_dim", key_dim),
            ("kernel_size", kernel_size),
        ):
            _positive_int(name, value, where)
        if isinstance(pos_dim, bool) or not isinstance(pos_dim, int) or pos_dim < 0 or pos_dim % 2:
            raise ValueError(f"{where}: pos_dim must be an even int >= 0, got {pos_dim!r}")
        if kernel_size % 2 == 0:
            raise ValueError(f"{where}: kernel_size must be odd (the maps keep their size), got {kernel_size}")
        self.channels, self.num_heads, self.head_channels = channels, num_heads, head_channels
        self.key_dim, self.pos_dim = key_dim, pos_dim
        self.conv = nn.Conv2d(channels, num_heads * head_channels, kernel_size, padding=kernel_size // 2)
        # One (W_q, W_k) pair per head, as batched matrices: (H, d_k, C_h + pos_dim).
        self.w_q = nn.Parameter(torch.randn(num_heads, key_dim, head_channels + pos_dim) / math.sqrt(head_channels))
        self.w_k = nn.Parameter(torch.randn(num_heads, key_dim, head_channels + pos_dim) / math.sqrt(head_channels))

    def frame_vectors(self, maps: Tensor) -> Tensor:
        """``u_t = [GAP(M_t); PE(t)]``: ``maps (B, H, T, C_h, S_1, S_2)`` -> ``(B, H, T, C_h + pos_dim)``."""
        pooled = maps.mean(dim=(-2, -1))  # (B, H, T, C_h)
        if self.pos_dim == 0:
            return pooled
        steps = torch.arange(maps.shape[2], device=maps.device)
        pe = sinusoidal_encoding(steps, self.pos_dim, dtype=maps.dtype)  # (T, pos_dim)
        return torch.cat([pooled, pe.expand(*pooled.shape[:3], self.pos_dim)], dim=-1)

    def forward(self, features: Tensor, need_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        where = "TemporalSelfAttention"
        _check_tensor(features, 5, where, "features", "(B, T, C, S_1, S_2)")
        if features.shape[2] != self.channels:
            raise ValueError(
                f"{where}: features must have {self.channels} channels (dim 2), got shape {tuple(features.shape)}"
            )
        b, t, c, s1, s2 = features.shape
        maps = self.conv(features.reshape(b * t, c, s1, s2))  # (B*T, H*C_h, S_1, S_2)
        maps = maps.reshape(b, t, self.num_heads, self.head_channels, s1, s2).transpose(1, 2)  # (B, H, T, C_h, S1, S2)
        u = self.frame_vectors(maps)  # (B, H, T, C_h + pos_dim)
        q = torch.einsum("hkd,bhtd->bhtk", self.w_q, u)  # (B, H, T, d_k)
        k = torch.einsum("hkd,bhtd->bhtk", self.w_k, u)  # (B, H, T, d_k)
        out = temporal_self_attention(q, k, maps, need_weights=need_weights)
        out, weights = out if need_weights else (out, None)
        out = out.transpose(1, 2).reshape(b, t, self.num_heads * self.head_channels, s1, s2)  # (B, T, H*C_h, S1, S2)
        return (out, weights) if need_weights else out


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU())


class ConvTransformerPredictor(nn.Module):
    """Next-frame predictor: convolutional encoder -> temporal self-attention -> convolutional decoder.

    The encoder (two 3 x 3 convolutions with ReLU, ``width`` channels) runs on every frame; ``temporal`` mixes the
    frames: ``"attention"`` is :class:`TemporalSelfAttention` (the query is the last frame), ``"mean"`` replaces
    the weights by ``1/T`` (the same convolution, no attention: the ablation). The decoder sees the last frame's
    features next to the mixed maps and predicts the logits of the next frame. The paper's adversarial
    discriminators are left out (chapter 22).

    Shapes: ``frames (B, T, C_in, S_1, S_2)`` -> logits ``(B, C_in, S_1, S_2)`` (``torch.sigmoid`` gives the
    frame); with ``need_weights`` also the last frame's weights ``(B, num_heads, T)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 16,
        num_heads: int = 2,
        head_channels: int = 8,
        key_dim: int = 8,
        pos_dim: int = 8,
        temporal: Literal["attention", "mean"] = "attention",
    ) -> None:
        super().__init__()
        if temporal not in ("attention", "mean"):
            raise ValueError(f"ConvTransformerPredictor: temporal must be 'attention' or 'mean', got {temporal!r}")
        _positive_int("in_channels", in_channels, "ConvTransformerPredictor")
        _positive_int("width", width, "ConvTransformerPredictor")
        self.in_channels, self.temporal = in_channels, temporal
        self.encoder = nn.Sequential(_conv_block(in_channels, width), _conv_block(width, width))
        self.attention = TemporalSelfAttention(width, num_heads, head_channels, key_dim, pos_dim)
        mixed = num_heads * head_channels
        self.decoder = nn.Sequential(_conv_block(width + mixed, width), nn.Conv2d(width, in_channels, 3, padding=1))

    def forward(self, frames: Tensor, need_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        _check_tensor(frames, 5, "ConvTransformerPredictor", "frames", "(B, T, C_in, S_1, S_2)")
        if frames.shape[2] != self.in_channels:
            raise ValueError(
                f"ConvTransformerPredictor: frames must have {self.in_channels} channels (dim 2), "
                f"got shape {tuple(frames.shape)}"
            )
        b, t, c, s1, s2 = frames.shape
        feats = self.encoder(frames.reshape(b * t, c, s1, s2)).reshape(b, t, -1, s1, s2)  # (B, T, width, S1, S2)
        weights = None
        if self.temporal == "attention":
            mixed, weights = self.attention(feats, need_weights=True)  # (B, T, H*C_h, S1, S2), (B, H, T, T)
            mixed = mixed[:, -1]  # (B, H*C_h, S1, S2): the last frame queries the clip
        else:
            maps = self.attention.conv(feats.reshape(b * t, -1, s1, s2)).reshape(b, t, -1, s1, s2)
            mixed = maps.mean(1)  # (B, H*C_h, S1, S2): every frame weighs 1/T
        logits = self.decoder(torch.cat([feats[:, -1], mixed], dim=1))  # (B, C_in, S1, S2)
        if need_weights:
            if weights is None:
                weights = torch.full((b, self.attention.num_heads, t), 1.0 / t, dtype=frames.dtype)
            else:
                weights = weights[:, :, -1]  # (B, H, T)
            return logits, weights
        return logits


class FrameStackPredictor(nn.Module):
    """The baseline without temporal attention: the ``T`` frames stacked as channels into a plain CNN.

    Three 3 x 3 convolutions (``width`` channels, ReLU) then a 3 x 3 convolution to ``in_channels`` logits.
    Shapes: ``frames (B, T, C_in, S_1, S_2)`` -> logits ``(B, C_in, S_1, S_2)``.
    """

    def __init__(self, context: int, in_channels: int = 1, width: int = 24) -> None:
        super().__init__()
        _positive_int("context", context, "FrameStackPredictor")
        _positive_int("in_channels", in_channels, "FrameStackPredictor")
        self.context, self.in_channels = context, in_channels
        self.net = nn.Sequential(
            _conv_block(context * in_channels, width),
            _conv_block(width, width),
            _conv_block(width, width),
            nn.Conv2d(width, in_channels, 3, padding=1),
        )

    def forward(self, frames: Tensor) -> Tensor:
        _check_tensor(frames, 5, "FrameStackPredictor", "frames", "(B, T, C_in, S_1, S_2)")
        if frames.shape[1:3] != (self.context, self.in_channels):
            raise ValueError(
                f"FrameStackPredictor: frames must have (T, C_in) = ({self.context}, {self.in_channels}), "
                f"got shape {tuple(frames.shape)}"
            )
        return self.net(frames.flatten(1, 2))  # (B, T*C_in, S1, S2) -> (B, C_in, S1, S2)


def prediction_error(logits: Tensor, target: Tensor) -> Tensor:
    """The anomaly score of a frame: the mean squared error of the predicted frame ``sigmoid(logits)``.

    Shapes: ``logits``, ``target (B, C, S_1, S_2)`` -> ``(B,)``.
    """
    _check_tensor(logits, 4, "prediction_error", "logits", "(B, C, S_1, S_2)")
    _check_tensor(target, 4, "prediction_error", "target", "(B, C, S_1, S_2)")
    if logits.shape != target.shape:
        raise ValueError(f"prediction_error: logits {tuple(logits.shape)} and target {tuple(target.shape)} must match")
    return (torch.sigmoid(logits) - target).square().flatten(1).mean(1)


# ---------------------------------------------------------------------------------------------------------------
# Control-aided attention (CAA-Policy, reconstructed)
# ---------------------------------------------------------------------------------------------------------------


def spatial_attention_pool(logits: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
    """``alpha = softmax over the S_1 S_2 cells of logits``, ``z = sum_ij alpha_ij F_ij``.

    Shapes: ``logits (B, S_1, S_2)``, ``features (B, C, S_1, S_2)`` -> ``z (B, C)``, ``alpha (B, S_1, S_2)``.
    """
    _check_tensor(logits, 3, "spatial_attention_pool", "logits", "(B, S_1, S_2)")
    _check_tensor(features, 4, "spatial_attention_pool", "features", "(B, C, S_1, S_2)")
    if logits.shape != features.shape[:1] + features.shape[2:]:
        raise ValueError(
            f"spatial_attention_pool: logits {tuple(logits.shape)} must be (B, S_1, S_2) of features "
            f"{tuple(features.shape)}"
        )
    alpha = logits.flatten(1).softmax(-1)  # (B, S_1*S_2)
    z = torch.einsum("bn,bcn->bc", alpha, features.flatten(2))  # (B, C)
    return z, alpha.reshape(logits.shape)


def control_gradcam(outputs: Tensor, features: Tensor, *, create_graph: bool = False) -> Tensor:
    """The control-aided target map ``G`` (module docstring): Grad-CAM of ``sum_m |u_m|`` on ``features``.

    ``outputs (B, M)`` must have been computed from ``features (B, C, S_1, S_2)`` (with each example's outputs
    depending on its own features only); returns ``G (B, S_1, S_2)``, non-negative, each map summing to 1 (a map
    whose ReLU is zero everywhere becomes uniform).
    """
    _check_tensor(outputs, 2, "control_gradcam", "outputs", "(B, M)")
    _check_tensor(features, 4, "control_gradcam", "features", "(B, C, S_1, S_2)")
    if outputs.shape[0] != features.shape[0]:
        raise ValueError(
            f"control_gradcam: outputs {tuple(outputs.shape)} and features {tuple(features.shape)} differ in B"
        )
    if not features.requires_grad:
        raise ValueError("control_gradcam: features must require grad (the outputs must be computed from them)")
    (grad,) = torch.autograd.grad(outputs.abs().sum(), features, create_graph=create_graph)  # (B, C, S1, S2)
    w = grad.mean(dim=(-2, -1), keepdim=True)  # (B, C, 1, 1): channel weights
    cam = F.relu((w * features).sum(1))  # (B, S1, S2)
    total = cam.flatten(1).sum(1)[:, None, None]  # (B, 1, 1)
    uniform = torch.full_like(cam, 1.0 / cam[0].numel())
    return torch.where(total > 0, cam / torch.where(total > 0, total, torch.ones_like(total)), uniform)


def caa_loss(alpha: Tensor, target: Tensor) -> Tensor:
    """``KL(sg(target) || alpha)`` averaged over the batch: the attention map is pulled towards the target map.

    ``sum_ij G_ij (log G_ij - log alpha_ij)`` with ``0 log 0 = 0``; ``alpha`` is clamped at the dtype's smallest
    positive number before the log, so an underflowed weight gives a large finite loss, not ``inf``.
    Shapes: ``alpha``, ``target (B, S_1, S_2)``, each map summing to 1 -> scalar.
    """
    _check_tensor(alpha, 3, "caa_loss", "alpha", "(B, S_1, S_2)")
    _check_tensor(target, 3, "caa_loss", "target", "(B, S_1, S_2)")
    if alpha.shape != target.shape:
        raise ValueError(f"caa_loss: alpha {tuple(alpha.shape)} and target {tuple(target.shape)} must match")
    g = target.detach().flatten(1)  # (B, N)
    log_alpha = alpha.flatten(1).clamp_min(torch.finfo(alpha.dtype).tiny).log()  # (B, N)
    return (torch.xlogy(g, g) - g * log_alpha).sum(1).mean()


class ControlAidedAttentionPolicy(nn.Module):
    """A small policy with a spatial attention map that can be trained by control gradients (reconstruction).

    ``scene (B, C_in, S, S)`` -> encoder (two 3 x 3 convolutions, ``width`` channels) -> features ``F``. Two
    paths reach the head: a *global* path, a linear map of the flattened ``F`` to ``width`` units; and an
    *attended* path, ``z = sum_ij alpha_ij [F; rows; cols]_ij`` (:func:`spatial_attention_pool`, with two
    coordinate maps in [-1, 1] appended so that the attended feature says *where* it looked) with ``alpha`` the
    softmax of ``conv1x1([F; rows; cols])`` over the cells. The MLP head maps both to ``num_outputs`` controls.

    With ``attention_grad="caa"`` the attention reads ``F`` detached and the attended path uses ``alpha``
    detached: the imitation loss trains the encoder and the head, and only :meth:`caa_loss_from` (the Grad-CAM of
    the controls on ``F``, :func:`control_gradcam`) trains the attention. With ``"loss"`` the imitation loss trains
    everything (the baseline); ``"none"`` fixes ``alpha`` to uniform.

    ``forward`` returns ``(u (B, num_outputs), alpha (B, S, S), F (B, width, S, S))``.
    """

    def __init__(
        self,
        scene_size: int = 12,
        in_channels: int = 1,
        width: int = 8,
        num_outputs: int = 1,
        attention_grad: Literal["caa", "loss", "none"] = "caa",
    ) -> None:
        super().__init__()
        where = "ControlAidedAttentionPolicy"
        if attention_grad not in ("caa", "loss", "none"):
            raise ValueError(f"{where}: attention_grad must be 'caa', 'loss' or 'none', got {attention_grad!r}")
        for name, value in (("scene_size", scene_size), ("in_channels", in_channels), ("width", width)):
            _positive_int(name, value, where)
        self.attention_grad, self.scene_size, self.in_channels = attention_grad, scene_size, in_channels
        self.encoder = nn.Sequential(_conv_block(in_channels, width), _conv_block(width, width))
        self.attend = nn.Conv2d(width + 2, 1, 1)
        self.glob = nn.Linear(width * scene_size * scene_size, width)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(2 * width + 2, width), nn.ReLU(), nn.Linear(width, num_outputs))

    def _with_coordinates(self, feats: Tensor) -> Tensor:
        b, _, s1, s2 = feats.shape
        rows = torch.linspace(-1, 1, s1, dtype=feats.dtype).view(1, 1, s1, 1).expand(b, 1, s1, s2)
        cols = torch.linspace(-1, 1, s2, dtype=feats.dtype).view(1, 1, 1, s2).expand(b, 1, s1, s2)
        return torch.cat([feats, rows, cols], dim=1)  # (B, width + 2, S, S)

    def policy(self, feats: Tensor, alpha: Tensor) -> Tensor:
        """The controls from features ``F (B, width, S, S)`` and an attention map ``alpha (B, S, S)``."""
        z = torch.einsum("bn,bcn->bc", alpha.flatten(1), self._with_coordinates(feats).flatten(2))  # (B, width + 2)
        return self.head(torch.cat([z, self.glob(feats.flatten(1))], dim=1))  # (B, num_outputs)

    def forward(self, scene: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        where = "ControlAidedAttentionPolicy"
        _check_tensor(scene, 4, where, "scene", "(B, C_in, S, S)")
        if tuple(scene.shape[1:]) != (self.in_channels, self.scene_size, self.scene_size):
            raise ValueError(
                f"{where}: scene must have shape (B, {self.in_channels}, {self.scene_size}, {self.scene_size}), "
                f"got {tuple(scene.shape)}"
            )
        feats = self.encoder(scene)  # (B, width, S, S)
        if self.attention_grad == "none":
            alpha = torch.full_like(feats[:, 0], 1.0 / feats[0, 0].numel())
            return self.policy(feats, alpha), alpha, feats
        caa = self.attention_grad == "caa"
        logits = self.attend(self._with_coordinates(feats.detach() if caa else feats))[:, 0]  # (B, S, S)
        _, alpha = spatial_attention_pool(logits, feats)  # (B, S, S)
        return self.policy(feats, alpha.detach() if caa else alpha), alpha, feats

    def caa_loss_from(self, alpha: Tensor, feats: Tensor) -> Tensor:
        """The control-aided loss: the Grad-CAM of the controls on ``F`` (``alpha`` held fixed) is the target.

        ``alpha (B, S, S)`` and ``feats (B, width, S, S)`` as returned by ``forward``; returns a scalar whose
        gradient reaches only the attention's parameters.
        """
        probe = feats.detach().requires_grad_(True)  # (B, width, S, S)
        with torch.enable_grad():
            target = control_gradcam(self.policy(probe, alpha.detach()), probe)  # (B, S, S)
        return caa_loss(alpha, target)


# ---------------------------------------------------------------------------------------------------------------
# Task-conditioned codebook attention (Selective Visual Representations, from the same lab's code)
# ---------------------------------------------------------------------------------------------------------------


def codebook_attention(
    query: Tensor,
    keys: Tensor,
    codebook: Tensor,
    bias: Tensor | None = None,
    *,
    dropout_p: float = 0.0,
    need_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """``p = softmax(query keys^T + bias)``, ``c = p codebook``: attention over a learned codebook, scale 1.

    :func:`~attnbook.attention.functional.scaled_dot_product_attention` with ``scale=1`` and the bias as an
    additive mask; ``dropout_p`` drops entries of ``p`` (the weights returned are before dropout).
    Shapes: ``query (..., D)``, ``keys (K, D)``, ``codebook (K, d_c)``, ``bias (K,)`` -> ``c (..., d_c)``, and
    ``p (..., K)`` when ``need_weights``.
    """
    where = "codebook_attention"
    if not isinstance(query, Tensor) or query.dim() < 1:
        got = tuple(query.shape) if isinstance(query, Tensor) else type(query).__name__
        raise ValueError(f"{where}: query must be a tensor of shape (..., D), got {got}")
    _check_tensor(keys, 2, where, "keys", "(K, D)")
    _check_tensor(codebook, 2, where, "codebook", "(K, d_c)")
    if keys.shape[1] != query.shape[-1]:
        raise ValueError(f"{where}: keys (K, D) = {tuple(keys.shape)} must have D = query's last dim {query.shape[-1]}")
    if codebook.shape[0] != keys.shape[0]:
        raise ValueError(f"{where}: codebook {tuple(codebook.shape)} and keys {tuple(keys.shape)} must share K")
    if bias is not None and tuple(bias.shape) != (keys.shape[0],):
        raise ValueError(f"{where}: bias must have shape (K,) = ({keys.shape[0]},), got {tuple(bias.shape)}")
    q = query.unsqueeze(-2)  # (..., 1, D): one query per example
    k = keys.expand(*query.shape[:-1], *keys.shape)  # (..., K, D): shared by every example, not copied
    v = codebook.expand(*query.shape[:-1], *codebook.shape)  # (..., K, d_c)
    mask = None if bias is None else bias.to(query.dtype)[None]  # (1, K) broadcasts to (..., 1, K)
    result = scaled_dot_product_attention(
        q, k, v, mask, scale=1.0, dropout_p=dropout_p, need_weights=need_weights, backend="manual"
    )
    if need_weights:
        out, weights = result
        return out.squeeze(-2), weights.squeeze(-2)  # (..., d_c), (..., K)
    return result.squeeze(-2)


class TaskCodebookBottleneck(nn.Module):
    """Task-conditioned codebook bottleneck (module docstring), as in ``VisualNavActorCriticCodebook``.

    ``embedding (..., in_features)``, already conditioned on the task -> ``p = softmax(W ReLU(e) + b)`` over
    ``codebook_size`` codes (dropout ``dropout`` on ``p`` in training, as the code does against codebook
    collapse) -> ``c = p C`` with ``C (codebook_size, code_dim)`` learned -> ``Linear(code_dim, out_features)``.
    Returns ``(out (..., out_features), p (..., codebook_size))``.
    """

    def __init__(
        self,
        in_features: int,
        codebook_size: int = 8,
        code_dim: int = 4,
        out_features: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("codebook_size", codebook_size), ("code_dim", code_dim)):
            _positive_int(name, value, "TaskCodebookBottleneck")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"TaskCodebookBottleneck: dropout must be in [0, 1), got {dropout!r}")
        self.in_features = in_features
        self.indexer = nn.Linear(in_features, codebook_size)  # rows of W are the keys, b the bias
        self.codebook = nn.Parameter(torch.randn(codebook_size, code_dim))
        self.dropout = dropout
        self.upsample = nn.Linear(code_dim, out_features or in_features)

    def forward(self, embedding: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(embedding, Tensor) or embedding.dim() < 1 or embedding.shape[-1] != self.in_features:
            got = tuple(embedding.shape) if isinstance(embedding, Tensor) else type(embedding).__name__
            raise ValueError(f"TaskCodebookBottleneck: embedding must have shape (..., {self.in_features}), got {got}")
        code, p = codebook_attention(
            F.relu(embedding),
            self.indexer.weight,  # (K, in_features): the keys
            self.codebook,  # (K, d_c): the values
            self.indexer.bias,  # (K,)
            dropout_p=self.dropout if self.training else 0.0,
            need_weights=True,
        )  # (..., d_c), (..., K)
        return self.upsample(code), p
