"""Recurrence backends. For now only the reference loop; fast backends plug in here."""

from __future__ import annotations

from torch import Tensor

from seqlab.functional.scan import reference_layer


def run_layer(
    mode: str,
    x: Tensor,
    state: tuple[Tensor, ...],
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    lengths: Tensor | None = None,
    reverse: bool = False,
    backend: str | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Run one layer in one direction (see :func:`seqlab.functional.reference_layer`)."""
    return reference_layer(mode, x, state, w_ih, w_hh, b_ih, b_hh, lengths, reverse)
