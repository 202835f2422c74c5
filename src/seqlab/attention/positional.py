"""Positional encodings: attention itself is order-blind, so position is added to the input.

Sinusoidal (Vaswani et al. 2017, §3.5), for position p and channel pair i, width E:

    PE[p, 2i]   = sin(p / 10000^(2i / E))
    PE[p, 2i+1] = cos(p / 10000^(2i / E))

Learned: a trainable table P (max_len, E), P[p] added at position p.

Both modules map x (B, T, E) -> x + PE[offset : offset + T] (broadcast over B); ``offset`` is
the absolute position of x[:, 0] (non-zero during incremental decoding).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["sinusoidal_table", "SinusoidalPositionalEncoding", "LearnedPositionalEncoding"]


def sinusoidal_table(positions: Tensor, d_model: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Sinusoidal encodings for integer ``positions`` (N,) -> (N, d_model)."""
    if d_model <= 0:
        raise ValueError(f"d_model: expected a positive int, got {d_model}")
    pos = positions.to(torch.float64).unsqueeze(1)  # (N, 1), float64 so large p stay exact
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64, device=positions.device)
    angle = pos * torch.exp(-math.log(10000.0) * two_i / d_model)  # (N, ceil(E/2))
    table = torch.zeros(positions.shape[0], d_model, dtype=torch.float64, device=positions.device)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return table.to(dtype)


def _check_x(x: Tensor, d_model: int) -> None:
    if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != d_model:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x: expected shape (B, T, E) with E={d_model}, got {shape}")


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sinusoidal encoding; a table of ``max_len`` rows is cached, longer sequences are
    computed on the fly (the formula is defined for every position)."""

    pe: Tensor

    def __init__(self, d_model: int, max_len: int = 1024) -> None:
        super().__init__()
        if max_len <= 0:
            raise ValueError(f"max_len: expected a positive int, got {max_len}")
        self.d_model = d_model
        self.max_len = max_len
        # Not persistent: it is a function of (d_model, max_len), not learned state.
        self.register_buffer(
            "pe", sinusoidal_table(torch.arange(max_len), d_model), persistent=False
        )

    def encoding(self, length: int, offset: int = 0) -> Tensor:
        """PE rows for positions offset .. offset + length - 1 -> (length, E)."""
        if offset < 0:
            raise ValueError(f"offset: expected >= 0, got {offset}")
        if offset + length <= self.max_len:
            return self.pe[offset : offset + length]
        positions = torch.arange(offset, offset + length, device=self.pe.device)
        return sinusoidal_table(positions, self.d_model, self.pe.dtype)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        _check_x(x, self.d_model)
        return x + self.encoding(x.shape[1], offset).to(x.dtype)


class LearnedPositionalEncoding(nn.Module):
    """Trainable position table (max_len, E); positions >= max_len raise a ValueError."""

    def __init__(self, d_model: int, max_len: int = 1024, init_std: float = 0.02) -> None:
        super().__init__()
        if max_len <= 0:
            raise ValueError(f"max_len: expected a positive int, got {max_len}")
        self.d_model = d_model
        self.max_len = max_len
        self.weight = nn.Parameter(torch.randn(max_len, d_model) * init_std)

    def encoding(self, length: int, offset: int = 0) -> Tensor:
        if offset < 0:
            raise ValueError(f"offset: expected >= 0, got {offset}")
        if offset + length > self.max_len:
            raise ValueError(
                f"x: sequence positions {offset}..{offset + length - 1} exceed the learned "
                f"positional table max_len={self.max_len} (sequence length {offset + length})"
            )
        return self.weight[offset : offset + length]

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        _check_x(x, self.d_model)
        return x + self.encoding(x.shape[1], offset).to(x.dtype)
