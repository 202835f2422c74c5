"""Pure functions: one-step cell math and the reference time loop."""

from seqlab.functional.cells import (
    GATES,
    LSTMState,
    gru_cell,
    gru_step,
    lstm_cell,
    lstm_step,
    rnn_cell,
    rnn_step,
)
from seqlab.functional.scan import reference_layer, reverse_padded, scan, tree_map

__all__ = [
    "GATES",
    "LSTMState",
    "gru_cell",
    "gru_step",
    "lstm_cell",
    "lstm_step",
    "reference_layer",
    "reverse_padded",
    "rnn_cell",
    "rnn_step",
    "scan",
    "tree_map",
]
