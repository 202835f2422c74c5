"""Traced reference loop: every step's gate activations and states, for introspection.

The recorded names are each cell kind's ``trace`` in :mod:`seqlab.functional.spec`; e.g.
RNN ``a`` (pre-activation ``xw + h @ w_hhᵀ + b_hh``), ``h``; LSTM ``i``, ``f``, ``g``,
``o``, ``c``, ``h``; GRU ``r``, ``z``, ``n``, ``h``. Each traced tensor is (T, B, H),
time-major, in the original time order, zero at padded steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from seqlab.functional.scan import scan, with_h_mask
from seqlab.functional.spec import CellSpec, Params, SpecView, get_spec

TRACE_NAMES = SpecView(lambda spec: spec.trace)  # kept for older callers


def traced_run(
    mode: str | CellSpec,
    x: Tensor,
    state: Sequence[Tensor],
    params: Params,
    lengths: Tensor | None = None,
    reverse: bool = False,
    h_mask: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, ...], dict[str, Tensor]]:
    """Like :func:`seqlab.functional.scan.reference_run`, also returning the trace dict."""
    spec = get_spec(mode)
    if h_mask is not None:
        params = with_h_mask(spec, params, h_mask)

    def step(xw: Tensor, s: tuple[Tensor, ...]):
        new, record = spec.step(xw, s, params)
        # scan masks and stacks a Tensor output; pack the record along a new last axis
        return torch.stack(record, dim=-1), new

    xw = spec.project(x, params)
    packed, final = scan(step, xw, tuple(state), lengths, reverse)
    trace = {name: packed[..., k] for k, name in enumerate(spec.trace)}  # each (T, B, H)
    return trace["h"], final, trace


def traced_layer(
    mode: str,
    x: Tensor,
    state: tuple[Tensor, ...],
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    lengths: Tensor | None = None,
    reverse: bool = False,
) -> tuple[Tensor, tuple[Tensor, ...], dict[str, Tensor]]:
    """:func:`traced_run` for a classic cell given ``(w_ih, w_hh, b_ih, b_hh)``."""
    params = {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}
    return traced_run(mode, x, state, params, lengths, reverse)
