"""Trace (acceptance 7): traced h equals outputs; traced gates recompute h and c."""

import pytest
import torch

import seqlab
from helpers import assert_close

F64 = torch.float64


def test_lstm_trace_recomputes_states():
    layer = seqlab.LSTM(3, 4, num_layers=2, bidirectional=True).double()
    x = torch.randn(5, 2, 3, dtype=F64)
    lengths = torch.tensor([5, 3])
    out, (h_n, c_n), traces = layer(x, lengths=lengths, trace=True)
    assert len(traces) == 4
    top_fwd, top_bwd = traces[2], traces[3]
    assert_close(torch.cat([top_fwd["h"], top_bwd["h"]], -1), out, F64, "traced h == outputs")
    for k, tr in enumerate(traces):
        assert set(tr) == {"i", "f", "g", "o", "c", "h"}
        assert all(v.shape == (5, 2, 4) for v in tr.values())
        # c_t = f ⊙ c_{t-1} + i ⊙ g ; h_t = o ⊙ tanh(c_t) (forward direction, row 0, full length)
        if k % 2 == 0:
            c_prev = torch.zeros(4, dtype=F64)
            for t in range(5):
                c = tr["f"][t, 0] * c_prev + tr["i"][t, 0] * tr["g"][t, 0]
                assert_close(tr["c"][t, 0], c, F64, "c")
                assert_close(tr["h"][t, 0], tr["o"][t, 0] * torch.tanh(c), F64, "h")
                c_prev = c
        assert_close(tr["c"][lengths[1] - 1 if k % 2 == 0 else 0, 1], c_n[k, 1], F64, "final c")
    assert torch.count_nonzero(top_fwd["i"][3:, 1]) == 0  # padded steps are zero


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_trace_recomputes_h(reset_after):
    layer = seqlab.GRU(3, 4, reset_after=reset_after).double()
    x = torch.randn(6, 2, 3, dtype=F64)
    out, h_n, (tr,) = layer(x, trace=True)
    assert_close(tr["h"], out, F64, "traced h")
    h = torch.zeros(2, 4, dtype=F64)
    W, U, H = layer.weight_ih_l0, layer.weight_hh_l0, 4
    for t in range(6):
        r, z, n = tr["r"][t], tr["z"][t], tr["n"][t]
        # recompute r from its definition, then h from the traced z, n
        expect_r = torch.sigmoid(
            x[t] @ W[:H].T + layer.bias_ih_l0[:H] + h @ U[:H].T + layer.bias_hh_l0[:H]
        )
        assert_close(r, expect_r, F64, "r")
        h = z * h + (1 - z) * n
        assert_close(tr["h"][t], h, F64, "h")


def test_rnn_trace_preactivation():
    layer = seqlab.RNN(3, 4, nonlinearity="relu").double()
    x = torch.randn(4, 2, 3, dtype=F64)
    out, _, (tr,) = layer(x, trace=True)
    assert set(tr) == {"a", "h"}
    assert_close(torch.relu(tr["a"]), out, F64, "h = relu(a)")
    assert (tr["a"] < 0).any()  # the pre-activation really is recorded before φ
