"""Converters between seqlab.MultiHeadAttention and torch.nn.MultiheadAttention.

Parameter mapping (identical names and layouts; the converter exists to check that the torch
module uses a configuration seqlab represents, and to build the matching module):

    torch.nn.MultiheadAttention          seqlab MultiHeadAttention
    in_proj_weight (3E, E) = [W_q;W_k;W_v]  in_proj_weight (3E, E)
    in_proj_bias   (3E,)                     in_proj_bias   (3E,)
    out_proj.weight (E, E), .bias (E,)       out_proj.weight, out_proj.bias

Unsupported torch options (raise ValueError): ``kdim``/``vdim`` different from ``embed_dim``
(separate q/k/v_proj_weight), ``add_bias_kv``, ``add_zero_attn``. ``batch_first`` does not
change the weights; seqlab is always batch-first. Remember that torch's boolean masks mean
"True = masked" (see :mod:`seqlab.attention.masks` for the converters).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .multihead import MultiHeadAttention

__all__ = [
    "mha_state_dict_from_torch",
    "mha_state_dict_to_torch",
    "mha_from_torch",
    "mha_to_torch",
]

_KEYS = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")


def _check_torch_mha(m: nn.MultiheadAttention) -> None:
    if not isinstance(m, nn.MultiheadAttention):
        raise TypeError(f"module: expected torch.nn.MultiheadAttention, got {type(m).__name__}")
    if not m._qkv_same_embed_dim:
        raise ValueError("module: kdim/vdim different from embed_dim are not supported")
    if m.bias_k is not None or m.add_zero_attn:
        raise ValueError("module: add_bias_kv / add_zero_attn are not supported")


def mha_state_dict_from_torch(state: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """torch.nn.MultiheadAttention state_dict entries under ``prefix`` -> seqlab's.

    Raises ValueError naming the missing key or an unsupported separate-projection layout.
    """
    if f"{prefix}q_proj_weight" in state:
        raise ValueError("state: separate q/k/v_proj_weight (kdim/vdim != E) is not supported")
    out: dict[str, Tensor] = {}
    for name in _KEYS:
        full = prefix + name
        if full in state:
            out[name] = state[full].detach().clone()
        elif name == "in_proj_weight" or name == "out_proj.weight":
            raise ValueError(f"state: missing key {full!r}")
    return out


def mha_state_dict_to_torch(state: Mapping[str, Tensor], prefix: str = "") -> dict[str, Tensor]:
    """seqlab MultiHeadAttention state_dict -> torch.nn.MultiheadAttention keys under prefix."""
    return {prefix + k: state[k].detach().clone() for k in _KEYS if k in state}


def mha_from_torch(m: nn.MultiheadAttention) -> MultiHeadAttention:
    """Build a seqlab MultiHeadAttention equal to ``m`` (same weights, dropout, bias)."""
    _check_torch_mha(m)
    ours = MultiHeadAttention(
        m.embed_dim, m.num_heads, dropout=m.dropout, bias=m.in_proj_bias is not None
    )
    ref = m.in_proj_weight
    ours.to(device=ref.device, dtype=ref.dtype)
    ours.load_state_dict(mha_state_dict_from_torch(m.state_dict()))
    return ours


def mha_to_torch(m: MultiHeadAttention, batch_first: bool = True) -> nn.MultiheadAttention:
    """Build a torch.nn.MultiheadAttention equal to seqlab's ``m``."""
    if not isinstance(m, MultiHeadAttention):
        raise TypeError(f"module: expected seqlab MultiHeadAttention, got {type(m).__name__}")
    ref = m.in_proj_weight
    theirs = nn.MultiheadAttention(
        m.embed_dim,
        m.num_heads,
        dropout=m.dropout,
        bias=m.in_proj_bias is not None,
        batch_first=batch_first,
        device=ref.device,
        dtype=ref.dtype,
    )
    with torch.no_grad():
        theirs.load_state_dict(mha_state_dict_to_torch(m.state_dict()))
    return theirs
