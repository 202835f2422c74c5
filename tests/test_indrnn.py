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
    y1 = cell(x[0])
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


class IndRNNKernel:
    """A hand-derived IndRNN kernel written only against the Kernel protocol (test-local):
    params ``(w_ih (H, I), u (H,), b_ih (H,) | None)``, state ``(h0,)``.

    Forward: ``a_t = x_t W_ihᵀ + b + u ⊙ h_{t−1}``, ``h_t = relu(a_t)``; padded rows keep
    ``h`` and output 0. Backward: ``da_t = (dh_t + dy_t) ⊙ [h_t > 0]`` on valid rows,
    ``dh_{t−1} = da_t ⊙ u`` (+ dh_t on padded rows), ``du = Σ da_t ⊙ h_{t−1}``,
    ``dx = dA W_ih``, ``dW_ih = dAᵀ X``, ``db = Σ dA``."""

    name = "indrnn-test"

    def __init__(self):
        self.calls = 0

    def covers(self, spec):
        return spec.name == "indrnn"

    def _mask(self, lengths, T, B):
        if lengths is None:
            return torch.ones(T, B, 1, dtype=torch.bool)
        return (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(-1)

    def forward(self, spec, x, state, params, lengths, reverse, save):
        assert not reverse
        self.calls += 1
        w, u, b = params
        T, B, _ = x.shape
        xw = torch.nn.functional.linear(x, w, b)
        mask = self._mask(lengths, T, B)
        hbuf = [state[0]]
        for t in range(T):
            h = torch.relu(xw[t] + u * hbuf[-1])
            hbuf.append(torch.where(mask[t], h, hbuf[-1]))
        hbuf = torch.stack(hbuf)
        return hbuf[1:] * mask, (hbuf[-1].clone(),), (hbuf,)

    def backward(self, spec, x, params, lengths, reverse, saved, gy, gstate):
        w, u, b = params
        (hbuf,) = saved
        T, B, _ = x.shape
        mask = self._mask(lengths, T, B)
        dh, da = gstate[0].clone(), torch.empty(T, B, u.shape[0], dtype=x.dtype)
        for t in range(T - 1, -1, -1):
            dh = dh + gy[t] * mask[t]
            da[t] = dh * (hbuf[t + 1] > 0) * mask[t]
            dh = torch.where(mask[t], da[t] * u, dh)
        rows = da.reshape(T * B, -1)
        du = (da * hbuf[:-1]).sum((0, 1))
        dparams = (rows.T @ x.reshape(T * B, -1), du, None if b is None else rows.sum(0))
        return (rows @ w).view(T, B, -1), (dh,), dparams


def test_a_kernel_with_other_parameters_plugs_in():
    """The engine drives any Kernel over sequences of state and parameters: a kernel for
    IndRNN (a (H,) recurrent vector, no w_hh, no b_hh) equals the reference loop in values
    and every gradient (float64), with lengths."""
    from seqlab import engine

    layer = seqlab.RecurrentLayer("indrnn", 3, 4).double()
    x = torch.randn(6, 3, 3, dtype=F64, requires_grad=True)
    h0 = torch.randn(1, 3, 4, dtype=F64, requires_grad=True)
    lengths = torch.tensor([6, 2, 4])
    leaves = [x, h0, *layer.parameters()]

    def run():
        y, h = layer(x, h0, lengths=lengths)
        g = torch.Generator().manual_seed(3)
        loss = (y * torch.randn(y.shape, generator=g, dtype=F64)).sum() + (h * h).sum()
        return [y, h], torch.autograd.grad(loss, leaves)

    want_out, want_grads = run()  # no kernel registered: the reference loop
    kernel = engine.register_kernel(IndRNNKernel())
    try:
        got_out, got_grads = run()
    finally:
        engine.EXTRA_KERNELS.remove(kernel)
    assert kernel.calls == 1
    pairs = zip(got_out + list(got_grads), want_out + list(want_grads), strict=True)
    for k, (a, b) in enumerate(pairs):
        assert_close(a, b, F64, f"tensor {k}")
