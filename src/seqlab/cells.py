"""Recurrent cells: one time step, called as torch.nn's, stepped by seqlab's composition.

The cell contract has two calls:

* ``cell(x, hx=None)`` — torch.nn's: ``x`` (B, I) or unbatched (I,), returns the new state
  only: ``h`` (B, H) for a 1-part state (RNN, GRU, IndRNN, ...), the state tuple
  (``LSTMState(h, c)``, a NamedTuple, so ``h, c = cell(x, (h, c))``) for a multi-part one.
  ``hx = cell(x, hx)`` loops work as with torch.nn.
* ``cell.step(x, state) -> (y, new_state)`` — what composition runs
  (:class:`seqlab.Recurrent`, :class:`~seqlab.Bidirectional`, :class:`~seqlab.Stacked`,
  the models' ``CellStack``, :func:`seqlab.functional.scan` loops, the Probe, the ONNX
  export, gradient-flow tools). For seqlab's cells ``y`` is ``h``, the state's part 0.

Which function composition calls for a cell (:func:`cell_step`):

1. a cell with a callable ``step`` attribute: ``cell.step``;
2. any other module: ``cell`` itself, under the older contract
   ``forward(x, state) -> (y, new_state)`` (plus ``initial_state(batch_size, dtype=,
   device=)`` and ``hidden_size``) — user cells written against it keep working.

Subclasses of :class:`Cell`: ``Cell.step`` calls the module (``self(x, state)``, so
``forward`` overrides, replaced ``forward`` attributes and hooks run) and reads the result
as the new state in the kind's state parts, ``y`` being part 0. So a subclass may

* override ``forward`` only: it must return what torch.nn's cells return (the new state);
  returning ``(y, new_state)`` is rejected with a TypeError naming the rule;
* override ``step``: composition calls it and ``forward`` is not used there.

Only a cell with neither overridden (nor replaced, nor hooked) runs on the fast engine.

As torch.nn's cells, seqlab's take zero sizes and unbatched input (``x`` (I,), state parts
(H,)).

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

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from seqlab.functional.cells import LSTMState
from seqlab.functional.spec import CellSpec, get_spec
from seqlab.init import check_init, init_params
from seqlab.validation import (
    SeqlabInputError,
    check_flag,
    check_sizes,
    check_state,
    require_float,
    require_tensor,
)

__all__ = [
    "Cell",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "make_cell",
    "cell_step",
    "check_sizes",
]


def make_parameters(
    module: nn.Module,
    spec: CellSpec,
    input_size: int,
    hidden_size: int,
    bias: bool,
    suffix: str = "",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Register ``spec``'s parameters on ``module`` as ``attr + suffix`` (empty, uninitialised).

    The one place parameters are created, for cells (``suffix=""``) and layers
    (``"_l0"``, ``"_l0_reverse"``, ...). Absent biases are registered as None.
    ``device``/``dtype`` are torch.nn's factory arguments.
    """
    for p in spec.params:
        name = p.attr + suffix
        if p.bias and not bias:
            module.register_parameter(name, None)
        else:
            shape = p.shape(spec.G, input_size, hidden_size)
            module.register_parameter(
                name, nn.Parameter(torch.empty(shape, device=device, dtype=dtype))
            )


def parameters_of(module: nn.Module, spec: CellSpec, suffix: str = "") -> dict[str, Any]:
    """``{functional name: tensor or None}`` of one cell / layer direction."""
    return {p.name: getattr(module, p.attr + suffix, None) for p in spec.params}


