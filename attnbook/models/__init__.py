"""Whole models built from :mod:`attnbook.attention`.

* :mod:`~attnbook.models.pointer` -- Pointer Networks (ch. 02)
* :mod:`~attnbook.models.transformer` -- Transformer blocks, encoder-decoder, bi-/cross-encoders (ch. 04)
* :mod:`~attnbook.models.gpt` -- a character GPT with a KV cache (ch. 06)
* :mod:`~attnbook.models.block_transformer` -- the Block Transformer's global-to-local decoding (ch. 06)
* :mod:`~attnbook.models.hierarchical` -- SMITH's hierarchical document encoder, MEDUSA's gated CNN (ch. 11)
* :mod:`~attnbook.models.vit` -- the Vision Transformer: patches, class token, encoder (ch. 13)
* :mod:`~attnbook.models.convit` -- ConViT: gated positional self-attention blocks before the class token (ch. 14)
* :mod:`~attnbook.models.detr` -- a small DETR: object queries, Hungarian matching, the set loss (ch. 16)
* :mod:`~attnbook.models.masked` -- masked image modelling: MAE, CAE, MemMC-MAE, LUT, Mask & Match (ch. 17)
* :mod:`~attnbook.models.variant_gpt` -- the character GPT with one deconstructed kind of attention per layer (ch. 24)
"""

from attnbook.models import (
    block_transformer,
    convit,
    detr,
    gpt,
    hierarchical,
    masked,
    pointer,
    transformer,
    variant_gpt,
    vit,
)
from attnbook.models.block_transformer import *  # noqa: F403
from attnbook.models.convit import *  # noqa: F403
from attnbook.models.detr import *  # noqa: F403
from attnbook.models.gpt import *  # noqa: F403
from attnbook.models.hierarchical import *  # noqa: F403
from attnbook.models.masked import *  # noqa: F403
from attnbook.models.pointer import *  # noqa: F403
from attnbook.models.transformer import *  # noqa: F403
from attnbook.models.variant_gpt import *  # noqa: F403
from attnbook.models.vit import *  # noqa: F403

__all__ = [
    *pointer.__all__,
    *transformer.__all__,
    *gpt.__all__,
    *block_transformer.__all__,
    *hierarchical.__all__,
    *vit.__all__,
    *convit.__all__,
    *detr.__all__,
    *masked.__all__,
    *variant_gpt.__all__,
]
