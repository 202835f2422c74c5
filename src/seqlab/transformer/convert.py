"""Converters between seqlab Encoder/DecoderLayer and torch.nn.TransformerEncoder/DecoderLayer.

The submodule names are the same (self_attn, multihead_attn, linear1, linear2, norm1..3), and
the attention blocks use torch.nn.MultiheadAttention's packed layout, so the state_dict keys map
one to one; the converters read the configuration off the torch layer (width, heads, feed-forward
size, norm_first, activation, eps, dropout) and copy the weights. Only ``batch_first`` layers
describe seqlab's input layout, but the weights do not depend on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DecoderLayer, EncoderLayer

__all__ = [
    "encoder_layer_from_torch",
    "decoder_layer_from_torch",
    "encoder_layer_to_torch",
    "decoder_layer_to_torch",
]


def _activation_name(layer: nn.Module) -> str:
    act = layer.activation
    if act is F.relu or isinstance(act, nn.ReLU):
        return "relu"
    if act is F.gelu or isinstance(act, nn.GELU):
        return "gelu"
    raise ValueError(f"layer: unsupported activation {act!r} (expected relu or gelu)")


def _kwargs(layer: nn.Module) -> dict:
    attn = layer.self_attn
    if not attn._qkv_same_embed_dim or attn.bias_k is not None:
        raise ValueError("layer: its attention uses kdim/vdim or add_bias_kv, not supported")
    return dict(
        d_model=attn.embed_dim,
        nhead=attn.num_heads,
        dim_feedforward=layer.linear1.out_features,
        dropout=layer.dropout.p,
        activation=_activation_name(layer),
        layer_norm_eps=layer.norm1.eps,
        norm_first=layer.norm_first,
        bias=layer.linear1.bias is not None,
    )


def _copy(src: nn.Module, dst: nn.Module) -> None:
    p = next(src.parameters())
    dst.to(device=p.device, dtype=p.dtype)
    with torch.no_grad():
        dst.load_state_dict(src.state_dict())


def encoder_layer_from_torch(layer: nn.TransformerEncoderLayer) -> EncoderLayer:
    """seqlab EncoderLayer with the configuration and weights of ``layer``."""
    if not isinstance(layer, nn.TransformerEncoderLayer):
        raise TypeError(f"layer: expected nn.TransformerEncoderLayer, got {type(layer).__name__}")
    ours = EncoderLayer(**_kwargs(layer))
    _copy(layer, ours)
    return ours


def decoder_layer_from_torch(layer: nn.TransformerDecoderLayer) -> DecoderLayer:
    """seqlab DecoderLayer with the configuration and weights of ``layer``."""
    if not isinstance(layer, nn.TransformerDecoderLayer):
        raise TypeError(f"layer: expected nn.TransformerDecoderLayer, got {type(layer).__name__}")
    ours = DecoderLayer(**_kwargs(layer))
    _copy(layer, ours)
    return ours


def _torch_kwargs(layer: EncoderLayer | DecoderLayer) -> dict:
    attn = layer.self_attn
    return dict(
        d_model=attn.embed_dim,
        nhead=attn.num_heads,
        dim_feedforward=layer.linear1.out_features,
        dropout=layer.dropout.p,
        activation=layer.activation_name,
        layer_norm_eps=layer.norm1.eps,
        norm_first=layer.norm_first,
        bias=layer.linear1.bias is not None,
        batch_first=True,
    )


def encoder_layer_to_torch(layer: EncoderLayer) -> nn.TransformerEncoderLayer:
    """torch.nn.TransformerEncoderLayer (batch_first=True) equal to seqlab's ``layer``."""
    if not isinstance(layer, EncoderLayer):
        raise TypeError(f"layer: expected seqlab EncoderLayer, got {type(layer).__name__}")
    theirs = nn.TransformerEncoderLayer(**_torch_kwargs(layer))
    _copy(layer, theirs)
    return theirs


def decoder_layer_to_torch(layer: DecoderLayer) -> nn.TransformerDecoderLayer:
    """torch.nn.TransformerDecoderLayer (batch_first=True) equal to seqlab's ``layer``."""
    if not isinstance(layer, DecoderLayer):
        raise TypeError(f"layer: expected seqlab DecoderLayer, got {type(layer).__name__}")
    theirs = nn.TransformerDecoderLayer(**_torch_kwargs(layer))
    _copy(layer, theirs)
    return theirs
