"""Scaled dot-product attention, written out from the equation, with an optional fused path.

    scores  = Q Kᵀ · scale          scale = 1 / √d_k unless given        (..., T, S)
    scores += attn_mask             (floating masks are additive)
    scores  = -inf where not allowed (boolean attn_mask, key_mask, causal)
    weights = softmax(scores, over S)                                     (..., T, S)
    weights = dropout(weights, p)   (training only)
    Z       = weights · V                                                 (..., T, d_v)

Shapes:  Q (..., T, d_k)   K (..., S, d_k)   V (..., S, d_v)   key_mask (B, S)
The leading dims ``...`` are usually (B, h) or (B,); ``key_mask`` is broadcast over every
leading dim after the first. Mask conventions are documented in :mod:`seqlab.attention.masks`
(boolean True = attend).

A query row whose every key is masked gets zero weights and a zero output (not NaN), the same
as PyTorch's fused kernel. The causal mask is aligned bottom-right: query i is position
``S - T + i``, so the same call works on the new queries of a key/value cache.

``backend``:
  * ``"math"``  — always the written-out equations above (the reference);
  * ``"fused"`` — ``torch.nn.functional.scaled_dot_product_attention`` (no weights returned);
  * ``"auto"``  — fused whenever the math is the same: no weights requested and dropout
    inactive (the fused kernel's dropout draws different random numbers). Tests check fused ==
    math, values and gradients, over every mask combination it is used for.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .masks import causal_mask, check_attn_mask, check_key_mask

__all__ = ["scaled_dot_product_attention", "Backend"]

Backend = Literal["auto", "math", "fused"]


def _validate(query: Tensor, key: Tensor, value: Tensor) -> None:
    for name, t in (("query", query), ("key", key), ("value", value)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(t).__name__}")
        if not t.is_floating_point():  # integer scores would be truncated, complex unordered
            raise TypeError(f"{name}: expected a floating tensor, got dtype {t.dtype}")
        if t.dim() < 2:
            raise ValueError(f"{name}: expected at least 2 dims (..., L, d), got {tuple(t.shape)}")
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(
            f"key: last dim must equal the query's d_k={query.shape[-1]}, got {tuple(key.shape)}"
        )
    if key.shape[:-1] != value.shape[:-1]:
        raise ValueError(
            f"value: expected the key's leading shape {tuple(key.shape[:-1])} + (d_v,), "
            f"got {tuple(value.shape)}"
        )
    if query.shape[:-2] != key.shape[:-2]:
        raise ValueError(
            f"key: leading dims must equal the query's {tuple(query.shape[:-2])}, "
            f"got {tuple(key.shape)}"
        )


def _allowed_mask(
    query: Tensor,
    key: Tensor,
    attn_mask: Tensor | None,
    key_mask: Tensor | None,
    is_causal: bool,
) -> Tensor | None:
    """Combine every boolean restriction into one allow mask broadcastable to (..., T, S)."""
    t, s = query.shape[-2], key.shape[-2]
    allowed: Tensor | None = None
    if is_causal:
        allowed = causal_mask(t, s, device=query.device)  # (T, S)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        allowed = attn_mask if allowed is None else allowed & attn_mask
    if key_mask is not None:
        km = key_mask.view(key_mask.shape[0], *([1] * (query.dim() - 2)), s)  # (B, 1.., 1, S)
        allowed = km if allowed is None else allowed & km
    return allowed


def _math(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    additive: Tensor | None,
    allowed: Tensor | None,
    dropout_p: float,
    scale: float,
) -> tuple[Tensor, Tensor]:
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale  # (..., T, S)
    if additive is not None:
        scores = scores + additive
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    if additive is not None or allowed is not None:
        # Rows with no allowed key: softmax over all -inf is NaN; define them as zero weights.
        dead = torch.isneginf(scores).all(dim=-1, keepdim=True)  # (..., T, 1)
        scores = scores.masked_fill(dead, 0.0)
        weights = torch.softmax(scores, dim=-1).masked_fill(dead, 0.0)
    else:
        weights = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    return torch.matmul(weights, value), weights


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Tensor | None = None,
    key_mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
    training: bool = True,
    need_weights: bool = False,
    scale: float | None = None,
    backend: Backend = "auto",
) -> tuple[Tensor, Tensor | None]:
    """Attention ``Z = softmax(Q Kᵀ · scale + mask) · V`` (see the module docstring).

    Args:
        query: (..., T, d_k).  key: (..., S, d_k).  value: (..., S, d_v).
        attn_mask: boolean allow mask or additive floating mask, shape (T, S) or broadcastable
            to (..., T, S) (e.g. (B, 1, T, S) or (B, h, T, S)).
        key_mask: (B, S) boolean, True = real key, False = padding.
        is_causal: forbid query i from keys after position ``S - T + i``.
        dropout_p: dropout on the attention weights, applied only when ``training``.
        need_weights: also return the (post-dropout) weights (..., T, S); forces the math path.
        scale: score scale, default ``1 / sqrt(d_k)``.
        backend: ``"auto"``, ``"math"`` or ``"fused"``.

    Returns:
        ``(Z (..., T, d_v), weights (..., T, S) or None)``.
    """
    _validate(query, key, value)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p: expected a probability in [0, 1), got {dropout_p}")
    if backend not in ("auto", "math", "fused"):
        raise ValueError(f"backend: expected 'auto', 'math' or 'fused', got {backend!r}")
    t, s = query.shape[-2], key.shape[-2]
    if is_causal and t > s:
        raise ValueError(f"is_causal: needs T <= S, got T={t} queries and S={s} keys")
    if is_causal and t == 1:
        is_causal = False  # a single query at the last position may see every key
    scores_shape = torch.Size((*query.shape[:-1], s))
    if attn_mask is not None:
        check_attn_mask(attn_mask, scores_shape, query.dtype)
    if key_mask is not None:
        if query.dim() < 3:
            raise ValueError(f"key_mask: needs a batch dim on query, got {tuple(query.shape)}")
        check_key_mask(key_mask, query.shape[0], s)
    p = dropout_p if training else 0.0
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    if backend == "fused" and need_weights:
        raise ValueError("need_weights: the fused backend cannot return attention weights")
    use_fused = backend == "fused" or (backend == "auto" and not need_weights and p == 0.0)

    additive = attn_mask if attn_mask is not None and attn_mask.dtype != torch.bool else None
    if use_fused:
        if is_causal and t == s and attn_mask is None and key_mask is None:
            # Top-left and bottom-right alignment coincide when T == S: let the kernel do it.
            out = F.scaled_dot_product_attention(
                query, key, value, dropout_p=p, is_causal=True, scale=scale
            )
            return out, None
        allowed = _allowed_mask(query, key, attn_mask, key_mask, is_causal)
        mask = allowed
        if additive is not None:
            mask = additive if allowed is None else additive.masked_fill(~allowed, float("-inf"))
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=p, scale=scale
        )
        return out, None

    allowed = _allowed_mask(query, key, attn_mask, key_mask, is_causal)
    out, weights = _math(query, key, value, additive, allowed, p, scale)
    return out, (weights if need_weights else None)