class Cell(nn.Module):
    """A cell of any registered kind: ``Cell("lstm", 3, 4)`` is an :class:`LSTMCell`'s twin.

    ``forward(x (B, I), state=None) -> new_state`` as torch.nn's cells: ``h`` (B, H) for a
    1-part state, else the kind's ``state_type`` (``LSTMState(h, c)``);
    ``step(x, state) -> (h, new_state)`` for composition (see the module docstring). The
    equations are the kind's reference step.
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
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_sizes(0, input_size=input_size, hidden_size=hidden_size)  # torch.nn allows 0
        check_flag("bias", bias)
        check_init(init)
        self.mode = get_spec(mode).name
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.init, self.forget_bias = init, forget_bias
        make_parameters(self, self.spec, input_size, hidden_size, bias, "", device, dtype)
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
            raise SeqlabInputError(
                f"input: expected shape (batch, {self.input_size}), got {tuple(x.shape)}"
            )
        return self.check_state(state, x.shape[0], x)

    def forward(self, x: Tensor, state: Any = None) -> Any:
        """The new state as torch.nn's cells return it: ``h`` or e.g. ``LSTMState(h, c)``.

        Unbatched as torch.nn: ``x`` (I,), state parts (H,).
        """
        unbatched = isinstance(x, Tensor) and x.dim() == 1
        if unbatched:
            x, state = x.unsqueeze(0), self._batch_state(state)
        parts = self._check(x, state)
        p = self.params()
        new, _ = self.spec.step(self.spec.project(x, p), parts, p)
        if unbatched:
            new = tuple(part.squeeze(0) for part in new)
        return self.spec.pack(new)

    def step(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """``(y, new_state)`` with ``y = h`` (part 0): the module's call, read by state parts.

        Calls ``self(x, state)``, so a subclass's ``forward`` (and hooks) run; its result
        must be the new state (``h``, or the kind's parts), as torch.nn's cells return.
        """
        new = self(x, state)
        parts = self.spec.unpack(new)
        if len(parts) != len(self.spec.state) or not all(isinstance(t, Tensor) for t in parts):
            raise TypeError(
                f"{type(self).__name__}.forward: expected the new state as torch.nn's cells "
                f"return it ({self._state_doc()}), got {_describe(new)}; a Cell subclass "
                "whose forward returns (y, new_state) must override step instead (see the "
                "cell contract in seqlab.cells)"
            )
        return parts[0], self.spec.pack(parts)

    def _state_doc(self) -> str:
        names = self.spec.state
        if len(names) == 1:
            return f"a Tensor {names[0]}"
        kind = self.spec.state_type.__name__ if self.spec.state_type else "tuple"
        return f"{kind}({', '.join(names)})"

    def _batch_state(self, state: Any) -> Any:
        """An unbatched state (parts (H,)) as a batch of one; None stays None."""
        if state is None:
            return None
        parts = self.spec.unpack(state)
        for name, part in zip(self.spec.state, parts, strict=False):
            if isinstance(part, Tensor) and part.dim() != 1:
                raise SeqlabInputError(
                    f"state.{name}: expected shape ({self.hidden_size},) for an unbatched "
                    f"input, got {tuple(part.shape)}"
                )
        return tuple(part.unsqueeze(0) if isinstance(part, Tensor) else part for part in parts)

    def extra_repr(self) -> str:
        """torch.nn's cell repr (``LSTMCell(3, 4, bias=False)``), then seqlab's own options."""
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity={self.nonlinearity}"
        if getattr(self, "reset_after", True) is not True:
            s += f", reset_after={self.reset_after}"
        if self.init != "default":
            s += f", init={self.init!r}"
        if self.forget_bias is not None:
            s += f", forget_bias={self.forget_bias!r}"
        return s


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
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(
            f"rnn_{nonlinearity}", input_size, hidden_size, bias, init, None, device, dtype
        )


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
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__("lstm", input_size, hidden_size, bias, init, forget_bias, device, dtype)


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
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_flag("reset_after", reset_after)
        self.reset_after = reset_after
        mode = "gru" if reset_after else "gru_reset_before"
        super().__init__(mode, input_size, hidden_size, bias, init, None, device, dtype)


def _describe(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f"a Tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__name__} of ({', '.join(type(o).__name__ for o in obj)})"
    return type(obj).__name__


def cell_step(cell: Callable[..., Any]) -> Callable[[Tensor, Any], tuple[Tensor, Any]]:
    """The one-step function composition runs for ``cell``: ``(x, state) -> (y, new_state)``.

    ``cell.step`` when the cell has a callable ``step`` (seqlab's cells, any cell written
    to the new contract), else ``cell`` itself (the older contract, ``forward`` returning
    ``(y, new_state)``). See the module docstring.
    """
    step = getattr(cell, "step", None)
    return step if callable(step) else cell


def make_cell(mode: str | CellSpec, input_size: int, hidden_size: int, **kwargs: Any) -> Cell:
    """The cell of a kind: :class:`RNNCell`/:class:`LSTMCell`/:class:`GRUCell` for the
    classic kinds (with the description's ``options``), else :class:`Cell` itself."""
    spec = get_spec(mode)
    for cls in (RNNCell, LSTMCell, GRUCell):
        if spec.name in cls.kinds:
            return cls(input_size, hidden_size, **spec.options, **kwargs)
    return Cell(spec, input_size, hidden_size, **kwargs)
