"""Token + position embedding shared by TransformerLM and TransformerSeq2Seq.

    x = Drop(E[tokens] · √d_model + PE[offset : offset + T])         (B, T, d_model)

E is initialised N(0, 1/d_model) so E·√d_model has unit scale, comparable to PE (Vaswani et
al. 2017, §3.4).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqlab.attention.positional import LearnedPositionalEncoding, SinusoidalPositionalEncoding

__all__ = ["TokenEmbedding", "check_tokens"]


def check_tokens(name: str, tokens: Tensor, vocab_size: int, dim: int = 2) -> None:
    """Tokens must be an integer tensor of ``dim`` dims with ids in [0, vocab_size)."""
    if not isinstance(tokens, Tensor):
        raise TypeError(f"{name}: expected a LongTensor, got {type(tokens).__name__}")
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer (long) tensor, got dtype {tokens.dtype}")
    if tokens.dim() != dim:
        want = "(B,)" if dim == 1 else "(B, T)"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(tokens.shape)}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(
            f"{name}: token ids must lie in [0, {vocab_size}), got range "
            f"[{int(tokens.min())}, {int(tokens.max())}]"
        )


class TokenEmbedding(nn.Module):
    """Token + position embedding: ``x = Drop(E[tokens] · √d_model + PE[offset : offset +
    T])``, (B, T, d_model); PE learned or sinusoidal (see the module docstring)."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        max_len: int,
        positional: str = "sinusoidal",
        dropout: float = 0.0,
        pad_id: int | None = None,
    ) -> None:
        super().__init__()
        if vocab_size <= 0:
            raise ValueError(f"vocab_size: expected a positive int, got {vocab_size}")
        if pad_id is not None and not 0 <= pad_id < vocab_size:
            raise ValueError(f"pad_id: expected None or an id in [0, {vocab_size}), got {pad_id}")
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.scale = math.sqrt(d_model)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        nn.init.normal_(self.embed.weight, std=d_model**-0.5)
        if pad_id is not None:
            with torch.no_grad():
                self.embed.weight[pad_id].zero_()
        if positional == "sinusoidal":
            self.position: nn.Module = SinusoidalPositionalEncoding(d_model, max_len)
        elif positional == "learned":
            self.position = LearnedPositionalEncoding(d_model, max_len)
        else:
            raise ValueError(f"positional: expected 'sinusoidal' or 'learned', got {positional!r}")
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: Tensor, offset: int = 0) -> Tensor:
        """``tokens`` (B, T) -> (B, T, d_model); ``offset`` = position of tokens[:, 0]."""
        x = self.embed(tokens) * self.scale
        return self.dropout(self.position(x, offset))
