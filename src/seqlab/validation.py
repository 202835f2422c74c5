"""Input checks with messages that name the argument, the expected and the actual value."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class SeqlabInputError(ValueError, RuntimeError):
    """A bad shape, size or length at the public boundary.

    Both a ValueError (seqlab's documented error) and a RuntimeError (what torch.nn raises
    for the same mistakes), so either ``except`` clause of a torch.nn user catches it.
    """


class SeqlabTypeError(TypeError, ValueError):
    """A value of the wrong type where torch.nn and seqlab disagree on the class: a constructor
    size like ``hidden_size=4.0`` (torch: TypeError, seqlab documented ValueError), or an input
    whose dtype differs from the layer's (torch: ValueError, seqlab documented TypeError).
    This is both, so either side's ``except`` clause catches it.
    """


def require_tensor(name: str, value: object) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def require_float(name: str, value: Tensor) -> None:
    if not value.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got dtype {value.dtype}")


def require_shape(name: str, value: Tensor, expected: Sequence[int]) -> None:
    if tuple(value.shape) != tuple(expected):
        raise SeqlabInputError(
            f"{name}: expected shape {tuple(expected)}, got {tuple(value.shape)}"
        )


def require_like(name: str, value: Tensor, ref: Tensor, ref_name: str = "input") -> None:
    """``value`` must share ``ref``'s dtype and device."""
    if value.dtype != ref.dtype:
        raise SeqlabTypeError(
            f"{name}: expected dtype {ref.dtype} (as {ref_name}), got {value.dtype}"
        )
    if value.device != ref.device:
        raise SeqlabInputError(
            f"{name}: expected device {ref.device} (as {ref_name}), got {value.device}"
        )


def check_state(
    state: object,
    names: Sequence[str],
    shape: Sequence[int],
    like: Tensor,
    only: Sequence[int] | None = None,
) -> tuple[Tensor, ...]:
    """A recurrent state as its tuple of parts, each of ``shape`` and ``like``'s dtype/device.

    ``state`` is a Tensor (one part) or a tuple of Tensors named ``names`` (e.g. ``h, c``);
    errors name the part: ``state.c: expected shape (2, 4), got (2, 5)``. ``only``: the
    indices of the parts to check (all by default).
    """
    tensors = (state,) if isinstance(state, Tensor) else tuple(state)  # type: ignore[arg-type]
    if len(tensors) != len(names):
        raise SeqlabInputError(
            f"state: expected {len(names)} tensor(s) {tuple(names)}, got {len(tensors)}"
        )
    for k, (name, t) in enumerate(zip(names, tensors, strict=True)):
        if only is not None and k not in only:  # parts of other shapes, checked separately
            continue
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
        raise SeqlabInputError(
            f"{name}: expected shape ({batch},) (one per batch row), got {tuple(lengths.shape)}"
        )
    if _range_checked_in_graph(name, lengths, 1, steps):
        pass
    elif batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise SeqlabInputError(
            f"{name}: expected values in 1..{steps} (the number of time steps), "
            f"got min {int(lengths.min())}, max {int(lengths.max())}"
        )
    return lengths.to(device=device or lengths.device, dtype=torch.long)


def _range_checked_in_graph(name: str, lengths: Tensor, low: int, steps: int) -> bool:
    """While ``torch.compile`` traces (``fullgraph=True`` included), check the values of
    ``lengths`` inside the graph and return True; eagerly return False.

    A Python branch on tensor values cannot be traced (Dynamo would break the graph, an
    error with ``fullgraph=True``), so the compiled graph asserts instead
    (``torch._assert_async``): out-of-range lengths raise RuntimeError when it runs.
    """
    if not torch.compiler.is_compiling():
        return False
    ok = ((lengths >= low) & (lengths <= steps)).all()
    torch._assert_async(ok, f"{name}: expected values in {low}..T (T: the number of time steps)")
    return True


def check_run_lengths(lengths: object, batch: int, steps: int) -> None:
    """Lengths given to :func:`seqlab.engine.run` / ``run_layer``: None or an integer
    tensor of shape ``(batch,)`` with values in ``0..steps`` (0: the row has no steps).

    Float lengths would be truncated (2.9 -> 2) and bool ones read as 0/1 by the kernels,
    so both are refused by type, as negative values are by range.
    """
    if lengths is None:
        return
    require_tensor("lengths", lengths)
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths: expected an integer tensor, got dtype {lengths.dtype}")
    if tuple(lengths.shape) != (batch,):
        raise SeqlabInputError(
            f"lengths: expected shape ({batch},) (one per batch row), got {tuple(lengths.shape)}"
        )
    if _range_checked_in_graph("lengths", lengths, 0, steps):
        return
    if batch and (int(lengths.min()) < 0 or int(lengths.max()) > steps):
        raise SeqlabInputError(
            f"lengths: expected values in 0..{steps} (the number of time steps), "
            f"got min {int(lengths.min())}, max {int(lengths.max())}"
        )


def check_sizes(minimum: int = 1, **sizes: object) -> None:
    """Each size an int >= ``minimum`` (bool refused: ``hidden_size=True`` is a mistake).

    ``minimum=0`` for the cells, which torch.nn builds with zero sizes; layers need 1.
    """
    kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise SeqlabTypeError(f"{name}: expected {kind}, got {value!r}")
        if value < minimum:
            raise ValueError(f"{name}: expected {kind}, got {value!r}")


def check_flag(name: str, value: object) -> None:
    """A bool argument; like torch.nn (``bias="False"`` is truthy), anything else is a TypeError."""
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {type(value).__name__} {value!r}")


def check_dropout(dropout: object) -> float:
    """A probability in [0, 1] (1 included, as torch.nn); returns it as a float."""
    ok = isinstance(dropout, (int, float)) and not isinstance(dropout, bool)
    if not ok or not 0.0 <= float(dropout) <= 1.0:  # type: ignore[arg-type]
        raise ValueError(f"dropout: expected a probability in [0, 1], got {dropout!r}")
    return float(dropout)  # type: ignore[arg-type]
