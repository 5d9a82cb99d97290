"""Attention functions and modules. One module per mechanism family; see :mod:`attnbook` for the design."""

from attnbook.attention.core import (
    AttentionCore,
    CausalPattern,
    DotProductScores,
    MultiHeadAttention,
    Normalizer,
    Pattern,
    PositionPart,
    Scores,
    SoftmaxNormalizer,
)
from attnbook.attention.functional import masked_softmax, scaled_dot_product_attention
from attnbook.attention.masks import (
    causal_mask,
    combine_masks,
    from_torch_convention,
    fully_masked_rows,
    key_mask_to_attn_mask,
    padding_mask,
    to_additive,
)

__all__ = [
    "AttentionCore",
    "CausalPattern",
    "DotProductScores",
    "MultiHeadAttention",
    "Normalizer",
    "Pattern",
    "PositionPart",
    "Scores",
    "SoftmaxNormalizer",
    "causal_mask",
    "combine_masks",
    "from_torch_convention",
    "fully_masked_rows",
    "key_mask_to_attn_mask",
    "masked_softmax",
    "padding_mask",
    "scaled_dot_product_attention",
    "to_additive",
]
