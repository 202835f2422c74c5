"""Recurrent building blocks the models compose: one factory for the cell type.

``make_recurrent(cell, ...)`` returns seqlab's multi-layer ``RNN``/``LSTM``/``GRU`` (batch
first); ``impl="torch"`` returns torch.nn's fused twin instead (same state_dict keys and
layout, so checkpoints load in either; kept for speed/accuracy comparisons).
:class:`RecurrentEncoder` wraps it with lengths and a zero default state;
:class:`CellStack` runs a stack of seqlab cells one step at a time, for decoders.

States everywhere have the layer's final-state layout: ``h`` of shape (L·D, B, H) for
``rnn``/``gru``, ``LSTMState(h, c)`` with both (L·D, B, H) for ``lstm`` (L layers,
D = 2 if bidirectional else 1; row ``l·D + d`` is layer l, direction d).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from seqlab.cells import GRUCell, LSTMCell, RNNCell
from seqlab.functional.cells import LSTMState
from seqlab.layers import GRU, LSTM, RNN
from seqlab.models._checks import CELLS, check_choice, check_positive

State = Any  # Tensor (L·D, B, H) or LSTMState


_LAYERS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
_CELLS = {"rnn": RNNCell, "lstm": LSTMCell, "gru": GRUCell}
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
) -> nn.Module:
    """A batch-first multi-layer recurrent layer of the given cell type.

    ``impl="seqlab"`` (default): seqlab's own layer (our BPTT engine). ``impl="torch"``:
    torch.nn's fused layer wrapped to accept ``lengths`` like ours; same state_dict.
    """
    check_choice("cell", cell, CELLS)
    check_choice("impl", impl, IMPLS)
    check_positive("input_size", input_size)
    check_positive("hidden_size", hidden_size)
    check_positive("num_layers", num_layers)
    table = _LAYERS if impl == "seqlab" else _TORCH_LAYERS
    return table[cell](
        input_size,
        hidden_size,
        num_layers=num_layers,
        batch_first=True,
        dropout=dropout if num_layers > 1 else 0.0,
        bidirectional=bidirectional,
    )


def as_state(cell: str, state: Any) -> State:
    """Normalise a layer's final state: LSTMState for lstm, a plain tensor otherwise."""
    if cell == "lstm":
        return LSTMState(*state)
    return state


def zero_state(cell: str, rows: int, batch: int, hidden: int, like: Tensor) -> State:
    h = like.new_zeros(rows, batch, hidden)
    return LSTMState(h, h.clone()) if cell == "lstm" else h


def top_hidden(state: State, directions: int = 1) -> Tensor:
    """The last layer's h, directions concatenated: (B, D·H)."""
    h = state.h if isinstance(state, LSTMState) else state
    return torch.cat(list(h[-directions:]), dim=-1)


def select_batch(state: State, index: Tensor) -> State:
    """Select batch rows (dim 1) of a layer state."""
    if isinstance(state, LSTMState):
        return LSTMState(state.h.index_select(1, index), state.c.index_select(1, index))
    return state.index_select(1, index)


def detach_state(state: State) -> State:
    if isinstance(state, LSTMState):
        return LSTMState(state.h.detach(), state.c.detach())
    return state.detach()


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
    ) -> None:
        super().__init__()
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.directions = 2 if bidirectional else 1
        self.rnn = make_recurrent(
            cell, input_size, hidden_size, num_layers, bidirectional, dropout, impl
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
        check_choice("cell", cell, CELLS)
        check_positive("num_layers", num_layers)
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        cls = _CELLS[cell]
        sizes = [input_size] + [hidden_size] * (num_layers - 1)
        self.cells = nn.ModuleList(cls(size, hidden_size) for size in sizes)
        self.dropout = nn.Dropout(dropout)

    def initial_state(self, batch: int, like: Tensor) -> State:
        return zero_state(self.cell, self.num_layers, batch, self.hidden_size, like)

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        hs, cs = [], []
        lstm = self.cell == "lstm"
        for layer, cell in enumerate(self.cells):
            if layer:
                x = self.dropout(x)
            s = LSTMState(state.h[layer], state.c[layer]) if lstm else state[layer]
            _, new_state = cell(x, s)
            if lstm:
                cs.append(new_state.c)
            h = new_state.h if lstm else new_state
            hs.append(h)
            x = h
        h_all = torch.stack(hs)
        new = LSTMState(h_all, torch.stack(cs)) if lstm else h_all
        return x, new
