"""One description per cell kind: the table everything else reads.

A :class:`CellSpec` holds, for one cell kind (the ``mode`` string used everywhere, e.g.
``"lstm"``): its gate names (the H-row blocks of its gate-stacked parameters), its state
parts, its parameters (names, shapes, init roles), the reference step equations, the names
it records when traced, and the id of its fast kernel. Cells, layers, ``Recurrent``, the
reference and traced loops, initialisation, the engine's checks, the models' ``cell=``
choice, the benchmark and the test tables all look cell kinds up here.

Shapes: ``G = len(gates)``, ``H`` hidden units, ``I`` input features. A :class:`Param`
gives its shape as ``(rows, cols)`` symbols: rows ``"G·H"`` or ``"H"``, cols ``"I"``,
``"H"`` or ``None`` (a vector). The classic parameters (torch.nn's names and layout):

===========  ==============  ===========  ===========================================
name         module name     shape        role
===========  ==============  ===========  ===========================================
``w_ih``     ``weight_ih``   (G·H, I)     input projection, ``xw = x @ w_ihᵀ + b_ih``
``w_hh``     ``weight_hh``   (G·H, H)     recurrent weights
``b_ih``     ``bias_ih``     (G·H,)       present when ``bias=True``
``b_hh``     ``bias_hh``     (G·H,)       present when ``bias=True``
===========  ==============  ===========  ===========================================

The reference step is premultiplied: ``step(xw_t, state, p) -> (new_state, record)`` with
``xw_t = project(x_t, p)`` computed for all steps by one GEMM beforehand; ``new_state[0]``
is the output ``h`` and ``record`` is the tuple named by ``trace`` (each (B, H)).

``kernel`` is the mode id shared by the fused (Python) and native (C++) kernels, or
``None`` for a cell that runs on the reference loop only. The ids are part of the C++ ABI:
RNN_TANH=0, RNN_RELU=1, LSTM=2, GRU=3, GRU_BEFORE=4.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from seqlab.functional.cells import (
    LSTMState,
    activate,
    gru_gates,
    linear,
    lstm_gates,
    rnn_preactivation,
)
from seqlab.functional.regularisers import recurrent_input

Params = Mapping[str, Tensor | None]
Step = Callable[[Tensor, tuple[Tensor, ...], Params], tuple[tuple[Tensor, ...], tuple[Tensor, ...]]]

#: init roles a :class:`Param` may have (see :func:`seqlab.init.init_params`)
ROLES = ("input", "recurrent", "bias", "diagonal", "gain", "shift")


@dataclass(frozen=True)
class Param:
    """One parameter of a cell kind: functional name, module attribute stem, shape, role."""

    name: str  # functional name, e.g. "w_ih"
    attr: str  # module attribute stem, e.g. "weight_ih" (layers append "_l0", "_l0_reverse")
    rows: str  # "G·H" or "H"
    cols: str | None  # "I", "H" or None for a vector
    role: str  # one of ROLES
    bias: bool = False  # exists only when the module is built with bias=True

    def shape(self, G: int, I: int, H: int) -> tuple[int, ...]:  # noqa: E741
        rows = G * H if self.rows == "G·H" else H if self.rows == "H" else I
        if self.cols is None:
            return (rows,)
        return (rows, I if self.cols == "I" else H)


CLASSIC = (
    Param("w_ih", "weight_ih", "G·H", "I", "input"),
    Param("w_hh", "weight_hh", "G·H", "H", "recurrent"),
    Param("b_ih", "bias_ih", "G·H", None, "bias", bias=True),
    Param("b_hh", "bias_hh", "G·H", None, "bias", bias=True),
)


def project_linear(x: Tensor, p: Params) -> Tensor:
    """Default input projection ``xw = x @ w_ihᵀ + b_ih`` (all steps at once)."""
    return linear(x, p["w_ih"], p.get("b_ih"))


@dataclass(frozen=True)
class CellSpec:
    """Everything seqlab knows about one cell kind (see the module docstring)."""

    name: str
    gates: tuple[str, ...]
    state: tuple[str, ...]
    step: Step
    trace: tuple[str, ...]
    params: tuple[Param, ...] = CLASSIC
    project: Callable[[Tensor, Params], Tensor] = project_linear
    kernel: int | None = None  # fused/native mode id; None: reference loop only
    native: bool = True  # the native C++ op covers ``kernel`` (else fused only)
    choice: str | None = None  # the models' ``cell=`` name, if offered there
    state_type: type | None = None  # NamedTuple for multi-part states (LSTMState)
    options: Mapping[str, Any] = field(default_factory=dict)  # layer/cell constructor kwargs
    # b_hh gate blocks that stay inside the step (cannot join the input projection's bias)
    kept_bias: tuple[str, ...] = ()
    # the step applies a recurrent dropout mask p["h_mask"] to h_{t−1} before its recurrent
    # product (see seqlab.functional.regularisers); False: recurrent_dropout is refused
    h_mask: bool = False
    doc: str = ""

    @property
    def G(self) -> int:
        return len(self.gates)

    def param_names(self, bias: bool = True) -> tuple[str, ...]:
        return tuple(p.name for p in self.params if bias or not p.bias)

    def shapes(self, I: int, H: int, bias: bool = True) -> dict[str, tuple[int, ...]]:  # noqa: E741
        """Expected shape of every parameter, by functional name."""
        return {p.name: p.shape(self.G, I, H) for p in self.params if bias or not p.bias}

    def pack(self, parts: Sequence[Tensor]) -> Any:
        """State parts as the public state: a Tensor, or ``state_type(*parts)``."""
        if len(parts) == 1:
            return parts[0]
        return self.state_type(*parts) if self.state_type is not None else tuple(parts)

    def unpack(self, state: Any) -> tuple[Tensor, ...]:
        """The public state as a tuple of parts (a lone Tensor is the 1-part state)."""
        return (state,) if isinstance(state, Tensor) else tuple(state)

    def gate_slice(self, gate: str, H: int) -> slice:
        k = self.gates.index(gate)
        return slice(k * H, (k + 1) * H)

    def projection_bias(self, b_ih: Tensor | None, b_hh: Tensor | None, H: int) -> Tensor | None:
        """The bias folded into the all-steps input GEMM: ``b_ih + b_hh`` minus ``kept_bias``.

        E.g. the torch.nn GRU's ``b_hn`` sits inside ``r ⊙ (h @ W_hnᵀ + b_hn)`` and stays.
        """
        if b_hh is None:
            return b_ih
        fold = b_hh
        if self.kept_bias:
            fold = b_hh.clone()
            for gate in self.kept_bias:
                fold[self.gate_slice(gate, H)] = 0
        return fold if b_ih is None else b_ih + fold

    def default_state(self, batch: int, hidden: int, like: Tensor) -> tuple[Tensor, ...]:
        h = like.new_zeros(batch, hidden)
        return (h,) + tuple(torch.zeros_like(h) for _ in self.state[1:])


SPECS: dict[str, CellSpec] = {}


def register(spec: CellSpec) -> CellSpec:
    """Add a cell kind to the registry (its ``name`` must be new)."""
    if spec.name in SPECS:
        raise ValueError(f"spec: a cell kind named {spec.name!r} is already registered")
    if spec.trace[-1:] != ("h",):
        raise ValueError(f"spec {spec.name!r}: trace must end with 'h', got {spec.trace}")
    kernels = {s.kernel for s in SPECS.values() if s.kernel is not None}
    if spec.kernel is not None and spec.kernel in kernels:
        raise ValueError(f"spec {spec.name!r}: kernel id {spec.kernel} is taken")
    SPECS[spec.name] = spec
    return spec


def get_spec(mode: str | CellSpec) -> CellSpec:
    """The description of a cell kind; ``ValueError`` naming the known ones otherwise."""
    if isinstance(mode, CellSpec):
        return mode
    try:
        return SPECS[mode]
    except (KeyError, TypeError):
        raise ValueError(f"mode: expected one of {sorted(SPECS)}, got {mode!r}") from None


class SpecView(Mapping):
    """Live read-only view ``mode -> read(spec)`` of the registry (for older table names)."""

    def __init__(self, read: Callable[[CellSpec], Any]) -> None:
        self.read = read

    def __getitem__(self, mode: str) -> Any:
        return self.read(SPECS[mode])

    def __iter__(self):
        return iter(SPECS)

    def __len__(self) -> int:
        return len(SPECS)


def cell_choices() -> tuple[str, ...]:
    """The models' ``cell=`` names, in registration order."""
    return tuple(s.choice for s in SPECS.values() if s.choice is not None)


