"""Recurrent cells: one time step, ``cell(x (B, I), state) -> (y (B, H), new_state)``.

A cell owns its parameters (torch.nn names and shapes) and calls the pure step math in
:mod:`seqlab.functional.cells`; it never loops over time. Any object with this contract
(``forward(x, state)``, ``initial_state(batch_size, dtype=, device=)`` and ``hidden_size``)
runs under :class:`seqlab.Recurrent`, :class:`seqlab.Bidirectional` and the training tools.

==============  ==========  ==========================================
parameter       shape       row blocks (each H rows)
==============  ==========  ==========================================
``weight_ih``   (G·H, I)    RNN: h · LSTM: i, f, g, o · GRU: r, z, n
``weight_hh``   (G·H, H)    same order
``bias_ih``     (G·H,)      present when ``bias=True``
``bias_hh``     (G·H,)      present when ``bias=True``
==============  ==========  ==========================================
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqlab import functional as SF
from seqlab.functional.cells import GATES, LSTMState
from seqlab.init import check_init, init_recurrent
from seqlab.validation import require_float, require_like, require_shape, require_tensor


class _Cell(nn.Module):
    """Parameters and checks shared by every built-in cell."""

    mode: str  # the functional cell kind, a key of seqlab.functional.GATES

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        init: str = "default",
        forget_bias: float | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        check_init(init)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.init, self.forget_bias = init, forget_bias
        G = GATES[self.mode]
        self.weight_ih = nn.Parameter(torch.empty(G * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(G * hidden_size, hidden_size))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(G * hidden_size))
            self.bias_hh = nn.Parameter(torch.empty(G * hidden_size))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_recurrent(
            self.weight_ih,
            self.weight_hh,
            self.bias_ih,
            self.bias_hh,
            GATES[self.mode],
            self.init,
            self.forget_bias,
        )

    def initial_state(
        self, batch_size: int, *, dtype: torch.dtype | None = None, device=None
    ) -> Tensor | LSTMState:
        """Zeros: ``h`` (B, H), or ``LSTMState(h, c)`` for an LSTM."""
        h = torch.zeros(batch_size, self.hidden_size, dtype=dtype, device=device)
        return LSTMState(h, torch.zeros_like(h)) if self.mode == "lstm" else h

    def _check(self, x: Tensor, state) -> Tensor | LSTMState:
        require_tensor("input", x)
        require_float("input", x)
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(
                f"input: expected shape (batch, {self.input_size}), got {tuple(x.shape)}"
            )
        B = x.shape[0]
        if state is None:
            return self.initial_state(B, dtype=x.dtype, device=x.device)
        parts = ("h", "c") if self.mode == "lstm" else ("h",)
        tensors = (state,) if isinstance(state, Tensor) else tuple(state)
        if len(tensors) != len(parts):
            raise ValueError(f"state: expected {len(parts)} tensor(s) {parts}, got {len(tensors)}")
        for name, t in zip(parts, tensors, strict=True):
            require_tensor(f"state.{name}", t)
            require_shape(f"state.{name}", t, (B, self.hidden_size))
            require_like(f"state.{name}", t, x)
        return LSTMState(*tensors) if self.mode == "lstm" else tensors[0]

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


class RNNCell(_Cell):
    """Elman cell: ``h' = φ(x @ weight_ihᵀ + bias_ih + h @ weight_hhᵀ + bias_hh)``.

    φ = tanh (default) or relu. State: ``h`` (B, H); output ``y = h'``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        init: str = "default",
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.mode = f"rnn_{nonlinearity}"
        super().__init__(input_size, hidden_size, bias, init)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self._check(x, state)
        h = SF.rnn_cell(
            x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.nonlinearity
        )
        return h, h


class LSTMCell(_Cell):
    """LSTM cell, gates i, f, g, o; state ``LSTMState(h, c)``, each (B, H).

    ``[a_i, a_f, a_g, a_o] = x @ weight_ihᵀ + bias_ih + h @ weight_hhᵀ + bias_hh``;
    ``i, f, o = σ(a_i), σ(a_f), σ(a_o)``; ``g = tanh(a_g)``;
    ``c' = f ⊙ c + i ⊙ g``; ``h' = o ⊙ tanh(c')``; output ``y = h'``.

    ``forget_bias`` (e.g. 1.0) initialises the forget-gate bias (see :mod:`seqlab.init`).
    """

    mode = "lstm"

    def forward(
        self, x: Tensor, state: LSTMState | tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, LSTMState]:
        s = self._check(x, state)
        new = SF.lstm_cell(x, s, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        return new.h, new


class GRUCell(_Cell):
    """GRU cell, gates r, z, n; state ``h`` (B, H).

    ``r = σ(x_r + h_r)``, ``z = σ(x_z + h_z)``, ``h' = z ⊙ h + (1 − z) ⊙ n`` with
    ``[x_r, x_z, x_n] = x @ weight_ihᵀ + bias_ih`` and, for the candidate ``n``:

    * ``reset_after=True`` (default; torch.nn, cuDNN, Keras ``reset_after=True``):
      ``[h_r, h_z, h_n] = h @ weight_hhᵀ + bias_hh``, ``n = tanh(x_n + r ⊙ h_n)``;
    * ``reset_after=False`` (original, Cho et al. 2014): ``h_r, h_z`` as above and
      ``n = tanh(x_n + (r ⊙ h) @ W_hnᵀ + b_hn)`` where ``W_hn, b_hn`` are the n-blocks of
      ``weight_hh, bias_hh``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        reset_after: bool = True,
        init: str = "default",
    ) -> None:
        self.reset_after = reset_after
        self.mode = "gru" if reset_after else "gru_reset_before"
        super().__init__(input_size, hidden_size, bias, init)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self._check(x, state)
        h = SF.gru_cell(
            x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh, self.reset_after
        )
        return h, h

    def extra_repr(self) -> str:
        return super().extra_repr() + f", reset_after={self.reset_after}"
