"""Every engine backend against the reference loop (values and all gradients), gradcheck,
forced fallback, backend reporting and double backward."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest
import torch

from seqlab import engine
from seqlab.engine import native
from seqlab.functional.scan import reference_layer
from seqlab.functional.spec import SPECS

# every cell kind with a fast kernel, and its gate count, from the cell descriptions
MODES = [name for name, spec in SPECS.items() if spec.kernel is not None]
GATES = {name: SPECS[name].G for name in MODES}
FAST = ["fused"] + (["native"] if native.load() is not None else [])


def make_inputs(mode, T, B, I, H, dtype, bias=True, seed=0, scale_weights=0.5):
    g = torch.Generator().manual_seed(seed)
    G = GATES[mode]

    def r(*shape, scale=scale_weights):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    x = r(T, B, I, scale=1.0)
    state = tuple(r(B, H) for _ in SPECS[mode].state)
    w_ih, w_hh = r(G * H, I), r(G * H, H)
    b_ih, b_hh = (r(G * H), r(G * H)) if bias else (None, None)
    return x, state, w_ih, w_hh, b_ih, b_hh


def run_and_grads(fn, mode, inputs, lengths, reverse, seed=1):
    x, state, w_ih, w_hh, b_ih, b_hh = inputs
    y, final = fn(mode, x, state, w_ih, w_hh, b_ih, b_hh, lengths, reverse)
    g = torch.Generator().manual_seed(seed)
    # a random weighting of every output so each gradient path is exercised
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    for s in final:
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
    leaves = [x, *state, w_ih, w_hh] + [b for b in (b_ih, b_hh) if b is not None]
    grads = torch.autograd.grad(loss, leaves)
    return [y, *final], list(grads)


def backend_fn(name):
    def fn(*args):
        return engine.run_layer(*args, backend=name)

    return fn


def assert_close(got, want, dtype, what):
    """float64 within 1e-10; float32 within 1e-5 relative, where a small entry of a gradient
    that sums many large float32 terms is held to 1e-5 of the tensor's scale, not its own
    size (summation order alone moves it by that much, the fused backend's included)."""
    if dtype == torch.float64:
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10, msg=what)
    else:
        scale = max(1.0, want.detach().abs().max().item()) if want.numel() else 1.0
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * scale, msg=what)


CASES = list(
    itertools.product(MODES, [None, "ragged"], [False, True], [torch.float64, torch.float32])
)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize(("mode", "lengths", "reverse", "dtype"), CASES)
def test_backend_matches_reference(backend, mode, lengths, reverse, dtype):
    T, B, I, H = 7, 4, 5, 6
    lens = torch.tensor([7, 3, 0, 5]) if lengths else None
    for bias in (True, False):
        inputs = make_inputs(mode, T, B, I, H, dtype, bias)
        want_out, want_grads = run_and_grads(reference_layer, mode, inputs, lens, reverse)
        got_out, got_grads = run_and_grads(backend_fn(backend), mode, inputs, lens, reverse)
        for k, (a, b) in enumerate(zip(got_out, want_out, strict=True)):
            assert_close(a, b, dtype, f"output {k} ({backend}, bias={bias})")
        for k, (a, b) in enumerate(zip(got_grads, want_grads, strict=True)):
            assert_close(a, b, dtype, f"gradient {k} ({backend}, bias={bias})")
        if lens is not None:  # padded outputs are exactly zero
            assert (got_out[0][3:, 1] == 0).all() and (got_out[0][:, 2] == 0).all()


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(backend, mode):
    x, state, w_ih, w_hh, b_ih, b_hh = make_inputs(mode, 4, 3, 2, 3, torch.float64)
    lens = torch.tensor([4, 2, 3])

    def fn(x, w_ih, w_hh, b_ih, b_hh, *state):
        y, final = engine.run_layer(
            mode, x, state, w_ih, w_hh, b_ih, b_hh, lens, reverse=True, backend=backend
        )
        return (y, *final)

    assert torch.autograd.gradcheck(fn, (x, w_ih, w_hh, b_ih, b_hh, *state))


