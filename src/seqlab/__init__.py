"""seqlab: neural sequence models with their own recurrence engine.

Cells compute one step, layers run the loop, wrappers compose (see DESIGN notes)::

    import seqlab
    lstm = seqlab.LSTM(input_size=8, hidden_size=16, num_layers=2, batch_first=True)
    outputs, (h_n, c_n) = lstm(x, lengths=lengths)
"""

from seqlab.cells import GRUCell, LSTMCell, RNNCell
from seqlab.functional.cells import LSTMState
from seqlab.layers import GRU, LSTM, RNN, RecurrentLayer
from seqlab.wrappers import Bidirectional, Recurrent, Stacked, TimeDistributed

__version__ = "0.1.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Bidirectional",
    "GRUCell",
    "LSTMCell",
    "LSTMState",
    "RNNCell",
    "Recurrent",
    "RecurrentLayer",
    "Stacked",
    "TimeDistributed",
]
