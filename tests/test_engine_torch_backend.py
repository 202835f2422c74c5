"""The ``torch`` backend (PyTorch's own fused RNN kernels with seqlab's weights) against the
reference loop: outputs, final states and every gradient, with ragged lengths (a 0 included),
reverse, no bias, float64/float32; through the layers (bidirectional, 2 layers, packed);
selection, the fallback for kinds torch lacks, and the report."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest
import torch

import seqlab
from seqlab import engine
from seqlab.engine import torch_ops
from seqlab.functional.scan import reference_layer
from test_engine import assert_close, make_inputs, run_and_grads

TORCH_MODES = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
CASES = list(
    itertools.product(TORCH_MODES, [None, "ragged"], [False, True], [torch.float64, torch.float32])
)


def torch_backend(*args):
    return engine.run_layer(*args, backend="torch")


@pytest.mark.parametrize(("mode", "lengths", "reverse", "dtype"), CASES)
def test_torch_backend_matches_reference(mode, lengths, reverse, dtype):
    T, B, I, H = 7, 4, 5, 6
    lens = torch.tensor([7, 3, 0, 5]) if lengths else None
    for bias in (True, False):
        inputs = make_inputs(mode, T, B, I, H, dtype, bias)
        want_out, want_grads = run_and_grads(reference_layer, mode, inputs, lens, reverse)
        got_out, got_grads = run_and_grads(torch_backend, mode, inputs, lens, reverse)
        for k, (a, b) in enumerate(zip(got_out, want_out, strict=True)):
            assert_close(a, b, dtype, f"output {k} (torch, bias={bias})")
        for k, (a, b) in enumerate(zip(got_grads, want_grads, strict=True)):
            assert_close(a, b, dtype, f"gradient {k} (torch, bias={bias})")
        if lens is not None:  # padded outputs are exactly zero, a 0-length row keeps h0
            assert (got_out[0][3:, 1] == 0).all() and (got_out[0][:, 2] == 0).all()
            for final, h0 in zip(got_out[1:], inputs[1], strict=True):
                assert torch.equal(final[2], h0[2])


def test_one_bias_only_is_zero_other():
    x, state, w_ih, w_hh, b_ih, _ = make_inputs("lstm", 4, 2, 3, 3, torch.float64)
    want = reference_layer("lstm", x, state, w_ih, w_hh, b_ih, None)
    got = engine.run_layer("lstm", x, state, w_ih, w_hh, b_ih, None, backend="torch")
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)


def test_torch_backend_uses_torch_kernel(monkeypatch):
    calls = []
    real = torch_ops.run
    monkeypatch.setattr(torch_ops, "run", lambda *a: calls.append(a[0]) or real(*a))
    x, state, w_ih, w_hh, b_ih, b_hh = make_inputs("gru", 3, 2, 3, 4, torch.float32)
    engine.run_layer("gru", x, state, w_ih, w_hh, b_ih, b_hh, backend="torch")
    assert calls == ["gru"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: seqlab.LSTM(3, 4, num_layers=2, bidirectional=True, backend="torch"),
        lambda: seqlab.GRU(3, 4, bidirectional=True, backend="torch"),
        lambda: seqlab.GRU(3, 4, reset_after=False, backend="torch"),  # falls back to fused
        lambda: seqlab.RNN(3, 4, nonlinearity="relu", bidirectional=True, backend="torch"),
    ],
)
def test_layers_on_torch_backend_equal_reference(make):
    torch.manual_seed(0)
    model = make().double()
    ref = make().double()
    ref.load_state_dict(model.state_dict())
    ref.backend = "reference"
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4])
    outs = []
    for m in (model, ref):
        m.zero_grad()
        y, state = m(x, lengths=lengths)
        parts = state if isinstance(state, tuple) else (state,)
        (y.pow(2).sum() + sum(p.sum() for p in parts)).backward()
        outs.append((y, parts, [p.grad for p in m.parameters()]))
    (y1, s1, g1), (y2, s2, g2) = outs
    torch.testing.assert_close(y1, y2, rtol=1e-10, atol=1e-12)
    for a, b in zip((*s1, *g1), (*s2, *g2), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_torch_backend_gradgradcheck():
    x, state, w_ih, w_hh, b_ih, b_hh = make_inputs("lstm", 3, 2, 2, 2, torch.float64)
    lens = torch.tensor([3, 1])

    def fn(x, w_ih, w_hh, *state):
        y, final = engine.run_layer(
            "lstm", x, state, w_ih, w_hh, b_ih, b_hh, lens, reverse=True, backend="torch"
        )
        return (y, *final)

    assert torch.autograd.gradgradcheck(fn, (x, w_ih, w_hh, *state))


def test_selection_and_report():
    assert engine.resolve_backend("torch") == "torch"
    report = engine.backends()
    assert "torch" in report["available"] and "torch" in engine.BACKENDS
    assert report["default_cuda"] in ("torch", os.environ.get("SEQLAB_BACKEND"))
    if torch.cuda.is_available():
        assert engine.resolve_backend(None, torch.zeros(1, device="cuda")) == "torch"


def test_env_selects_torch_backend():
    code = (
        "import torch; from seqlab import engine\n"
        "assert engine.resolve_backend(None, torch.zeros(1)) == 'torch'\n"
        "assert engine.backends()['default'] == 'torch'\n"
    )
    env = dict(os.environ, SEQLAB_BACKEND="torch")
    src = os.path.join(os.path.dirname(__file__), "..", "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


@pytest.mark.parametrize(("I", "H"), [(4, 0), (0, 3)])
def test_zero_sizes_equal_reference(I, H):  # noqa: E741
    x = torch.randn(3, 2, I, dtype=torch.float64, requires_grad=True)
    state = (torch.randn(2, H, dtype=torch.float64),) * 2
    w = (torch.randn(4 * H, I), torch.randn(4 * H, H), torch.randn(4 * H), torch.randn(4 * H))
    w = tuple(t.double() for t in w)
    lens = torch.tensor([3, 1])
    got = engine.run_layer("lstm", x, state, *w, lens, backend="torch")
    want = reference_layer("lstm", x, state, *w, lens)
    for a, b in zip((got[0], *got[1]), (want[0], *want[1]), strict=True):
        torch.testing.assert_close(a, b)
    (gx,) = torch.autograd.grad(got[0].sum(), x, allow_unused=True, materialize_grads=True)
    assert gx.shape == x.shape and not gx.any()