@pytest.mark.parametrize("backend", FAST)
def test_double_backward_matches_reference(backend):
    # once raised "double backward not supported"; now second derivatives equal the oracle's
    def second(bk):
        x, state, w_ih, w_hh, b_ih, b_hh = make_inputs("lstm", 3, 2, 2, 3, torch.float64)
        y, _ = engine.run_layer("lstm", x, state, w_ih, w_hh, b_ih, b_hh, backend=bk)
        (gx,) = torch.autograd.grad((y * y).sum(), x, create_graph=True)
        return torch.autograd.grad((gx * gx).sum(), (x, w_ih, w_hh, b_ih, b_hh, *state))

    for got, want in zip(second(backend), second("reference"), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", FAST)
def test_no_grad_matches(backend):
    inputs = make_inputs("gru", 6, 3, 4, 5, torch.float32)
    lens = torch.tensor([6, 2, 4])
    with torch.no_grad():
        y, (h,) = engine.run_layer(
            "gru", *inputs[:1], inputs[1], *inputs[2:], lens, backend=backend
        )
        y_ref, (h_ref,) = reference_layer("gru", inputs[0], inputs[1], *inputs[2:], lens)
    torch.testing.assert_close(y, y_ref)
    torch.testing.assert_close(h, h_ref)


def test_bad_backend_and_shapes():
    inputs = make_inputs("lstm", 3, 2, 2, 3, torch.float32)
    with pytest.raises(ValueError, match="backend"):
        engine.run_layer("lstm", inputs[0], inputs[1], *inputs[2:], backend="cuda-magic")
    with pytest.raises(ValueError, match="w_hh"):
        engine.run_layer("lstm", inputs[0], inputs[1], inputs[2], inputs[3][:5], None, None)
    with pytest.raises(ValueError, match="state"):
        engine.run_layer("lstm", inputs[0], inputs[1][:1], *inputs[2:])
    with pytest.raises(TypeError, match="w_ih"):
        engine.run_layer("lstm", inputs[0], inputs[1], inputs[2].double(), *inputs[3:])


def test_report_names_a_default():
    report = engine.backends()
    assert report["default"] in engine.BACKENDS
    assert set(report["available"]) >= {"fused", "reference"}
    assert "build_dir" in report["native"]
    if report["default"] != "native":
        assert report["native"]["reason"]


def test_forced_fallback_without_compiler():
    """SEQLAB_NATIVE=0 (no compiler): automatic choice is fused and results still match."""
    code = (
        "import torch; from seqlab import engine; from seqlab.functional.scan import "
        "reference_layer as R\n"
        "r = engine.backends(); assert r['default'] == 'fused', r\n"
        "assert 'SEQLAB_NATIVE' in r['why'], r\n"
        "x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)\n"
        "s = (torch.zeros(2, 4, dtype=torch.float64),) * 2\n"
        "w1 = torch.randn(16, 3, dtype=torch.float64)\n"
        "w2 = torch.randn(16, 4, dtype=torch.float64)\n"
        "y, _ = engine.run_layer('lstm', x, s, w1, w2, None, None)\n"
        "y2, _ = R('lstm', x, s, w1, w2, None, None)\n"
        "assert torch.allclose(y, y2, atol=1e-12)\n"
        "try:\n    engine.run_layer('lstm', x, s, w1, w2, None, None, backend='native')\n"
        "except RuntimeError as e:\n    assert 'SEQLAB_NATIVE' in str(e)\n"
        "else:\n    raise SystemExit('forced native did not raise')\n"
    )
    env = dict(os.environ, SEQLAB_NATIVE="0")
    env.pop("SEQLAB_BACKEND", None)
    src = os.path.join(os.path.dirname(__file__), "..", "src")
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_env_forces_backend(monkeypatch):
    monkeypatch.setenv("SEQLAB_BACKEND", "reference")
    assert engine.resolve_backend() == "reference"
    monkeypatch.setenv("SEQLAB_BACKEND", "fused")
    assert engine.resolve_backend() == "fused"


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_blas_sized_matches_reference(backend, mode, dtype):
    """Sizes where the native loop uses BLAS (packed W_hh in float32) and parallel rows."""
    T, B, I, H = 5, 24, 16, 48
    lens = torch.randint(1, T + 1, (B,))
    inputs = make_inputs(mode, T, B, I, H, dtype, scale_weights=0.2)
    want_out, want_grads = run_and_grads(reference_layer, mode, inputs, lens, False)
    got_out, got_grads = run_and_grads(backend_fn(backend), mode, inputs, lens, False)
    for k, (a, b) in enumerate(zip(got_out + got_grads, want_out + want_grads, strict=True)):
        assert_close(a, b, dtype, f"tensor {k} ({backend})")


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
def test_broadcast_output_gradient(backend, mode):
    """``y.sum()`` hands the backward an expanded (stride-0) gradient; it must not matter."""
    T, B, I, H = 6, 20, 8, 40
    inputs = make_inputs(mode, T, B, I, H, torch.float64, scale_weights=0.2)
    x, state, w_ih, w_hh, b_ih, b_hh = inputs
    leaves = [x, *state, w_ih, w_hh, b_ih, b_hh]
    grads = []
    for fn in (reference_layer, backend_fn(backend)):
        y, final = fn(mode, x, state, w_ih, w_hh, b_ih, b_hh, None, False)
        grads.append(torch.autograd.grad(y.sum() + final[0].mean(), leaves))
    for a, b in zip(*grads, strict=True):
        assert_close(a, b, torch.float64, f"{backend} {mode}")


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("reverse", [False, True])
def test_two_threads_match_reference(backend, mode, reverse):
    """Two threads, an odd batch and odd/even T still match the reference loop.

    The sizes are large enough for the native LSTM/RNN loop to split each step by hidden units
    across a team of two (H = 50: shards of 32 and 18 units), and the backward's two dh
    parities swap every step; other cells let BLAS split each step's GEMM."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for T, dtype in ((6, torch.float64), (7, torch.float32)):
            B, I, H = 29, 16, 50
            lens = torch.randint(1, T + 1, (B,), generator=torch.Generator().manual_seed(T))
            inputs = make_inputs(mode, T, B, I, H, dtype, scale_weights=0.2)
            want_out, want_grads = run_and_grads(reference_layer, mode, inputs, lens, reverse)
            got_out, got_grads = run_and_grads(backend_fn(backend), mode, inputs, lens, reverse)
            pairs = zip(got_out + got_grads, want_out + want_grads, strict=True)
            for k, (a, b) in enumerate(pairs):
                assert_close(a, b, dtype, f"tensor {k} ({backend}, T={T})")
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunked_projection_matches_reference(threads, mode, dtype):
    """The native LSTM/GRU/RNN loop projects the input, and in the backward forms the weight
    gradients and dx, a chunk of steps at a time (as many as keep ~256 KB per thread, but at
    least 512 rows). With B=64 a chunk is 8 steps, so T=9 crosses a chunk boundary, in both
    directions, with and without saving for backward."""
    if "native" not in FAST:
        pytest.skip("native backend unavailable")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)

    try:
        T, B, I, H = 9, 64, 24, 320
        lens = torch.randint(1, T + 1, (B,), generator=torch.Generator().manual_seed(5))
        inputs = make_inputs(mode, T, B, I, H, dtype, scale_weights=0.05)
        x, state, w_ih, w_hh, b_ih, b_hh = inputs
        for reverse in (False, True):
            want_out, want_grads = run_and_grads(reference_layer, mode, inputs, lens, reverse)
            got_out, got_grads = run_and_grads(backend_fn("native"), mode, inputs, lens, reverse)
            pairs = zip(got_out + got_grads, want_out + want_grads, strict=True)
            for k, (a, b) in enumerate(pairs):
                assert_close(a, b, dtype, f"tensor {k} (threads={threads}, reverse={reverse})")
            with torch.no_grad():
                y, final = engine.run_layer(
                    mode, x, state, w_ih, w_hh, b_ih, b_hh, lens, reverse, backend="native"
                )
            for k, (a, b) in enumerate(zip([y, *final], want_out, strict=True)):
                assert_close(a, b.detach(), dtype, f"no-grad output {k} (reverse={reverse})")
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("mode", ["lstm", "gru"])
def test_results_survive_later_calls(backend, mode):
    """Backends may reuse scratch buffers between calls: nothing they return may alias one."""
    T, B, I, H = 6, 20, 8, 40
    first = make_inputs(mode, T, B, I, H, torch.float32, scale_weights=0.2, seed=3)
    x, state, w_ih, w_hh, b_ih, b_hh = first
    with torch.no_grad():
        y, final = engine.run_layer(mode, x, state, w_ih, w_hh, b_ih, b_hh, backend=backend)
        kept = [t.clone() for t in (y, *final)]
    grads = run_and_grads(backend_fn(backend), mode, first, None, False)[1]
    kept_grads = [g.clone() for g in grads]
    other = make_inputs(mode, T, B, I, H, torch.float32, scale_weights=0.2, seed=4)
    with torch.no_grad():
        engine.run_layer(mode, *other[:2], *other[2:], backend=backend)
    run_and_grads(backend_fn(backend), mode, other, None, False)
    for a, b in zip((y, *final, *grads), kept + kept_grads, strict=True):
        assert torch.equal(a, b)