def spec_for_choice(choice: str) -> CellSpec:
    for s in SPECS.values():
        if s.choice == choice:
            return s
    raise ValueError(f"cell: expected one of {cell_choices()}, got {choice!r}")


# ------------------------------------------------------------------ reference steps
def _rnn_step(nonlinearity: str) -> Step:
    def step(xw, state, p):
        a = rnn_preactivation(xw, recurrent_input(state[0], p), p["w_hh"], p.get("b_hh"))
        h = activate(a, nonlinearity)
        return (h,), (a, h)

    return step


def _lstm_step(xw, state, p):
    h, c = state
    i, f, g, o = lstm_gates(xw, recurrent_input(h, p), p["w_hh"], p.get("b_hh"))
    c = f * c + i * g
    h = o * torch.tanh(c)
    return (h, c), (i, f, g, o, c, h)


def _gru_step(reset_after: bool) -> Step:
    def step(xw, state, p):
        h = state[0]
        r, z, n = gru_gates(xw, recurrent_input(h, p), p["w_hh"], p.get("b_hh"), reset_after)
        h = n + z * (h - n)  # = z ⊙ h + (1 − z) ⊙ n (the plain h: dropout is on the product)
        return (h,), (r, z, n, h)

    return step


for _nl, _kernel, _choice in (("tanh", 0, "rnn"), ("relu", 1, None)):
    register(
        CellSpec(
            f"rnn_{_nl}",
            gates=("h",),
            state=("h",),
            step=_rnn_step(_nl),
            trace=("a", "h"),
            kernel=_kernel,
            choice=_choice,
            options={"nonlinearity": _nl},
            h_mask=True,
            doc=f"Elman: h' = {_nl}(xw + h @ w_hhᵀ + b_hh)",
        )
    )
