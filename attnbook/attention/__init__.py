"""Attention functions and modules, one module per mechanism family (see :mod:`attnbook` for the design).

* :mod:`~attnbook.attention.kernel` -- Nadaraya-Watson kernel regression, the first attention (ch. 01)
* :mod:`~attnbook.attention.additive` -- additive (Bahdanau) attention (ch. 02)
* :mod:`~attnbook.attention.functional`, :mod:`~attnbook.attention.masks` -- scaled dot-product attention
  and masks (ch. 03)
* :mod:`~attnbook.attention.core` -- the attention core with pluggable parts; multi-head attention (ch. 04)
* :mod:`~attnbook.attention.normalizers` -- normalisers other than softmax: sparsemax (ch. 04)
* :mod:`~attnbook.attention.positional` -- positional encodings and position parts (ch. 05)
* :mod:`~attnbook.attention.tiled` -- the online softmax and tiled ("flash") attention in linear memory (ch. 07);
  :mod:`~attnbook.attention.triton_flash`, its optional Triton kernel, is imported on demand (ch. 07)
* :mod:`~attnbook.attention.local`, :mod:`~attnbook.attention.windows` -- local attention: sliding windows,
  blocks, halos, shifted windows, Conformer block and epipolar attention (ch. 08)
* :mod:`~attnbook.attention.axial`, :mod:`~attnbook.attention.factorised`, :mod:`~attnbook.attention.grouped` --
  axial attention, Combiner's factorised attention, grouped attention (ch. 09)
* :mod:`~attnbook.attention.routing` -- routing attention: online k-means clusters shared by queries and keys (ch. 10)
* :mod:`~attnbook.attention.histogram` -- histogram self-attention: pixels sorted into intensity bins (ch. 10)
* :mod:`~attnbook.attention.ring` -- ring self-attention: a sequence split across processes (ch. 12)
* :mod:`~attnbook.attention.rollout` -- attention rollout and attention against patch distance (ch. 13)
* :mod:`~attnbook.attention.convolutional` -- convolution meets attention: ConViT's gated positional self-attention,
  VAN's large-kernel attention, attentive convolution, HyperZ.Z.W hyper-kernels (ch. 14)
* :mod:`~attnbook.attention.channel` -- channel and subspace attention: squeeze-and-excitation, ULSAM, position and
  channel attention modules with guidance, class-semantics attention (ch. 15)
* :mod:`~attnbook.attention.deformable` -- multi-scale deformable attention: sampled points, bilinear reads (ch. 16)
* :mod:`~attnbook.attention.probing` -- attentive and efficient probing of frozen tokens (ch. 17)
* :mod:`~attnbook.attention.conditioning` -- conditioning with cross-attention: reference attention, decoupled
  image-prompt cross-attention, region supervision, rollout and global-local attention, affinity splicing,
  closed-form projection edits (ch. 18)
* :mod:`~attnbook.attention.readout` -- attention that reads a set out: Granite-speech's windowed Q-Former
  projector, CVLNM's module controller, ViTGaze's interaction features, OAT's object pointer (ch. 19)
* :mod:`~attnbook.attention.series` -- time series and markets: the wavelet split, Stockformer's attentions, VSFormer's
  value and shape tokens with prior-enhanced attention (ch. 20)
* :mod:`~attnbook.attention.recommendation` -- recommendation and tagging: MQSA's L-query and multi-query
  self-attention with transition distillation, CRENER's direction-aware encoder and character-relation grid (ch. 21)
* :mod:`~attnbook.attention.video` -- video, control and embodied agents: temporal self-attention over frame maps,
  control-aided attention, task-conditioned codebook attention (ch. 22)
* :mod:`~attnbook.attention.interpret` -- reading attention maps: head importance by pruning and by the gate
  (Taylor) gradient, attention against distance, gradient saliency to compare attention with (ch. 25)
* :mod:`~attnbook.attention.dynamics` -- how attention learns: Scan and Snap's one-layer model with a pairwise logit
  matrix, its closed-form gradients, the population attention and two-rate gradient descent (ch. 23)
* :mod:`~attnbook.attention.variants` -- deconstructed attention: no mixing, fixed sequence-independent mixing, a
  normalised positive similarity, queries and keys decoupled from the hidden states (ch. 24)
* :mod:`~attnbook.attention.circuits` -- circuits and editing: an attention-only transformer with hooks on its head
  outputs, discrete sparse autoencoders and node scores, ablation, causal tracing, a closed-form edit of ``W_O``
  (ch. 26)
"""

from attnbook.attention import (
    additive,
    axial,
    channel,
    circuits,
    conditioning,
    convolutional,
    core,
    deformable,
    dynamics,
    factorised,
    functional,
    grouped,
    histogram,
    interpret,
    kernel,
    local,
    masks,
    positional,
    probing,
    readout,
    recommendation,
    ring,
    rollout,
    routing,
    series,
    tiled,
    variants,
    video,
    windows,
)
from attnbook.attention.additive import *  # noqa: F403
from attnbook.attention.axial import *  # noqa: F403
from attnbook.attention.channel import *  # noqa: F403
from attnbook.attention.circuits import *  # noqa: F403
from attnbook.attention.conditioning import *  # noqa: F403
from attnbook.attention.convolutional import *  # noqa: F403
from attnbook.attention.core import *  # noqa: F403
from attnbook.attention.deformable import *  # noqa: F403
from attnbook.attention.dynamics import *  # noqa: F403
from attnbook.attention.factorised import *  # noqa: F403
from attnbook.attention.functional import *  # noqa: F403
from attnbook.attention.grouped import *  # noqa: F403
from attnbook.attention.histogram import *  # noqa: F403
from attnbook.attention.interpret import *  # noqa: F403
from attnbook.attention.kernel import *  # noqa: F403
from attnbook.attention.local import *  # noqa: F403
from attnbook.attention.masks import *  # noqa: F403
from attnbook.attention.normalizers import SparsemaxNormalizer, sparsemax
from attnbook.attention.positional import *  # noqa: F403
from attnbook.attention.probing import *  # noqa: F403
from attnbook.attention.readout import *  # noqa: F403
from attnbook.attention.recommendation import *  # noqa: F403
from attnbook.attention.ring import *  # noqa: F403
from attnbook.attention.rollout import *  # noqa: F403
from attnbook.attention.routing import *  # noqa: F403
from attnbook.attention.series import *  # noqa: F403
from attnbook.attention.tiled import *  # noqa: F403
from attnbook.attention.variants import *  # noqa: F403
from attnbook.attention.video import *  # noqa: F403
from attnbook.attention.windows import *  # noqa: F403

__all__ = [
    *kernel.__all__,
    *additive.__all__,
    *functional.__all__,
    *masks.__all__,
    *core.__all__,
    "sparsemax",  # attnbook.attention.normalizers
    "SparsemaxNormalizer",
    *positional.__all__,
    *tiled.__all__,
    *local.__all__,
    *windows.__all__,
    *axial.__all__,
    *factorised.__all__,
    *grouped.__all__,
    *routing.__all__,
    *histogram.__all__,
    *ring.__all__,
    *rollout.__all__,
    *convolutional.__all__,
    *channel.__all__,
    *deformable.__all__,
    *probing.__all__,
    *conditioning.__all__,
    *readout.__all__,
    *series.__all__,
    *recommendation.__all__,
    *video.__all__,
    *interpret.__all__,
    *dynamics.__all__,
    *variants.__all__,
    *circuits.__all__,
]
