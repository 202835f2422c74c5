"""Transformer encoder and decoder layers, post-norm (Vaswani et al.) and pre-norm.

Encoder layer, x (B, T, E):
    post-norm:  x = LN1(x + Drop(SelfAttn(x)));      x = LN2(x + Drop(FF(x)))
    pre-norm:   x = x + Drop(SelfAttn(LN1(x)));      x = x + Drop(FF(LN2(x)))
Decoder layer, y (B, T, E), encoder memory m (B, S, E):
    post-norm:  y = LN1(y + Drop(SelfAttn(y)));  y = LN2(y + Drop(CrossAttn(y, m)));
                y = LN3(y + Drop(FF(y)))
    pre-norm:   y = y + Drop(SelfAttn(LN1(y)));  y = y + Drop(CrossAttn(LN2(y), m));
                y = y + Drop(FF(LN3(y)))
    FF(x) = W_2 Drop(act(W_1 x + b_1)) + b_2,   W_1 (F, E), W_2 (E, F)

Pre-norm keeps an identity path from input to output (better-behaved gradients in deep
stacks); post-norm is the original. Submodule names match ``torch.nn.TransformerEncoderLayer``
/ ``TransformerDecoderLayer`` (self_attn, multihead_attn, linear1, linear2, norm1..3), so their
state_dicts load directly (see :mod:`seqlab.transformer.convert`).

Masks follow seqlab's convention (boolean True = attend; ``*_key_mask`` (B, L) True = real
token). ``past_kv`` / ``memory_kv`` are the per-layer caches used by incremental decoding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.attention.multihead import KVCache, MultiHeadAttention

__all__ = ["EncoderLayer", "DecoderLayer", "resolve_activation"]

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"relu": F.relu, "gelu": F.gelu}


def resolve_activation(activation: str) -> Callable[[Tensor], Tensor]:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(_ACTIVATIONS)}, got {activation!r}")
    return _ACTIVATIONS[activation]


class _FeedForwardMixin(nn.Module):
    def _init_ff(
        self, d_model: int, dim_feedforward: int, dropout: float, activation: str, bias: bool
    ) -> None:
        if dim_feedforward <= 0:
            raise ValueError(f"dim_feedforward: expected a positive int, got {dim_feedforward}")
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.activation_name = activation
        self.activation = resolve_activation(activation)

    def _ff(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


class EncoderLayer(_FeedForwardMixin):
    """Self-attention + feed-forward block (see module docstring).

    With ``is_causal=True`` and ``past_kv`` it is also the block of a decoder-only LM.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        norm_first: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout=dropout, bias=bias)
        self._init_ff(d_model, dim_feedforward, dropout, activation, bias)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward_with_cache(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_mask: Tensor | None = None,
        is_causal: bool = False,
        past_kv: KVCache | None = None,
    ) -> tuple[Tensor, KVCache]:
        """``src`` (B, T, E) -> (output (B, T, E), the self-attention K/V incl. ``past_kv``)."""

        def sa(x: Tensor) -> tuple[Tensor, KVCache]:
            r = self.self_attn(
                x, attn_mask=src_mask, key_mask=src_key_mask, is_causal=is_causal, past_kv=past_kv
            )
            return self.dropout1(r.output), r.kv

        x = src
        if self.norm_first:
            a, kv = sa(self.norm1(x))
            x = x + a
            x = x + self.dropout2(self._ff(self.norm2(x)))
        else:
            a, kv = sa(x)
            x = self.norm1(x + a)
            x = self.norm2(x + self.dropout2(self._ff(x)))
        return x, kv

    def forward(
        self,
        src: Tensor,
        src_mask: Tensor | None = None,
        src_key_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """``src`` (B, T, E) -> (B, T, E)."""
        return self.forward_with_cache(src, src_mask, src_key_mask, is_causal)[0]


class DecoderLayer(_FeedForwardMixin):
    """Masked self-attention + cross-attention to the memory + feed-forward."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: str = "relu",
        layer_norm_eps: float = 1e-5,
        norm_first: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout=dropout, bias=bias)
        self.multihead_attn = MultiHeadAttention(d_model, nhead, dropout=dropout, bias=bias)
        self._init_ff(d_model, dim_feedforward, dropout, activation, bias)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward_with_cache(
        self,
        tgt: Tensor,
        memory: Tensor | None = None,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_mask: Tensor | None = None,
        memory_key_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
        past_kv: KVCache | None = None,
        memory_kv: KVCache | None = None,
    ) -> tuple[Tensor, KVCache]:
        """``tgt`` (B, T, E), ``memory`` (B, S, E) or its projected ``memory_kv``.

        Returns (output (B, T, E), self-attention K/V including ``past_kv``).
        """
        if (memory is None) == (memory_kv is None):
            raise ValueError("memory: give exactly one of memory or memory_kv")

        def sa(x: Tensor) -> tuple[Tensor, KVCache]:
            r = self.self_attn(
                x,
                attn_mask=tgt_mask,
                key_mask=tgt_key_mask,
                is_causal=tgt_is_causal,
                past_kv=past_kv,
            )
            return self.dropout1(r.output), r.kv

        def ca(x: Tensor) -> Tensor:
            r = self.multihead_attn(
                x, memory, memory, attn_mask=memory_mask, key_mask=memory_key_mask,
                static_kv=memory_kv,
            )  # fmt: skip
            return self.dropout2(r.output)

        y = tgt
        if self.norm_first:
            a, kv = sa(self.norm1(y))
            y = y + a
            y = y + ca(self.norm2(y))
            y = y + self.dropout3(self._ff(self.norm3(y)))
        else:
            a, kv = sa(y)
            y = self.norm1(y + a)
            y = self.norm2(y + ca(y))
            y = self.norm3(y + self.dropout3(self._ff(y)))
        return y, kv

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        tgt_key_mask: Tensor | None = None,
        memory_key_mask: Tensor | None = None,
        tgt_is_causal: bool = False,
    ) -> Tensor:
        """``tgt`` (B, T, E), ``memory`` (B, S, E) -> (B, T, E)."""
        return self.forward_with_cache(
            tgt, memory, tgt_mask, memory_mask, tgt_key_mask, memory_key_mask, tgt_is_causal
        )[0]
