"""Recurrent building blocks the models compose: one factory for the cell type.

``make_recurrent(cell, ...)`` returns seqlab's multi-layer ``RNN``/``LSTM``/``GRU`` (batch
first); ``impl="torch"`` returns torch.nn's fused twin instead (same state_dict keys and
layout, so checkpoints load in either; kept for speed/accuracy comparisons).
:class:`RecurrentEncoder` wraps it with lengths and a zero default state;
:class:`CellStack` runs a stack of seqlab cells one step at a time, for decoders.

The ``cell`` names are the cell descriptions' ``choice`` names
(:func:`seqlab.functional.cell_choices`: ``rnn``, ``lstm``, ``gru``, and any kind registered
with a choice name). States everywhere have the layer's final-state layout: ``h`` of shape
(L·D, B, H) for one-part states (``rnn``/``gru``), the kind's ``state_type`` such as
``LSTMState(h, c)`` with every part (L·D, B, H) otherwise (L layers, D = 2 if
bidirectional else 1; row ``l·D + d`` is layer l, direction d).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from seqlab.cells import make_cell
from seqlab.functional.cells import LSTMState
from seqlab.functional.regularisers import NAMES as REGULARISERS
from seqlab.functional.scan import detach_state, tree_map
from seqlab.functional.spec import spec_for_choice
from seqlab.layers import make_layer
from seqlab.models._checks import cells, check_choice, check_positive
from seqlab.wrappers import run_stack

State = Any  # Tensor (L·D, B, H) or LSTMState

__all__ = [
    "CellStack",
    "RecurrentEncoder",
    "as_state",
    "detach_state",
    "make_recurrent",
    "select_batch",
    "state_from_h",
    "state_part",
    "top_hidden",
    "zero_state",
]

IMPLS = ("seqlab", "torch")


class _TorchLengths:
    """Mixin: torch.nn.RNN/LSTM/GRU behind seqlab's ``forward(x, state, lengths=None)``.

    torch.nn has no ``lengths`` argument; with lengths the input is packed, so padded outputs
    are 0 and the final state is each row's state at its last valid step, as in seqlab's
    layers. Only ``forward`` changes: parameters and state_dict are torch.nn's own."""

    def forward(self, x: Tensor, state: Any = None, lengths: Tensor | None = None):
        if isinstance(state, LSTMState):
            state = tuple(state)
        if lengths is None:
            return super().forward(x, state)
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, final = super().forward(packed, state)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out, final


class _TorchRNN(_TorchLengths, nn.RNN):
    pass


class _TorchLSTM(_TorchLengths, nn.LSTM):
    pass


class _TorchGRU(_TorchLengths, nn.GRU):
    pass


_TORCH_LAYERS = {"rnn": _TorchRNN, "lstm": _TorchLSTM, "gru": _TorchGRU}


def make_recurrent(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    impl: str = "seqlab",
    **regularisers: float,
) -> nn.Module:
    """A batch-first multi-layer recurrent layer of the given cell type.

    ``impl="seqlab"`` (default): seqlab's own layer (our BPTT engine). ``impl="torch"``:
    torch.nn's fused layer wrapped to accept ``lengths`` like ours; same state_dict.
    ``regularisers``: ``input_dropout``, ``recurrent_dropout``, ``weight_dropout`` of
    seqlab's layers (:mod:`seqlab.functional.regularisers`); torch.nn has none of them.
    """
    check_choice("cell", cell, cells())
    check_choice("impl", impl, IMPLS)
    check_positive("input_size", input_size)
    check_positive("hidden_size", hidden_size)
    check_positive("num_layers", num_layers)
    kwargs = dict(
        num_layers=num_layers,
        batch_first=True,
        dropout=dropout if num_layers > 1 else 0.0,
        bidirectional=bidirectional,
    )
    unknown = set(regularisers) - set(REGULARISERS)
    if unknown:
        raise TypeError(f"make_recurrent: unexpected arguments {sorted(unknown)}")
    regularisers = {k: v for k, v in regularisers.items() if v}
    if impl == "torch":
        if regularisers:
            raise ValueError(
                f"impl: 'torch' has no {', '.join(sorted(regularisers))}; use impl='seqlab'"
            )
        if cell not in _TORCH_LAYERS:
            raise ValueError(f"impl: 'torch' has no {cell!r} layer; use impl='seqlab'")
        return _TORCH_LAYERS[cell](input_size, hidden_size, **kwargs)
    return make_layer(spec_for_choice(cell), input_size, hidden_size, **kwargs, **regularisers)