register(
    CellSpec(
        "lstm",
        gates=("i", "f", "g", "o"),
        state=("h", "c"),
        step=_lstm_step,
        trace=("i", "f", "g", "o", "c", "h"),
        kernel=2,
        choice="lstm",
        state_type=LSTMState,
        h_mask=True,
        doc="c' = f ⊙ c + i ⊙ g; h' = o ⊙ tanh(c')",
    )
)
for _after, _kernel in ((True, 3), (False, 4)):
    register(
        CellSpec(
            "gru" if _after else "gru_reset_before",
            gates=("r", "z", "n"),
            state=("h",),
            step=_gru_step(_after),
            trace=("r", "z", "n", "h"),
            kernel=_kernel,
            choice="gru" if _after else None,
            options={"reset_after": _after},
            kept_bias=("n",) if _after else (),  # torch.nn's b_hn sits inside r ⊙ (…)
            h_mask=True,
            doc="h' = z ⊙ h + (1 − z) ⊙ n; n = tanh(x_n + r ⊙ h_n)"
            if _after
            else "h' = z ⊙ h + (1 − z) ⊙ n; n = tanh(x_n + (r ⊙ h) @ w_hnᵀ + b_hn)",
        )
    )
del _after, _kernel, _nl, _choice


# IndRNN (Li et al. 2018): each unit has one scalar recurrent weight, no recurrent matrix.
def _indrnn_step(xw, state, p):
    a = xw + p["u"] * state[0]  # u (H,) broadcast over the batch: u ⊙ h
    h = torch.relu(a)
    return (h,), (a, h)


register(
    CellSpec(
        "indrnn",
        gates=("h",),
        state=("h",),
        step=_indrnn_step,
        trace=("a", "h"),
        params=(
            Param("w_ih", "weight_ih", "G·H", "I", "input"),
            Param("u", "weight_hh", "H", None, "diagonal"),
            Param("b_ih", "bias_ih", "G·H", None, "bias", bias=True),
        ),
        choice="indrnn",
        doc="IndRNN: h' = relu(x @ w_ihᵀ + b_ih + u ⊙ h)",
    )
)
