"""trace=True through Recurrent, Bidirectional and Stacked (issue 15).

Oracles: the layer's own trace with the same weights (seqlab's cells), and a hand-written
loop over a custom cell (any other cell)."""

from typing import NamedTuple

import pytest
import torch
from torch import nn

import seqlab


def _layer_with_cell_weights(cell, kind, **kw):
    layer = {"lstm": seqlab.LSTM, "gru": seqlab.GRU, "rnn": seqlab.RNN}[kind](
        cell.input_size, cell.hidden_size, **kw
    ).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(layer, name + "_l0").copy_(getattr(cell, name))
    return layer


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_recurrent_trace_equals_the_layers_trace(kind, batch_first):
    torch.manual_seed(0)
    cell = {"lstm": seqlab.LSTMCell, "gru": seqlab.GRUCell, "rnn": seqlab.RNNCell}[kind](3, 5)
    cell = cell.double()
    layer = _layer_with_cell_weights(cell, kind, batch_first=batch_first)
    x = torch.randn((4, 6, 3) if batch_first else (6, 4, 3), dtype=torch.float64)
    lengths = torch.tensor([6, 2, 5, 1])
    out, final, tr = seqlab.Recurrent(cell, batch_first=batch_first)(x, lengths=lengths, trace=True)
    ref_out, ref_final, ref_tr = layer(x, lengths=lengths, trace=True)
    torch.testing.assert_close(out, ref_out)
    (ref,) = ref_tr  # one layer, one direction
    assert set(tr) == set(ref)
    for name in ref:
        want = ref[name].transpose(0, 1) if batch_first else ref[name]  # layer: time-major
        torch.testing.assert_close(tr[name], want, msg=name)
    # padded steps are zero, as in the outputs
    t_dim = 1 if batch_first else 0
    assert tr["h"].select(t_dim, 5).select(0, 1).abs().sum() == 0  # row 1 has 2 steps


class PairState(NamedTuple):
    h: torch.Tensor
    s: torch.Tensor


class LeakyCell(nn.Module):
    """A custom cell: h' = tanh(W x + U h), s' = 0.5 s + h'; output 2·h'."""

    def __init__(self, i, h):
        super().__init__()
        self.w, self.u, self.hidden = nn.Linear(i, h), nn.Linear(h, h, bias=False), h

    def initial_state(self, batch_size, *, dtype=None, device=None):
        z = torch.zeros(batch_size, self.hidden, dtype=dtype, device=device)
        return PairState(z, z.clone())

    def forward(self, x, state):
        h = torch.tanh(self.w(x) + self.u(state.h))
        return 2 * h, PairState(h, 0.5 * state.s + h)


def test_custom_cell_trace_against_a_hand_loop_with_lengths_and_reverse():
    torch.manual_seed(1)
    cell = LeakyCell(3, 4).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    lengths = torch.tensor([5, 3])
    out, final, tr = seqlab.Recurrent(cell, reverse=True)(x, lengths=lengths, trace=True)
    assert set(tr) == {"y", "h", "s"}
    for b in range(2):
        n = int(lengths[b])
        st = cell.initial_state(1, dtype=x.dtype)
        for t in reversed(range(n)):  # reverse reads the valid prefix backwards
            y, st = cell(x[t, b : b + 1], st)
            torch.testing.assert_close(tr["y"][t, b], y[0])
            torch.testing.assert_close(tr["h"][t, b], st.h[0])
            torch.testing.assert_close(tr["s"][t, b], st.s[0])
        assert tr["y"][n:, b].abs().sum() == 0
        torch.testing.assert_close(final.s[b], st.s[0])
    torch.testing.assert_close(out, tr["y"])


def test_bidirectional_and_stacked_traces():
    torch.manual_seed(2)
    f, b = seqlab.GRUCell(3, 4).double(), seqlab.GRUCell(3, 4).double()
    bi = seqlab.Bidirectional(seqlab.Recurrent(f), seqlab.Recurrent(b))
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 4])
    y, _, tr = bi(x, lengths=lengths, trace=True)
    for cell, key, rev in ((f, "forward", False), (b, "backward", True)):
        _, _, one = seqlab.Recurrent(cell, reverse=rev)(x, lengths=lengths, trace=True)
        for name in one:
            torch.testing.assert_close(tr[key][name], one[name])
    torch.testing.assert_close(y, torch.cat([tr["forward"]["h"], tr["backward"]["h"]], -1))
    top = seqlab.Recurrent(seqlab.LSTMCell(8, 5).double())
    stack = seqlab.Stacked([bi, top])
    out, finals, traces = stack(x, lengths=lengths, trace=True)
    assert len(traces) == 2 and set(traces[0]) == {"forward", "backward"}
    _, _, top_tr = top(y, lengths=lengths, trace=True)
    torch.testing.assert_close(traces[1]["c"], top_tr["c"])
    torch.testing.assert_close(out, top_tr["h"])
    plain, _ = stack(x, lengths=lengths)  # trace does not change the result
    torch.testing.assert_close(plain, out)
