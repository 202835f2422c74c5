"""Recurrent cells: one time step, ``cell(x (B, I), state) -> (y (B, H), new_state)``.

A cell is its kind's description (:mod:`seqlab.functional.spec`) plus parameters: it
creates them from the description (torch.nn names and shapes for the classic cells), checks
the state against the description's state parts and runs the description's reference step;
it never loops over time. :class:`seqlab.Recurrent` runs seqlab's own cells on the fast
engine (the same as the layers); any other object with this contract (``forward(x, state)``,
``initial_state(batch_size, dtype=, device=)`` and ``hidden_size``) runs on the reference
loop under :class:`seqlab.Recurrent`, :class:`seqlab.Bidirectional` and the training tools.

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

from typing import Any

import torch
from torch import Tensor, nn

from seqlab.functional.cells import LSTMState
from seqlab.functional.spec import CellSpec, get_spec
from seqlab.init import check_init, init_params
from seqlab.validation import check_state, require_float, require_tensor


def make_parameters(
    module: nn.Module, spec: CellSpec, input_size: int, hidden_size: int, bias: bool, suffix=""
) -> None:
    """Register ``spec``'s parameters on ``module`` as ``attr + suffix`` (empty, uninitialised).

    The one place parameters are created, for cells (``suffix=""``) and layers
    (``"_l0"``, ``"_l0_reverse"``, ...). Absent biases are registered as None.
    """
    for p in spec.params:
        name = p.attr + suffix
        if p.bias and not bias:
            module.register_parameter(name, None)
        else:
            shape = p.shape(spec.G, input_size, hidden_size)
            module.register_parameter(name, nn.Parameter(torch.empty(shape)))


def parameters_of(module: nn.Module, spec: CellSpec, suffix: str = "") -> dict[str, Any]:
    """``{functional name: tensor or None}`` of one cell / layer direction."""
    return {p.name: getattr(module, p.attr + suffix, None) for p in spec.params}


def check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")


class Cell(nn.Module):
    """A cell of any registered kind: ``Cell("lstm", 3, 4)`` is an :class:`LSTMCell`'s twin.

    ``forward(x (B, I), state=None) -> (h (B, H), new_state)``; the state is ``h`` or the
    kind's ``state_type`` (``LSTMState(h, c)``). The equations are the kind's reference step.
    """

    kinds: tuple[str, ...] = ()  # the cell kinds a subclass builds (see make_cell)

    def __init__(
        self,
        mode: str | CellSpec,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        init: str = "default",
        forget_bias: float | None = None,
    ) -> None:
        super().__init__()
        check_sizes(input_size=input_size, hidden_size=hidden_size)
        check_init(init)
        self.mode = get_spec(mode).name
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.init, self.forget_bias = init, forget_bias
        make_parameters(self, self.spec, input_size, hidden_size, bias)
        self.reset_parameters()

    @property
    def spec(self) -> CellSpec:
        """This cell kind's description (looked up, so the module pickles without it)."""
        return get_spec(self.mode)

    def params(self) -> dict[str, Any]:
        """The parameters by functional name (``w_ih``, ``w_hh``, ``b_ih``, ``b_hh``, ...)."""
        return parameters_of(self, self.spec)

    def reset_parameters(self) -> None:
        init_params(self.spec, self.params(), self.hidden_size, self.init, self.forget_bias)

    def initial_state(
        self, batch_size: int, *, dtype: torch.dtype | None = None, device=None
    ) -> Tensor | LSTMState:
        """Zeros: ``h`` (B, H), or e.g. ``LSTMState(h, c)`` for an LSTM."""
        like = torch.empty(0, dtype=dtype, device=device)
        return self.spec.pack(self.spec.default_state(batch_size, self.hidden_size, like))

    def check_state(self, state: Any, batch: int, like: Tensor) -> tuple[Tensor, ...]:
        """The state as its tuple of parts, each (B, H) like ``like``; zeros if None."""
        if state is None:
            return self.spec.default_state(batch, self.hidden_size, like)
        return check_state(state, self.spec.state, (batch, self.hidden_size), like)

    def _check(self, x: Tensor, state: Any) -> tuple[Tensor, ...]:
        require_tensor("input", x)
        require_float("input", x)
        if x.dim() != 2 or x.shape[1] != self.input_size:
            raise ValueError(
                f"input: expected shape (batch, {self.input_size}), got {tuple(x.shape)}"
            )
        return self.check_state(state, x.shape[0], x)

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        parts = self._check(x, state)
        p = self.params()
        new, _ = self.spec.step(self.spec.project(x, p), parts, p)
        return new[0], self.spec.pack(new)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias}"