def as_state(cell: str, state: Any) -> State:
    """Normalise a layer's final state: e.g. LSTMState for lstm, a plain tensor otherwise."""
    spec = spec_for_choice(cell)
    return spec.pack(spec.unpack(state))


def zero_state(cell: str, rows: int, batch: int, hidden: int, like: Tensor) -> State:
    return state_from_h(cell, like.new_zeros(rows, batch, hidden))


def state_from_h(cell: str, h: Tensor, **parts: Tensor) -> State:
    """The kind's state with ``h`` as its first part, the named ``parts`` (e.g. ``c=...``)
    where the kind has them, and zeros like ``h`` for its other parts (read from the cell
    description's ``state``, so any registered kind works, not only the LSTM)."""
    spec = spec_for_choice(cell)
    rest = tuple(parts[n] if n in parts else torch.zeros_like(h) for n in spec.state[1:])
    return spec.pack((h,) + rest)


def state_part(cell: str, state: State, name: str) -> Tensor | None:
    """The part ``name`` (``"h"``, ``"c"``...) of a kind's state, None if it has no such part."""
    spec = spec_for_choice(cell)
    if name not in spec.state:
        return None
    return spec.unpack(state)[spec.state.index(name)]


def top_hidden(state: State, directions: int = 1) -> Tensor:
    """The last layer's h, directions concatenated: (B, D·H)."""
    h = state if isinstance(state, Tensor) else state[0]
    return torch.cat(list(h[-directions:]), dim=-1)


def select_batch(state: State, index: Tensor) -> State:
    """Select batch rows (dim 1) of a layer state."""
    return tree_map(lambda s: s.index_select(1, index), state)


class RecurrentEncoder(nn.Module):
    """Batch-first recurrent stack with lengths.

    ``forward(x (B, T, I), lengths (B,) | None, state | None) -> (outputs (B, T, D·H), final)``;
    outputs at padded steps are exactly 0 and ``final`` is each row's state at its last
    valid step (for the backward direction: after reading the row's whole valid prefix).
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        impl: str = "seqlab",
        **regularisers: float,
    ) -> None:
        super().__init__()
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.directions = 2 if bidirectional else 1
        self.rnn = make_recurrent(
            cell, input_size, hidden_size, num_layers, bidirectional, dropout, impl, **regularisers
        )

    @property
    def output_size(self) -> int:
        return self.directions * self.hidden_size

    def forward(
        self, x: Tensor, lengths: Tensor | None = None, state: State | None = None
    ) -> tuple[Tensor, State]:
        if state is None:
            state = zero_state(
                self.cell, self.num_layers * self.directions, x.shape[0], self.hidden_size, x
            )
        out, final = self.rnn(x, state, lengths=lengths)
        return out, as_state(self.cell, final)


class CellStack(nn.Module):
    """``num_layers`` cells run one step at a time (a unidirectional decoder stack).

    ``step(x (B, I), state) -> (y (B, H), new_state)`` with ``state`` in the layer layout
    (L, B, H) / LSTMState; dropout is applied between layers, as in the layer classes.
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_choice("cell", cell, cells())
        check_positive("num_layers", num_layers)
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.cells = nn.ModuleList(make_cell(self.spec, size, hidden_size) for size in sizes)
        self.dropout = float(dropout)

    @property
    def spec(self):
        return spec_for_choice(self.cell)

    def initial_state(self, batch: int, like: Tensor) -> State:
        return zero_state(self.cell, self.num_layers, batch, self.hidden_size, like)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        spec = self.spec
        parts = spec.unpack(state)  # each (L, B, H)

        def layer_fn(cell: nn.Module):
            def run(inp: Tensor, s: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
                y, new = cell.step(inp, spec.pack(s))
                return y, spec.unpack(new)

            return run

        layers = [layer_fn(cell) for cell in self.cells]
        states = [tuple(p[k] for p in parts) for k in range(self.num_layers)]
        y, finals = run_stack(layers, x, states, self.dropout, self.training)
        new = tuple(torch.stack([f[k] for f in finals]) for k in range(len(parts)))
        return y, spec.pack(new)
