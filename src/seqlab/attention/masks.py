"""Attention masks: one convention for the whole library, plus converters from torch.nn's.

Convention (the same as ``torch.nn.functional.scaled_dot_product_attention``):

* a **boolean** mask is an *allow* mask — ``True`` means "this query may attend to this key",
  ``False`` means "masked out" (its score becomes ``-inf`` before the softmax);
* a **floating** mask is *additive* — it is added to the scores ``Q Kᵀ / √d_k`` (use ``-inf``
  to forbid a pair, finite values to bias it);
* ``key_mask`` (B, S) is a boolean allow mask over keys: ``True`` = a real token, ``False`` =
  padding.

``torch.nn.MultiheadAttention`` / ``torch.nn.Transformer*`` use the opposite boolean convention
(``True`` = masked) for ``attn_mask`` and ``key_padding_mask``; :func:`from_torch_bool_mask` and
:func:`key_mask_from_torch_padding` convert them.

Shapes: B batch, h heads, T queries, S keys.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "causal_mask",
    "key_mask_from_lengths",
    "key_mask_from_torch_padding",
    "from_torch_bool_mask",
    "from_torch_attn_mask",
    "check_attn_mask",
    "check_key_mask",
]


def causal_mask(
    num_queries: int, num_keys: int | None = None, device: torch.device | None = None
) -> Tensor:
    """Boolean allow mask (T, S) for causal attention, aligned bottom-right.

    Query i sits at absolute position ``S - T + i`` (the last T of S positions), so
    ``mask[i, j] = j <= i + (S - T)``. With T == S this is the usual lower triangle; with a
    key/value cache holding S - T earlier positions it is the right mask for the new queries.
    """
    if num_keys is None:
        num_keys = num_queries
    if num_queries < 0 or num_keys < num_queries:
        raise ValueError(
            f"causal_mask: need 0 <= num_queries <= num_keys, got num_queries={num_queries}, "
            f"num_keys={num_keys}"
        )
    offset = num_keys - num_queries
    rows = torch.arange(num_queries, device=device).unsqueeze(1)  # (T, 1)
    cols = torch.arange(num_keys, device=device).unsqueeze(0)  # (1, S)
    return cols <= rows + offset


def key_mask_from_lengths(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """(B,) lengths -> (B, S) boolean key mask, True at positions ``< lengths[b]``."""
    if not isinstance(lengths, Tensor) or lengths.dim() != 1:
        raise ValueError(f"lengths: expected a 1-D tensor (B,), got {_describe(lengths)}")
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise TypeError(f"lengths: expected an integer tensor, got dtype {lengths.dtype}")
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    positions = torch.arange(max_len, device=lengths.device)  # (S,)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def key_mask_from_torch_padding(key_padding_mask: Tensor) -> Tensor:
    """torch.nn ``key_padding_mask`` (True = pad) -> seqlab ``key_mask`` (True = real)."""
    if key_padding_mask.dtype != torch.bool:
        raise TypeError(
            f"key_padding_mask: expected dtype torch.bool, got {key_padding_mask.dtype}"
        )
    return ~key_padding_mask


def from_torch_bool_mask(mask: Tensor) -> Tensor:
    """torch.nn boolean ``attn_mask`` (True = masked) -> seqlab allow mask (True = attend)."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask: expected dtype torch.bool, got {mask.dtype}")
    return ~mask


def from_torch_attn_mask(mask: Tensor, batch_size: int, num_heads: int) -> Tensor:
    """Any torch.nn.MultiheadAttention ``attn_mask`` -> a seqlab ``attn_mask``.

    Boolean masks are inverted (see module docstring); floating masks are already additive.
    torch's per-head 3-D form (B·h, T, S) is reshaped to (B, h, T, S); 2-D (T, S) is kept.
    """
    out = from_torch_bool_mask(mask) if mask.dtype == torch.bool else mask
    if out.dim() == 3:
        out = out.view(batch_size, num_heads, out.shape[-2], out.shape[-1])
    return out


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__}"


def check_attn_mask(attn_mask: Tensor, scores_shape: torch.Size, dtype: torch.dtype) -> None:
    """Validate ``attn_mask`` against the score tensor shape (..., T, S) and query dtype.

    The mask must be boolean or floating point; its last two dims must be exactly (T, S) and
    its leading dims must broadcast to the scores' leading dims.
    """
    if not isinstance(attn_mask, Tensor):
        raise TypeError(f"attn_mask: expected a tensor, got {type(attn_mask).__name__}")
    if attn_mask.dtype != torch.bool and not attn_mask.dtype.is_floating_point:
        raise TypeError(
            f"attn_mask: expected dtype torch.bool (True = attend) or a floating dtype "
            f"(additive), got {attn_mask.dtype}"
        )
    if attn_mask.dtype.is_floating_point and attn_mask.dtype != dtype:
        raise TypeError(
            f"attn_mask: a floating mask must have the query dtype {dtype}, got {attn_mask.dtype}"
        )
    t, s = scores_shape[-2], scores_shape[-1]
    ok = attn_mask.dim() >= 2 and tuple(attn_mask.shape[-2:]) == (t, s)
    if ok and attn_mask.dim() > len(scores_shape):
        ok = False
    if ok:
        lead_mask = attn_mask.shape[:-2]
        lead_scores = scores_shape[-2 - len(lead_mask) : -2] if lead_mask else ()
        ok = all(m in (1, n) for m, n in zip(lead_mask, lead_scores, strict=True))
    if not ok:
        raise ValueError(
            f"attn_mask: expected shape (T, S) = ({t}, {s}) or one broadcastable to the scores "
            f"{tuple(scores_shape)}, got {tuple(attn_mask.shape)}"
        )


def check_key_mask(key_mask: Tensor, batch_size: int, num_keys: int) -> None:
    """Validate ``key_mask``: boolean, shape (B, S)."""
    if not isinstance(key_mask, Tensor):
        raise TypeError(f"key_mask: expected a tensor, got {type(key_mask).__name__}")
    if key_mask.dtype != torch.bool:
        raise TypeError(
            f"key_mask: expected dtype torch.bool (True = real token), got {key_mask.dtype}"
        )
    if tuple(key_mask.shape) != (batch_size, num_keys):
        raise ValueError(
            f"key_mask: expected shape (B, S) = ({batch_size}, {num_keys}), "
            f"got {tuple(key_mask.shape)}"
        )
