"""A Transformer encoder with the recurrent encoders' contract, for many-to-one models.

    z = x W_inᵀ (only when I ≠ E);  z = z + P[0:T];  o = EncoderStack(z, key_mask, causal)

``forward(x (B, T, I), lengths (B,) | None, state=None) -> (o (B, T, E), None)``: the same
call as :class:`seqlab.models.encoders.RecurrentEncoder`, so
:class:`~seqlab.models.SequenceClassifier` / ``SequenceRegressor`` take it as their encoder
(``cell="transformer"``). Padded steps are masked out of every attention and their outputs
are 0; there is no recurrent final state (``None``), so "last" pooling reads ``o`` at each
row's last valid step. ``causal=True`` lets step t see only steps ≤ t (then the last step
summarises the whole window, like a recurrent read). Pre-norm layers, learned positions
(table of ``max_len``), feed-forward width 4E.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqlab.attention.masks import key_mask_from_lengths
from seqlab.attention.positional import LearnedPositionalEncoding

from .stacks import LayerConfig, TransformerEncoder

__all__ = ["SequenceEncoder"]


class SequenceEncoder(nn.Module):
    """Transformer encoder with the recurrent encoders' call: ``forward(x (B, T, I),
    lengths, state=None) -> (o (B, T, E), None)``; padded steps are masked and output 0
    (see the module docstring)."""

    directions = 1

    def __init__(
        self,
        input_size: int,
        d_model: int,
        nhead: int = 4,
        num_layers: int = 1,
        dropout: float = 0.0,
        max_len: int = 512,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(input_size, d_model) if input_size != d_model else None
        self.position = LearnedPositionalEncoding(d_model, max_len)
        layer = LayerConfig(d_model, nhead, 4 * d_model, dropout, norm_first=True)
        self.body = TransformerEncoder(layer, num_layers)
        self.hidden_size, self.max_len, self.causal = d_model, max_len, causal

    @property
    def output_size(self) -> int:
        return self.hidden_size

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, state: None = None
    ) -> tuple[Tensor, None]:
        if state is not None:
            raise ValueError("state: a Transformer encoder carries no state; pass None")
        steps = x.shape[1]
        if steps > self.max_len:
            raise ValueError(f"x: sequence length {steps} exceeds max_len={self.max_len}")
        z = self.position(self.proj(x) if self.proj is not None else x)  # (B, T, E)
        mask = None if lengths is None else key_mask_from_lengths(lengths.to(x.device), steps)
        out = self.body(z, src_key_mask=mask, is_causal=self.causal)
        if mask is not None:
            out = out * mask.unsqueeze(-1).to(out.dtype)  # padded steps exactly 0
        return out, None

    def last(self, out: Tensor, lengths: Tensor | None) -> Tensor:
        """o at each row's last valid step (B, E)."""
        if lengths is None:
            return out[:, -1]
        return out[torch.arange(out.shape[0], device=out.device), lengths.to(out.device) - 1]
