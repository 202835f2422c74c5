"""Cells vs torch.nn cells (acceptance 2), GRU original form vs a hand-written loop (3),
gradcheck (4), init options."""

import pytest
import torch
from torch import nn

import seqlab
from helpers import assert_close
from seqlab.cells import make_cell
from seqlab.functional import SPECS

CELL_TWINS = [
    ("rnn_tanh", lambda: seqlab.RNNCell(5, 7), lambda: nn.RNNCell(5, 7)),
    (
        "rnn_relu",
        lambda: seqlab.RNNCell(5, 7, nonlinearity="relu"),
        lambda: nn.RNNCell(5, 7, nonlinearity="relu"),
    ),
    ("rnn_nobias", lambda: seqlab.RNNCell(5, 7, bias=False), lambda: nn.RNNCell(5, 7, bias=False)),
    ("lstm", lambda: seqlab.LSTMCell(5, 7), lambda: nn.LSTMCell(5, 7)),
    (
        "lstm_nobias",
        lambda: seqlab.LSTMCell(5, 7, bias=False),
        lambda: nn.LSTMCell(5, 7, bias=False),
    ),
    ("gru", lambda: seqlab.GRUCell(5, 7), lambda: nn.GRUCell(5, 7)),
    ("gru_nobias", lambda: seqlab.GRUCell(5, 7, bias=False), lambda: nn.GRUCell(5, 7, bias=False)),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name,make_ours,make_ref", CELL_TWINS, ids=[c[0] for c in CELL_TWINS])
def test_cell_equals_torch_cell(name, make_ours, make_ref, dtype):
    ref, ours = make_ref().to(dtype), make_ours().to(dtype)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 5, dtype=dtype)
    lstm = name.startswith("lstm")
    s = [torch.randn(4, 7, dtype=dtype) for _ in range(2 if lstm else 1)]
    grads = []
    for module in (ref, ours):
        xi = x.clone().requires_grad_(True)
        si = [t.clone().requires_grad_(True) for t in s]
        if lstm:  # the same call and the same return as torch.nn's: (h, c)
            h, c = module(xi, tuple(si))
            loss = (h * 3).sum() + (c * c).sum()
        else:  # h
            h = module(xi, si[0])
            loss = (h * h).sum()
        loss.backward()
        grads.append(
            [h.detach(), xi.grad, *(t.grad for t in si), *(p.grad for p in module.parameters())]
        )
    for a, b in zip(grads[1], grads[0], strict=True):
        assert_close(a, b, dtype, name)


def hand_written_gru_original(x, h, w_ih, w_hh, b_ih, b_hh):
    """Cho et al. (2014) GRU written out for the test, one gate at a time."""
    H = h.shape[1]
    W_r, W_z, W_h = w_ih[:H], w_ih[H : 2 * H], w_ih[2 * H :]
    U_r, U_z, U_h = w_hh[:H], w_hh[H : 2 * H], w_hh[2 * H :]
    b_r = b_ih[:H] + b_hh[:H]
    b_z = b_ih[H : 2 * H] + b_hh[H : 2 * H]
    outputs = []
    for x_t in x:
        r = torch.sigmoid(x_t @ W_r.T + h @ U_r.T + b_r)
        z = torch.sigmoid(x_t @ W_z.T + h @ U_z.T + b_z)
        h_tilde = torch.tanh(x_t @ W_h.T + b_ih[2 * H :] + (r * h) @ U_h.T + b_hh[2 * H :])
        h = z * h + (1 - z) * h_tilde
        outputs.append(h)
    return torch.stack(outputs), h


def test_gru_reset_before_equals_original_equations():
    layer = seqlab.GRU(5, 7, reset_after=False).double()
    x = torch.randn(9, 3, 5, dtype=torch.float64)
    h0 = torch.randn(1, 3, 7, dtype=torch.float64)
    out, h_n = layer(x, h0)
    ref_out, ref_h = hand_written_gru_original(
        x, h0[0], layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0
    )
    assert_close(out, ref_out, torch.float64, "outputs")
    assert_close(h_n[0], ref_h, torch.float64, "h_n")
    cell = seqlab.GRUCell(5, 7, reset_after=False).double()
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in layer.state_dict().items()})
    h1 = cell(x[0], h0[0])
    assert_close(h1, ref_out[0], torch.float64, "cell")
    # the two conventions really differ
    after = seqlab.GRU(5, 7, reset_after=True).double()
    after.load_state_dict(layer.state_dict())
    assert (after(x, h0)[0] - out).abs().max() > 1e-3


# every registered cell kind (the classic five and any added through a description)
CELLS = {name: (lambda name=name: make_cell(name, 3, 4)) for name in SPECS}


@pytest.mark.parametrize("name", list(CELLS))
def test_cell_gradcheck(name):
    cell = CELLS[name]().double()
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    params = list(cell.parameters())

    names = [n for n, _ in cell.named_parameters()]

    def f(x, h, c, *ps):
        weights = dict(zip(names, ps, strict=True))
        if len(SPECS[name].state) == 2:
            s = torch.func.functional_call(cell, weights, (x, (h, c)))
            return s.h, s.c
        return torch.func.functional_call(cell, weights, (x, h)) + 0 * c

    assert torch.autograd.gradcheck(f, (x, h, c, *params))


def test_init_options():
    lstm = seqlab.LSTM(6, 8, num_layers=2, init="orthogonal", forget_bias=1.0)
    w = lstm.weight_hh_l1
    for k in range(4):
        block = w[k * 8 : (k + 1) * 8].detach()
        assert torch.allclose(block @ block.T, torch.eye(8), atol=1e-5)
    total_forget = (lstm.bias_ih_l0 + lstm.bias_hh_l0)[8:16]
    assert torch.allclose(total_forget, torch.ones(8))
    assert torch.count_nonzero((lstm.bias_ih_l0 + lstm.bias_hh_l0)[:8]) == 0
    default = seqlab.GRU(6, 16)
    bound = 16**-0.5
    assert default.weight_ih_l0.abs().max() <= bound
    assert default.weight_ih_l0.abs().max() > 0.8 * bound  # really uniform over the range
    with pytest.raises(ValueError, match="forget_bias"):
        seqlab.GRU(6, 8, forget_bias=1.0)
    with pytest.raises(ValueError, match="init"):
        seqlab.LSTM(6, 8, init="magic")
