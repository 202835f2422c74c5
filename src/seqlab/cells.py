"""Recurrent cells: one time step, ``cell(x (B, I), state) -> (y (B, H), new_state)``.

A cell is its kind's description (:mod:`seqlab.functional.spec`) plus parameters: it
creates them from the description (torch.nn names and shapes for the classic cells), checks
the state against the description's state parts and runs the description's reference step;
it never loops over time. :class:`seqlab.Recurrent` runs seqlab's own cells on the fast
engine (the same as the layers); any other object with this contract (``forward(x, state)``,
``initial_state(batch_size, dtype=, device=)`` and ``hidden_size``) runs on the reference
loop under :class:`seqlab.Recurrent`, :class:`seqlab.Bidirectional` and the training tools.

As torch.nn's cells, seqlab's take zero sizes and unbatched input (``x`` (I,), state parts
(H,)); the return stays ``(y, new_state)`` (torch.nn's returns ``new_state`` only).

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
from seqlab.validation import (
    SeqlabInputError,
    check_flag,
    check_sizes,
    check_state,
    require_float,
    require_tensor,
)

__all__ = ["Cell", "RNNCell", "LSTMCell", "GRUCell", "make_cell", "check_sizes"]


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

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:
        """``(y (B, H), new_state)``; unbatched as torch.nn: ``x`` (I,), state parts (H,)."""
        unbatched = isinstance(x, Tensor) and x.dim() == 1
        if unbatched:
            x, state = x.unsqueeze(0), self._batch_state(state)
        parts = self._check(x, state)
        p = self.params()
        new, _ = self.spec.step(self.spec.project(x, p), parts, p)
        if unbatched:
            new = tuple(part.squeeze(0) for part in new)
        return new[0], self.spec.pack(new)

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


def make_cell(mode: str | CellSpec, input_size: int, hidden_size: int, **kwargs: Any) -> Cell:
    """The cell of a kind: :class:`RNNCell`/:class:`LSTMCell`/:class:`GRUCell` for the
    classic kinds (with the description's ``options``), else :class:`Cell` itself."""
    spec = get_spec(mode)
    for cls in (RNNCell, LSTMCell, GRUCell):
        if spec.name in cls.kinds:
            return cls(input_size, hidden_size, **spec.options, **kwargs)
    return Cell(spec, input_size, hidden_size, **kwargs)
