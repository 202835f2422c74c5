"""Traced reference loop: every step's gate activations and states, for introspection.

Recorded names per cell kind (each traced tensor is (T, B, H), time-major, original time
order, zero at padded steps):

* RNN: ``a`` (pre-activation ``xw + h @ w_hhᵀ + b_hh``), ``h``
* LSTM: ``i``, ``f``, ``g``, ``o``, ``c``, ``h``
* GRU: ``r``, ``z``, ``n``, ``h``
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqlab.functional.cells import (
    activate,
    gru_gates,
    linear,
    lstm_gates,
    rnn_preactivation,
)
from seqlab.functional.scan import scan

TRACE_NAMES = {
    "rnn_tanh": ("a", "h"),
    "rnn_relu": ("a", "h"),
    "lstm": ("i", "f", "g", "o", "c", "h"),
    "gru": ("r", "z", "n", "h"),
    "gru_reset_before": ("r", "z", "n", "h"),
}


def _traced_step(mode: str, w_hh: Tensor, b_hh: Tensor | None):
    def step(xw: Tensor, state: tuple[Tensor, ...]):
        h = state[0]
        if mode == "lstm":
            i, f, g, o = lstm_gates(xw, h, w_hh, b_hh)
            c = f * state[1] + i * g
            h = o * torch.tanh(c)
            record, new_state = (i, f, g, o, c, h), (h, c)
        elif mode.startswith("gru"):
            r, z, n = gru_gates(xw, h, w_hh, b_hh, reset_after=mode == "gru")
            h = n + z * (h - n)
            record, new_state = (r, z, n, h), (h,)
        else:
            a = rnn_preactivation(xw, h, w_hh, b_hh)
            h = activate(a, "tanh" if mode == "rnn_tanh" else "relu")
            record, new_state = (a, h), (h,)
        # scan masks and stacks a Tensor output; pack the record along a new last axis
        return torch.stack(record, dim=-1), new_state

    return step


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
    """Like :func:`seqlab.functional.reference_layer`, also returning the trace dict."""
    xw = linear(x, w_ih, b_ih)  # (T, B, G·H)
    packed, final = scan(_traced_step(mode, w_hh, b_hh), xw, tuple(state), lengths, reverse)
    names = TRACE_NAMES[mode]
    trace = {name: packed[..., k] for k, name in enumerate(names)}  # each (T, B, H)
    return trace["h"], final, trace
