"""One-step recurrence math: pure functions of (input, state, weights).

Shapes: ``B`` batch, ``I`` input features, ``H`` hidden units, ``G`` gates
(1 for RNN, 3 for GRU, 4 for LSTM). Weights use torch.nn's fused layout:

===========  ==========  =====================================
name         shape       rows, in order
===========  ==========  =====================================
``w_ih``     (G·H, I)    RNN: [h] · LSTM: [i, f, g, o] · GRU: [r, z, n]
``w_hh``     (G·H, H)    same row blocks as ``w_ih``
``b_ih``     (G·H,)      optional
``b_hh``     (G·H,)      optional
===========  ==========  =====================================

Each ``*_step`` function takes the input projection ``xw = x @ w_ihᵀ + b_ih`` already
computed (the "premultiplied" form), so a layer can project all time steps with one GEMM
and only the recurrent product ``h @ w_hhᵀ`` stays inside the loop. The ``*_cell``
functions are the plain one-step versions built on top of them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class LSTMState(NamedTuple):
    """State of an LSTM: hidden ``h`` and cell ``c`` (h first, like torch.nn)."""

    h: Tensor
    c: Tensor


def linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weightᵀ + bias`` over the last dimension."""
    return F.linear(x, weight, bias)


def rnn_preactivation(xw: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None) -> Tensor:
    """Elman pre-activation ``a = xw + h @ w_hhᵀ + b_hh`` (B, H)."""
    return xw + linear(h, w_hh, b_hh)


def activate(a: Tensor, nonlinearity: str) -> Tensor:
    """φ(a): ``tanh`` or ``relu``."""
    return torch.tanh(a) if nonlinearity == "tanh" else torch.relu(a)


def rnn_step(
    xw: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None, nonlinearity: str = "tanh"
) -> Tensor:
    """Elman step: ``h' = φ(xw + h @ w_hhᵀ + b_hh)`` with ``xw = x @ w_ihᵀ + b_ih``.

    φ is ``tanh`` or ``relu``. Returns ``h'`` of shape (B, H).
    """
    return activate(rnn_preactivation(xw, h, w_hh, b_hh), nonlinearity)


def lstm_gates(
    xw: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four LSTM gate activations ``(i, f, g, o)``, each (B, H).

    ``a = xw + h @ w_hhᵀ + b_hh`` split into ``a_i, a_f, a_g, a_o``;
    ``i = σ(a_i)``, ``f = σ(a_f)``, ``g = tanh(a_g)``, ``o = σ(a_o)``.
    """
    a_i, a_f, a_g, a_o = (xw + linear(h, w_hh, b_hh)).chunk(4, dim=-1)  # 4 × (B, H)
    return torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)


def lstm_step(xw: Tensor, state: LSTMState, w_hh: Tensor, b_hh: Tensor | None) -> LSTMState:
    """LSTM step, gates i, f, g, o (see :func:`lstm_gates`).

    ``c' = f ⊙ c + i ⊙ g``; ``h' = o ⊙ tanh(c')``.
    """
    h, c = state
    i, f, g, o = lstm_gates(xw, h, w_hh, b_hh)
    c_new = f * c + i * g
    return LSTMState(o * torch.tanh(c_new), c_new)


def gru_gates(
    xw: Tensor,
    h: Tensor,
    w_hh: Tensor,
    b_hh: Tensor | None,
    reset_after: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """GRU reset gate ``r``, update gate ``z`` and candidate ``n``, each (B, H).

    ``xw`` splits into ``x_r, x_z, x_n`` (input biases included).

    ``reset_after=True`` (torch.nn, cuDNN, Keras default): with
    ``hw = h @ w_hhᵀ + b_hh`` split into ``h_r, h_z, h_n``:
    ``r = σ(x_r + h_r)``, ``z = σ(x_z + h_z)``, ``n = tanh(x_n + r ⊙ h_n)``.

    ``reset_after=False`` (Cho et al. 2014, the original form): the reset gate scales
    ``h`` before the recurrent product of the candidate:
    ``n = tanh(x_n + (r ⊙ h) @ w_hnᵀ + b_hn)``.
    """
    x_r, x_z, x_n = xw.chunk(3, dim=-1)
    H = h.shape[-1]
    if reset_after:
        h_r, h_z, h_n = linear(h, w_hh, b_hh).chunk(3, dim=-1)
        r = torch.sigmoid(x_r + h_r)
        z = torch.sigmoid(x_z + h_z)
        return r, z, torch.tanh(x_n + r * h_n)
    b_rz = None if b_hh is None else b_hh[: 2 * H]
    b_n = None if b_hh is None else b_hh[2 * H :]
    h_r, h_z = linear(h, w_hh[: 2 * H], b_rz).chunk(2, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    return r, z, torch.tanh(x_n + linear(r * h, w_hh[2 * H :], b_n))


def gru_step(
    xw: Tensor,
    h: Tensor,
    w_hh: Tensor,
    b_hh: Tensor | None,
    reset_after: bool = True,
) -> Tensor:
    """GRU step, gates r, z, n (see :func:`gru_gates`): ``h' = z ⊙ h + (1 − z) ⊙ n``."""
    _, z, n = gru_gates(xw, h, w_hh, b_hh, reset_after)
    return n + z * (h - n)  # = z ⊙ h + (1 − z) ⊙ n


def rnn_cell(
    x: Tensor,
    h: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    nonlinearity: str = "tanh",
) -> Tensor:
    """One Elman step from the raw input: ``h' = φ(x @ w_ihᵀ + b_ih + h @ w_hhᵀ + b_hh)``."""
    return rnn_step(linear(x, w_ih, b_ih), h, w_hh, b_hh, nonlinearity)


def lstm_cell(
    x: Tensor,
    state: LSTMState | tuple[Tensor, Tensor],
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
) -> LSTMState:
    """One LSTM step from the raw input (see :func:`lstm_step`)."""
    return lstm_step(linear(x, w_ih, b_ih), LSTMState(*state), w_hh, b_hh)


def gru_cell(
    x: Tensor,
    h: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    reset_after: bool = True,
) -> Tensor:
    """One GRU step from the raw input (see :func:`gru_step`)."""
    return gru_step(linear(x, w_ih, b_ih), h, w_hh, b_hh, reset_after)
