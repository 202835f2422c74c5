"""Pure functions: one-step cell math and the reference time loop."""

# modules that register cell kinds: lnlstm, lngru; mingru, minlstm
from seqlab.functional import layernorm, minimal  # noqa: F401
from seqlab.functional.cells import (
    LSTMState,
    gru_cell,
    gru_step,
    lstm_cell,
    lstm_step,
    rnn_cell,
    rnn_step,
)
from seqlab.functional.scan import (
    detach_state,
    reference_layer,
    reference_run,
    reverse_padded,
    scan,
    tree_map,
)
from seqlab.functional.spec import (
    SPECS,
    CellSpec,
    Param,
    SpecView,
    cell_choices,
    get_spec,
    register,
    spec_for_choice,
)

#: gates per cell kind, i.e. how many H-row blocks ``w_ih`` and ``w_hh`` hold
GATES = SpecView(lambda spec: spec.G)

__all__ = [
    "GATES",
    "SPECS",
    "CellSpec",
    "LSTMState",
    "Param",
    "cell_choices",
    "detach_state",
    "get_spec",
    "reference_run",
    "register",
    "spec_for_choice",
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
