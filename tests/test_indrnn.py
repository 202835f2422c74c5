"""IndRNN, a cell added only through its description (reference loop, no kernel):
layer, cell, Recurrent, trace and a model against a hand-written loop; float64 gradcheck."""

from __future__ import annotations

import torch

import seqlab
from helpers import assert_close
from seqlab.cells import Cell
from seqlab.models import LanguageModel, LanguageModelConfig

F64 = torch.float64


def hand_loop(x, h, W, u, b, lengths=None):
    """h_t = relu(W x_t + b + u ⊙ h_{t−1}); padded steps keep h and output 0."""
    ys = []
    for t in range(x.shape[0]):
        new = torch.relu(x[t] @ W.T + b + u * h)
        if lengths is not None:
            valid = (t < lengths).unsqueeze(1)
            new = torch.where(valid, new, h)
            ys.append(torch.where(valid, new, torch.zeros_like(new)))
        else:
            ys.append(new)
        h = new
    return torch.stack(ys), h


def test_layer_matches_hand_loop_two_layers_with_lengths():
    layer = seqlab.RecurrentLayer("indrnn", 3, 4, num_layers=2).double()
    names = [n for n, _ in layer.named_parameters()]
    assert names == [f"{n}_l{k}" for k in (0, 1) for n in ("weight_ih", "weight_hh", "bias_ih")]
    assert layer.weight_hh_l0.shape == (4,)  # one recurrent weight per unit
    x = torch.randn(6, 2, 3, dtype=F64)
    lengths = torch.tensor([6, 3])
    h0 = torch.randn(2, 2, 4, dtype=F64)
    out, h_n = layer(x, h0, lengths=lengths)
    y0, f0 = hand_loop(x, h0[0], layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, lengths)
    y1, f1 = hand_loop(y0, h0[1], layer.weight_ih_l1, layer.weight_hh_l1, layer.bias_ih_l1, lengths)
    assert_close(out, y1, F64, "outputs")
    assert_close(h_n, torch.stack([f0, f1]), F64, "final state")


def test_cell_and_recurrent_match_hand_loop_and_gradcheck():
    cell = Cell("indrnn", 3, 4).double()
    x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
    out, h = seqlab.Recurrent(cell)(x)
    want, h_want = hand_loop(x, torch.zeros(2, 4, dtype=F64), *cell.params().values())
    assert_close(out, want, F64, "Recurrent outputs")
    assert_close(h, h_want, F64, "final h")
    y1, _ = cell(x[0])
    assert_close(y1, want[0], F64, "one step")
    params = list(cell.parameters())

    def f(x, *ps):
        weights = dict(zip([n for n, _ in cell.named_parameters()], ps, strict=True))
        return torch.func.functional_call(seqlab.Recurrent(cell), weights, (x,))[0]

    assert torch.autograd.gradcheck(f, (x, *params))


def test_trace_and_model_choice():
    layer = seqlab.RecurrentLayer("indrnn", 3, 4).double()
    x = torch.randn(4, 2, 3, dtype=F64)
    out, _, (tr,) = layer(x, trace=True)
    assert set(tr) == {"a", "h"}
    assert_close(torch.relu(tr["a"]), out, F64, "h = relu(a)")
    lm = LanguageModel(
        LanguageModelConfig(vocab_size=7, embed_size=3, hidden_size=4, cell="indrnn")
    )
    logits, state = lm(torch.randint(0, 7, (2, 5)))
    assert logits.shape == (2, 5, 7) and state.shape == (1, 2, 4)
