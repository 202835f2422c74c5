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


def check_state(
    state: object, names: Sequence[str], shape: Sequence[int], like: Tensor
) -> tuple[Tensor, ...]:
    """A recurrent state as its tuple of parts, each of ``shape`` and ``like``'s dtype/device.

    ``state`` is a Tensor (one part) or a tuple of Tensors named ``names`` (e.g. ``h, c``);
    errors name the part: ``state.c: expected shape (2, 4), got (2, 5)``.
    """
    tensors = (state,) if isinstance(state, Tensor) else tuple(state)  # type: ignore[arg-type]
    if len(tensors) != len(names):
        raise ValueError(
            f"state: expected {len(names)} tensor(s) {tuple(names)}, got {len(tensors)}"
        )
    for name, t in zip(names, tensors, strict=True):
        require_tensor(f"state.{name}", t)
        require_shape(f"state.{name}", t, shape)
        require_like(f"state.{name}", t, like)
    return tensors


def check_lengths(
    lengths: object,
    batch: int,
    steps: int,
    device: torch.device | None = None,
    *,
    name: str = "lengths",
) -> Tensor | None:
    """Validate per-row lengths, the one rule of every public entry point.

    ``lengths[b]`` is the number of valid steps of row ``b`` (padding at the end): an
    integer in ``1..steps``, one per batch row. An empty row (0) is rejected at the public
    boundary, as ``torch.nn.utils.rnn.pack_padded_sequence`` does; the engine below it
    (:func:`seqlab.engine.run`) also runs 0 as "no steps: output 0, state unchanged".
    Lists and tuples are accepted; None stays None. Returns a long tensor on ``device``
    (default: its own).
    """
    if lengths is None:
        return None
    if isinstance(lengths, (list, tuple)):
        lengths = torch.tensor(lengths)
    lengths = require_tensor(name, lengths)
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer tensor, got dtype {lengths.dtype}")
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(
            f"{name}: expected shape ({batch},) (one per batch row), got {tuple(lengths.shape)}"
        )
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise ValueError(
            f"{name}: expected values in 1..{steps} (the number of time steps), "
            f"got min {int(lengths.min())}, max {int(lengths.max())}"
        )
    return lengths.to(device=device or lengths.device, dtype=torch.long)