class RNNCell(Cell):
    """Elman cell: ``h' = φ(x @ weight_ihᵀ + bias_ih + h @ weight_hhᵀ + bias_hh)``.

    φ = tanh (default) or relu. State: ``h`` (B, H); output ``y = h'``.
    """

    kinds = ("rnn_tanh", "rnn_relu")

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
        super().__init__(f"rnn_{nonlinearity}", input_size, hidden_size, bias, init)
        self.nonlinearity = nonlinearity


class LSTMCell(Cell):
    """LSTM cell, gates i, f, g, o; state ``LSTMState(h, c)``, each (B, H).

    ``[a_i, a_f, a_g, a_o] = x @ weight_ihᵀ + bias_ih + h @ weight_hhᵀ + bias_hh``;
    ``i, f, o = σ(a_i), σ(a_f), σ(a_o)``; ``g = tanh(a_g)``;
    ``c' = f ⊙ c + i ⊙ g``; ``h' = o ⊙ tanh(c')``; output ``y = h'``.

    ``forget_bias`` (e.g. 1.0) initialises the forget-gate bias (see :mod:`seqlab.init`).
    """

    kinds = ("lstm",)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        init: str = "default",
        forget_bias: float | None = None,
    ) -> None:
        super().__init__("lstm", input_size, hidden_size, bias, init, forget_bias)


class GRUCell(Cell):
    """GRU cell, gates r, z, n; state ``h`` (B, H).

    ``r = σ(x_r + h_r)``, ``z = σ(x_z + h_z)``, ``h' = z ⊙ h + (1 − z) ⊙ n`` with
    ``[x_r, x_z, x_n] = x @ weight_ihᵀ + bias_ih`` and, for the candidate ``n``:

    * ``reset_after=True`` (default; torch.nn, cuDNN, Keras ``reset_after=True``):
      ``[h_r, h_z, h_n] = h @ weight_hhᵀ + bias_hh``, ``n = tanh(x_n + r ⊙ h_n)``;
    * ``reset_after=False`` (original, Cho et al. 2014): ``h_r, h_z`` as above and
      ``n = tanh(x_n + (r ⊙ h) @ W_hnᵀ + b_hn)`` where ``W_hn, b_hn`` are the n-blocks of
      ``weight_hh, bias_hh``.
    """

    kinds = ("gru", "gru_reset_before")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        reset_after: bool = True,
        init: str = "default",
    ) -> None:
        mode = "gru" if reset_after else "gru_reset_before"
        super().__init__(mode, input_size, hidden_size, bias, init)
        self.reset_after = reset_after

    def extra_repr(self) -> str:
        return super().extra_repr() + f", reset_after={self.reset_after}"


def make_cell(mode: str | CellSpec, input_size: int, hidden_size: int, **kwargs: Any) -> Cell:
    """The cell of a kind: :class:`RNNCell`/:class:`LSTMCell`/:class:`GRUCell` for the
    classic kinds (with the description's ``options``), else :class:`Cell` itself."""
    spec = get_spec(mode)
    for cls in (RNNCell, LSTMCell, GRUCell):
        if spec.name in cls.kinds:
            return cls(input_size, hidden_size, **spec.options, **kwargs)
    return Cell(spec, input_size, hidden_size, **kwargs)
