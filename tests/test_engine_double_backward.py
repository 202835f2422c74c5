"""Double backward (create_graph=True) on the fast backends: float64 gradgradcheck through
the public layers, and second derivatives equal to the reference loop's (the oracle)."""

from __future__ import annotations

import pytest
import torch

import seqlab
from seqlab.engine import native

FAST = ["fused"] + (["native"] if native.load() is not None else [])
LAYERS = {
    "lstm": lambda **kw: seqlab.LSTM(2, 3, **kw),
    "gru": lambda **kw: seqlab.GRU(2, 3, **kw),
    "gru_reset_before": lambda **kw: seqlab.GRU(2, 3, reset_after=False, **kw),
    "rnn_tanh": lambda **kw: seqlab.RNN(2, 3, **kw),
    "rnn_relu": lambda **kw: seqlab.RNN(2, 3, nonlinearity="relu", **kw),
}


def layer(kind, backend, bidirectional=False):
    torch.manual_seed(0)
    return LAYERS[kind](backend=backend, bidirectional=bidirectional).double()


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("kind", list(LAYERS))
@pytest.mark.parametrize("with_lengths", [False, True])
def test_gradgradcheck(backend, kind, with_lengths):
    m = layer(kind, backend)
    assert seqlab.engine.resolve_backend(backend) == backend
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 2]) if with_lengths else None
    names = [n for n, _ in m.named_parameters()]

    def fn(x, *weights):
        params = dict(zip(names, weights, strict=True))
        y, state = torch.func.functional_call(m, params, (x, None, lengths))
        parts = state if isinstance(state, tuple) else (state,)
        return (y, *parts)

    inputs = (x, *[p.detach().clone().requires_grad_() for p in m.parameters()])
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("kind", list(LAYERS))
def test_second_derivatives_equal_reference(backend, kind):
    def second(bk):
        m = layer(kind, bk, bidirectional=True)
        g = torch.Generator().manual_seed(2)
        x = torch.randn(4, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
        y, _ = m(x, lengths=torch.tensor([4, 1, 3]))
        gx, *gw = torch.autograd.grad((y**3).sum(), (x, *m.parameters()), create_graph=True)
        penalty = (gx**2).sum() + sum((w**2).sum() for w in gw)
        return torch.autograd.grad(penalty, (x, *m.parameters()))

    for got, want in zip(second(backend), second("reference"), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
