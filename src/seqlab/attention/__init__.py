"""Self-attention: scores = Q Kᵀ / √d_k, weights = softmax(scores), Z = weights · V.

Boolean masks everywhere in seqlab mean True = attend (see :mod:`seqlab.attention.masks`).
"""

from .convert import (
    mha_from_torch,
    mha_state_dict_from_torch,
    mha_state_dict_to_torch,
    mha_to_torch,
)
from .functional import scaled_dot_product_attention
from .masks import (
    causal_mask,
    from_torch_attn_mask,
    from_torch_bool_mask,
    key_mask_from_lengths,
    key_mask_from_torch_padding,
)
from .multihead import AttentionOutput, KVCache, MultiHeadAttention
from .positional import (
    LearnedPositionalEncoding,
    SinusoidalPositionalEncoding,
    sinusoidal_table,
)

__all__ = [
    "AttentionOutput",
    "KVCache",
    "LearnedPositionalEncoding",
    "MultiHeadAttention",
    "SinusoidalPositionalEncoding",
    "causal_mask",
    "from_torch_attn_mask",
    "from_torch_bool_mask",
    "key_mask_from_lengths",
    "key_mask_from_torch_padding",
    "mha_from_torch",
    "mha_state_dict_from_torch",
    "mha_state_dict_to_torch",
    "mha_to_torch",
    "scaled_dot_product_attention",
    "sinusoidal_table",
]
