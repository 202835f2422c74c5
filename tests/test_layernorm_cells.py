"""LayerNorm LSTM/GRU descriptions against a hand-written loop (statistics written out,
not torch's layer_norm), with lengths, reverse, two layers; float64 gradcheck."""

from __future__ import annotations

import pytest
import torch

import seqlab
from helpers import assert_close

F64 = torch.float64


def ln(a, g, b=None, eps=1e-5):
    mu = a.mean(-1, keepdim=True)
    var = ((a - mu) ** 2).mean(-1, keepdim=True)
    out = g * (a - mu) / torch.sqrt(var + eps)
    return out if b is None else out + b


def hand_lnlstm(x, h, c, p):
    ys = []
    for t in range(x.shape[0]):
        a = ln(x[t] @ p["weight_ih"].T, p["ln_weight_ih"]) + p["bias_ih"]
        a = a + ln(h @ p["weight_hh"].T, p["ln_weight_hh"]) + p["bias_hh"]
        i, f, g, o = a.chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(ln(c, p["ln_weight_c"], p["ln_bias_c"]))
        ys.append(h)
    return torch.stack(ys), h, c


def hand_lngru(x, h, p):
    ys = []
    H = h.shape[1]
    for t in range(x.shape[0]):
        xw = ln(x[t] @ p["weight_ih"].T, p["ln_weight_ih"]) + p["bias_ih"]
        hw = ln(h @ p["weight_hh"].T, p["ln_weight_hh"]) + p["bias_hh"]
        r = torch.sigmoid(xw[:, :H] + hw[:, :H])
        z = torch.sigmoid(xw[:, H : 2 * H] + hw[:, H : 2 * H])
        n = torch.tanh(xw[:, 2 * H :] + r * hw[:, 2 * H :])
        h = (1 - z) * n + z * h
        ys.append(h)
    return torch.stack(ys), h


def layer_params(layer, k=0):
    suffix = f"_l{k}"
    return {n[: -len(suffix)]: t for n, t in layer.named_parameters() if n.endswith(suffix)}


def randomise(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.3)


@pytest.mark.parametrize("mode", ["lnlstm", "lngru"])
def test_layer_matches_hand_loop_two_layers(mode):
    torch.manual_seed(0)
    layer = seqlab.RecurrentLayer(mode, 3, 5, num_layers=2).double()
    randomise(layer)
    names = {n for n, _ in layer.named_parameters()}
    assert "ln_weight_ih_l1" in names and "ln_weight_hh_l0" in names
    assert ("ln_bias_c_l0" in names) == (mode == "lnlstm")
    x = torch.randn(6, 2, 3, dtype=F64)
    h0 = torch.randn(2, 2, 5, dtype=F64)
    if mode == "lnlstm":
        c0 = torch.randn(2, 2, 5, dtype=F64)
        out, (h_n, c_n) = layer(x, (h0, c0))
        y0, fh0, fc0 = hand_lnlstm(x, h0[0], c0[0], layer_params(layer, 0))
        y1, fh1, fc1 = hand_lnlstm(y0, h0[1], c0[1], layer_params(layer, 1))
        assert_close(c_n, torch.stack([fc0, fc1]), F64, "final c")
    else:
        out, h_n = layer(x, h0)
        y0, fh0 = hand_lngru(x, h0[0], layer_params(layer, 0))
        y1, fh1 = hand_lngru(y0, h0[1], layer_params(layer, 1))
    assert_close(out, y1, F64, "outputs")
    assert_close(h_n, torch.stack([fh0, fh1]), F64, "final h")


@pytest.mark.parametrize("mode", ["lnlstm", "lngru"])
def test_init_gains_one_shift_zero_and_no_bias_variant(mode):
    layer = seqlab.RecurrentLayer(mode, 3, 4)
    assert torch.equal(layer.ln_weight_ih_l0, torch.ones(layer.ln_weight_ih_l0.shape))
    if mode == "lnlstm":
        assert torch.equal(layer.ln_bias_c_l0, torch.zeros(4))
    plain = seqlab.RecurrentLayer(mode, 3, 4, bias=False)
    names = {n for n, _ in plain.named_parameters()}
    assert not any("bias" in n for n in names), names


@pytest.mark.parametrize("mode", ["lnlstm", "lngru"])
def test_gradcheck_bidirectional_with_lengths(mode):
    torch.manual_seed(1)
    layer = seqlab.RecurrentLayer(mode, 2, 3, bidirectional=True).double()
    randomise(layer)
    x = torch.randn(4, 2, 2, dtype=F64, requires_grad=True)
    lengths = torch.tensor([4, 2])
    names = [n for n, _ in layer.named_parameters()]

    def f(x, *ps):
        out = torch.func.functional_call(
            layer, dict(zip(names, ps, strict=True)), (x,), {"lengths": lengths}
        )
        return out[0]

    assert torch.autograd.gradcheck(f, (x, *layer.parameters()))
