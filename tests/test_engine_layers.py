"""seqlab.RNN/LSTM/GRU through each fast backend against the same layer on the reference loop:
layers {1, 2} × bidirectional × batch_first × lengths {none, ragged} × dtype, with dropout
between layers; outputs, final states and every gradient (input, initial states, parameters)."""

from __future__ import annotations

import itertools

import pytest
import torch

from seqlab.engine import native
from seqlab.functional import SPECS
from seqlab.layers import make_layer

FAST = ["fused"] + (["native"] if native.load() is not None else [])
# every cell kind with a fast kernel, from the cell descriptions
KINDS = [name for name, spec in SPECS.items() if spec.kernel is not None]
GRID = list(itertools.product([1, 2], [False, True], [False, True], [None, "ragged"]))


def build(kind, backend, layers, bidirectional, batch_first, dtype, dropout=0.0):
    torch.manual_seed(0)  # same weights for every backend
    return make_layer(
        kind,
        5,
        4,
        num_layers=layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        dropout=dropout,
        backend=backend,
    ).to(dtype)


def run(layer, x, state, leaves_state, lengths, seed=3):
    torch.manual_seed(seed)  # same dropout masks for every backend
    out, final = layer(x, state, lengths=lengths)
    finals = list(final) if isinstance(final, tuple) else [final]
    g = torch.Generator().manual_seed(1)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    for f in finals:
        loss = loss + (f * torch.randn(f.shape, generator=g, dtype=f.dtype)).sum()
    leaves = [x, *leaves_state, *layer.parameters()]
    return [out, *finals], torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", KINDS)
def test_layer_backend_matches_reference(backend, dtype, kind):
    T, B = 6, 3
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    for layers, bidir, batch_first, lens in GRID:
        dropout = 0.3 if layers == 2 else 0.0
        ref = build(kind, "reference", layers, bidir, batch_first, dtype, dropout)
        fast = build(kind, backend, layers, bidir, batch_first, dtype, dropout)
        fast.load_state_dict(ref.state_dict())
        shape = (B, T, 5) if batch_first else (T, B, 5)
        x = torch.randn(shape, dtype=dtype, requires_grad=True)
        D = 2 if bidir else 1
        n_states = len(SPECS[kind].state)
        state = [
            torch.randn(layers * D, B, 4, dtype=dtype, requires_grad=True) for _ in range(n_states)
        ]
        st = SPECS[kind].pack(state)
        lengths = torch.tensor([6, 2, 4]) if lens else None
        want_out, want_grads = run(ref, x, st, state, lengths)
        got_out, got_grads = run(fast, x, st, state, lengths)
        case = f"{backend} layers={layers} bidir={bidir} batch_first={batch_first} lens={lens}"
        for a, b in zip(got_out, want_out, strict=True):
            torch.testing.assert_close(a, b, **tol, msg=lambda m, c=case: f"{c}: {m}")
        for a, b in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(a, b, **tol, msg=lambda m, c=case: f"{c}: {m}")
