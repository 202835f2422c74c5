"""Input checks with messages that name the argument, the expected and the actual value."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def require_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def require_float(name: str, value: Tensor) -> None:
    if not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {value.dtype}")


def require_shape(name: str, value: Tensor, expected: Sequence[int]) -> None:
    if tuple(value.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {tuple(expected)}, got {tuple(value.shape)}")


def require_like(name: str, value: Tensor, ref: Tensor, ref_name: str = "input") -> None:
    """``value`` must share ``ref``'s dtype and device."""
    if value.dtype != ref.dtype:
        raise TypeError(f"{name}: expected dtype {ref.dtype} (as {ref_name}), got {value.dtype}")
    if value.device != ref.device:
        raise ValueError(
            f"{name}: expected device {ref.device} (as {ref_name}), got {value.device}"
        )


def check_lengths(lengths: object, batch: int, steps: int, device: torch.device) -> Tensor:
    """Validate per-row lengths: integer values in 1..steps, one per batch row.

    Returns them as a long tensor on ``device``.
    """
    if isinstance(lengths, (list, tuple)):
        lengths = torch.tensor(lengths)
    lengths = require_tensor("lengths", lengths)
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths: expected an integer tensor, got dtype {lengths.dtype}")
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(
            f"lengths: expected shape ({batch},) (one per batch row), got {tuple(lengths.shape)}"
        )
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise ValueError(
            f"lengths: expected values in 1..{steps} (the number of time steps), "
            f"got min {int(lengths.min())}, max {int(lengths.max())}"
        )
    return lengths.to(device=device, dtype=torch.long)
