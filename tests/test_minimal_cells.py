"""minGRU/minLSTM: the layer (parallel scans and sequential loop) against a hand-written loop
in values, final states and every gradient; scan == sequential with lengths, reverse, two
layers, bidirectional, float32/float64; the native op's time chunks; stability at T = 1000;
float64 gradcheck."""

from __future__ import annotations

import pytest
import torch

import seqlab
from helpers import assert_close
from seqlab import engine
from seqlab.cells import Cell
from seqlab.engine import linear_scan, minimal
from seqlab.models import LanguageModel, LanguageModelConfig

F64 = torch.float64
MODES = ("mingru", "minlstm")
# "scan:K": the native chunked scan forced to K time chunks ("scan" alone: the op's choice,
# one chunk on <= 2 threads); "log-scan": torch ops in log space; "auto" is "scan"
METHODS = ("scan", "scan:3", "sequential", "log-scan")


def by(method):
    """``minimal.evaluation`` for a name of METHODS."""
    name, _, k = method.partition(":")
    return minimal.evaluation(name, chunks=int(k) if k else None)


def sig(v):
    return 1 / (1 + torch.exp(-v))


def g_hand(v):
    return torch.where(v >= 0, v + 0.5, sig(v))


def hand_loop(mode, x, h, W, b, lengths=None):
    """The paper's equations, one step at a time; padded steps keep h and output 0."""
    H = h.shape[1]
    ys = []
    for t in range(x.shape[0]):
        xw = x[t] @ W.T + (0 if b is None else b)
        if mode == "mingru":
            z, n = sig(xw[:, :H]), g_hand(xw[:, H:])
            new = (1 - z) * h + z * n
        else:
            f, i, n = sig(xw[:, :H]), sig(xw[:, H : 2 * H]), g_hand(xw[:, 2 * H :])
            new = f / (f + i) * h + i / (f + i) * n
        if lengths is not None:
            valid = (t < lengths).unsqueeze(1)
            new = torch.where(valid, new, h)
            ys.append(torch.where(valid, new, torch.zeros_like(new)))
        else:
            ys.append(new)
        h = new
    return torch.stack(ys), h


def hand_layer(layer, x, h0, lengths):
    """A (possibly 2-layer, bidirectional) stack of hand loops with the layer's weights."""
    from seqlab.functional.scan import reverse_padded

    D = 2 if layer.bidirectional else 1
    finals, inp = [], x
    for k in range(layer.num_layers):
        outs = []
        for d, suffix in enumerate([f"_l{k}", f"_l{k}_reverse"][:D]):
            p = layer.params(suffix)
            src = inp if d == 0 else reverse_padded(inp, lengths)
            y, hT = hand_loop(layer.mode, src, h0[k * D + d], p["w_ih"], p.get("b_ih"), lengths)
            outs.append(y if d == 0 else reverse_padded(y, lengths))
            finals.append(hT)
        inp = torch.cat(outs, -1)
    return inp, torch.stack(finals)


def randomise(module, scale=0.5):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)


def outputs_and_grads(fn, leaves):
    y, h = fn()
    gen = torch.Generator().manual_seed(3)
    loss = (y * torch.randn(y.shape, generator=gen, dtype=y.dtype)).sum() + (h * h.cos()).sum()
    return [y, h], list(torch.autograd.grad(loss, leaves))


def assert_all_close(got, want, dtype, what):
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert_close(a, b, dtype, f"{what}: tensor {k}")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_layer_matches_hand_loop_values_states_gradients(mode, method):
    """Two bidirectional layers with lengths: outputs, final state and the gradient of
    the input, the initial state and every parameter equal the hand loop's (float64)."""
    torch.manual_seed(0)
    layer = seqlab.RecurrentLayer(mode, 3, 4, num_layers=2, bidirectional=True).double()
    randomise(layer)
    names = [n for n, _ in layer.named_parameters()]
    assert names == [
        f"{n}_l{k}{s}" for k in (0, 1) for s in ("", "_reverse") for n in ("weight_ih", "bias_ih")
    ]
    G = 2 if mode == "mingru" else 3
    assert layer.weight_ih_l1.shape == (G * 4, 8) and layer.bias_ih_l0.shape == (G * 4,)
    x = torch.randn(7, 3, 3, dtype=F64, requires_grad=True)
    h0 = torch.randn(4, 3, 4, dtype=F64, requires_grad=True)  # signed: exact in the scan
    lengths = torch.tensor([7, 2, 5])
    leaves = [x, h0, *layer.parameters()]

    def ours():
        with by(method):
            return layer(x, h0, lengths=lengths)

    got = outputs_and_grads(ours, leaves)
    want = outputs_and_grads(lambda: hand_layer(layer, x, h0, lengths), leaves)
    assert_all_close(got[0] + got[1], want[0] + want[1], F64, f"{mode}/{method}")


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "case", ["plain", "lengths", "reverse", "reverse+lengths", "two-layer-bi", "no-bias"]
)
def test_scan_equals_sequential(mode, dtype, case):
    torch.manual_seed(1)
    deep = case == "two-layer-bi"
    layer = seqlab.RecurrentLayer(
        mode,
        5,
        6,
        num_layers=2 if deep else 1,
        bidirectional=deep or "reverse" in case,
        bias=case != "no-bias",
    ).to(dtype)
    randomise(layer)
    T, B = 9, 4
    x = torch.randn(T, B, 5, dtype=dtype, requires_grad=True)
    h0 = torch.randn(layer.num_layers * layer.num_directions, B, 6, dtype=dtype)
    h0.requires_grad_(True)
    lengths = torch.tensor([9, 1, 4, 7]) if "lengths" in case or deep else None
    leaves = [x, h0, *layer.parameters()]
    results = {}
    for method in (*METHODS, "scan:4"):
        with by(method):
            results[method] = outputs_and_grads(lambda: layer(x, h0, lengths=lengths), leaves)
    seq = results.pop("sequential")
    for method, scan in results.items():
        assert_all_close(scan[0] + scan[1], seq[0] + seq[1], dtype, f"{mode}/{case}/{method}")
        if lengths is not None:  # padded outputs are exactly zero, in every method
            pad = torch.arange(T).unsqueeze(1) >= lengths
            assert (scan[0][0][pad] == 0).all() and (seq[0][0][pad] == 0).all()


@pytest.mark.parametrize("mode", MODES)
def test_long_sequence_is_stable(mode):
    """T = 1000. Moderate weights: every method equals the hand loop in float64 (values and
    every gradient). Large weights (gates near 0/1, products of a_t far below float's range):
    every method stays finite; the native chunked scan (products of a_t, underflowing to 0)
    still equals it; the log-space scan's cumulative log-sums reach |A| ~ 1e3, so it agrees
    to a relative 1e-8 in float64; all agree to 1e-3 in float32."""
    torch.manual_seed(2)
    layer = seqlab.RecurrentLayer(mode, 4, 8).double()
    x = torch.randn(1000, 2, 4, dtype=F64, requires_grad=True)
    h0 = torch.randn(1, 2, 8, dtype=F64, requires_grad=True)
    leaves = [x, h0, *layer.parameters()]
    for scale, tol in ((0.5, None), (3.0, 1e-8)):
        randomise(layer, scale)
        want = outputs_and_grads(lambda: hand_layer(layer, x, h0, None), leaves)
        for method in (*METHODS, "scan:7"):
            with by(method):
                got = outputs_and_grads(lambda: layer(x, h0), leaves)
            for k, (a, b) in enumerate(zip(got[0] + got[1], want[0] + want[1], strict=True)):
                assert torch.isfinite(a).all(), f"{method}: tensor {k} not finite"
                if tol is None or method != "log-scan":
                    assert_close(a, b, F64, f"{mode}/{method} x{scale}: tensor {k}")
                else:
                    rel = (a - b).abs().max() / b.abs().max().clamp(min=1)
                    assert rel < tol, f"{method} x{scale}: tensor {k}: relative error {rel:.1e}"
        layer32 = seqlab.RecurrentLayer(mode, 4, 8)
        layer32.load_state_dict(layer.state_dict())
        for method in (*METHODS, "scan:7"):
            with by(method):
                y32, _ = layer32(x.detach().float(), h0.detach().float())
            assert torch.isfinite(y32).all()
            rel = (y32.double() - want[0][0]).abs().max() / want[0][0].abs().max()
            assert rel < 1e-3, f"float32 {method} vs float64: relative error {rel:.2e}"


@pytest.mark.parametrize("method", ("scan:2", "sequential", "log-scan"))
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_float64(mode, method):
    torch.manual_seed(4)
    layer = seqlab.RecurrentLayer(mode, 3, 4, bidirectional=True).double()
    randomise(layer)
    x = torch.randn(5, 3, 3, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 3, 4, dtype=F64, requires_grad=True)
    lengths = torch.tensor([5, 2, 4])
    params = list(layer.parameters())
    names = [n for n, _ in layer.named_parameters()]

    def f(x, h0, *ps):
        with by(method):
            weights = dict(zip(names, ps, strict=True))
            y, h = torch.func.functional_call(layer, weights, (x, h0), {"lengths": lengths})
        return y, h

    assert torch.autograd.gradcheck(f, (x, h0, *params))


def test_layer_runs_the_registered_kernel_on_the_default_backend(monkeypatch):
    """engine.run picks the scan kernel (no fused/native kernel covers these kinds);
    backend='reference' runs the plain step loop, with the same result."""
    assert minimal.KERNEL in engine.EXTRA_KERNELS and minimal.KERNEL.name == "minimal"
    calls = []
    forward = minimal.KERNEL.forward
    monkeypatch.setattr(
        minimal.KERNEL, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k)
    )
    layer = seqlab.RecurrentLayer("minlstm", 3, 4).double()
    x = torch.randn(6, 2, 3, dtype=F64)
    out, h = layer(x)
    assert len(calls) == 1
    ref = seqlab.RecurrentLayer("minlstm", 3, 4, backend="reference").double()
    ref.load_state_dict(layer.state_dict())
    out_ref, h_ref = ref(x)
    assert len(calls) == 1
    assert_close(out, out_ref, F64, "outputs")
    assert_close(h, h_ref, F64, "final h")


def test_linear_recurrence_solvers():
    """The scans and the Python loop against a hand loop, with a signed h0 and signed b."""
    a, b = torch.rand(600, 3, 4, dtype=F64), torch.randn(600, 3, 4, dtype=F64)
    h0 = torch.randn(3, 4, dtype=F64)
    want, h = [], h0
    for t in range(600):
        h = a[t] * h + b[t]
        want.append(h)
    want = torch.stack(want)
    assert_close(linear_scan.loop(a, b, h0), want, F64, "loop")
    for chunk in (None, 7, 1000):  # 600 steps: 3 chunks of the default 256, 86 of 7, one
        got = linear_scan.signed_log_scan(a.log(), b, h0, chunk)
        assert_close(got, want, F64, f"signed log scan, chunk {chunk}")
    pos = b.abs()
    want_pos = linear_scan.loop(a, pos, h0)
    assert_close(linear_scan.log_scan(a.log(), pos.log(), h0, 5), want_pos, F64, "log scan")


@pytest.mark.parametrize("mode", MODES)
def test_sequential_without_native_engine(mode, monkeypatch):
    """Where the native engine is not built, "sequential" is torch ops and a Python loop and
    "auto" is the scan; all equal the native fused op (values and every gradient)."""
    torch.manual_seed(6)
    layer = seqlab.RecurrentLayer(mode, 3, 5, bidirectional=True).double()
    randomise(layer)
    x = torch.randn(6, 3, 3, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 3, 5, dtype=F64, requires_grad=True)
    lengths = torch.tensor([6, 1, 3])
    leaves = [x, h0, *layer.parameters()]
    run = lambda: layer(x, h0, lengths=lengths)  # noqa: E731
    results = {}
    built = engine.native.load() is not None
    with minimal.evaluation("sequential"):
        results["native"] = outputs_and_grads(run, leaves)
        assert minimal.resolve(x) == (2 if built else 1)
    for method in ("scan", "auto"):
        with minimal.evaluation(method):
            assert minimal.resolve(x) == (3 if built else 0)
    monkeypatch.setattr(minimal.native, "load", lambda: None)
    for method in ("sequential", "auto"):
        with minimal.evaluation(method):
            assert minimal.resolve(x) == (1 if method == "sequential" else 0)
            results[method] = outputs_and_grads(run, leaves)
    for method in ("sequential", "auto"):
        got, want = results[method], results["native"]
        assert_all_close(got[0] + got[1], want[0] + want[1], F64, f"{mode}/{method}")


needs_native = pytest.mark.skipif(
    engine.native.load() is None, reason="the native engine is not built here"
)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("kind", [0, 1])
def test_native_op_chunks_strides_and_bias_sums(kind, dtype):
    """The op itself: any number of time chunks (1 = the sequential loop; T = one step each)
    gives the same h, dxw, dh0 and Σ db; an expanded ∂L/∂y (stride 0) is read in place and
    equals its dense copy; db sums to Σ_t dxw; the automatic choice splits time only when
    more than 2 threads share too few columns."""
    ops = engine.native.load()
    torch.manual_seed(7)
    T, B, H = 23, 3, 5
    G = 2 + kind
    xw = torch.randn(T, B, G * H, dtype=dtype) * 2
    bias = torch.randn(G * H, dtype=dtype)
    h0, ghn = torch.randn(B, H, dtype=dtype), torch.randn(B, H, dtype=dtype)
    lengths = torch.tensor([23, 6, 14])
    c = torch.randn(T, B, H, dtype=dtype)
    h1 = ops.minimal_forward(kind, xw, bias, h0, lengths, 1)
    dxw1, dh01, db1 = ops.minimal_backward(kind, xw, bias, h1, h0, c, ghn, lengths, 1)
    assert db1.shape == (1, B, G * H)
    assert_close(db1.sum((0, 1)), dxw1.sum((0, 1)), dtype, "db = Σ dxw")
    # against the op without bias on xw + bias (the bias enters as part of the pre-activation)
    h_nb = ops.minimal_forward(kind, xw + bias, None, h0, lengths, 1)
    assert_close(h_nb, h1, dtype, "bias in the op")
    for K in (2, 5, T):
        h = ops.minimal_forward(kind, xw, bias, h0, lengths, K)
        dxw, dh0, db = ops.minimal_backward(kind, xw, bias, h, h0, c, ghn, lengths, K)
        assert db.shape == (K, B, G * H)
        for name, got, want in (("h", h, h1), ("dxw", dxw, dxw1), ("dh0", dh0, dh01)):
            assert_close(got, want, dtype, f"{name}, {K} chunks")
        assert_close(db.sum((0, 1)), db1.sum((0, 1)), dtype, f"db, {K} chunks")
    expanded = torch.full((1, 1, 1), 0.7, dtype=dtype).expand(T, B, H)
    for K in (1, 4):
        got = ops.minimal_backward(kind, xw, bias, h1, h0, expanded, ghn, lengths, K)
        want = ops.minimal_backward(kind, xw, bias, h1, h0, expanded.contiguous(), ghn, lengths, K)
        for a, b in zip(got, want, strict=True):
            assert_close(a, b, dtype, f"expanded c, {K} chunks")
    threads = torch.get_num_threads()
    try:
        for P, want_k in ((2, 1), (4, 1), (4, 4)):
            torch.set_num_threads(P)
            rows = B if want_k > 1 else 128  # B·H = 15 columns: too few for 4 threads
            x = torch.randn(64, rows, G * H, dtype=dtype)  # T >= 16 per chunk
            s0, gn = torch.zeros(rows, H, dtype=dtype), torch.zeros(rows, H, dtype=dtype)
            hh = ops.minimal_forward(kind, x, None, s0, None, 0)
            assert_close(hh, ops.minimal_forward(kind, x, None, s0, None, 1), dtype, "auto")
            _, _, db = ops.minimal_backward(kind, x, None, hh, s0, hh, gn, None, 0)
            assert db.shape[0] == min(want_k, torch.get_num_threads()), (P, rows, db.shape)
    finally:
        torch.set_num_threads(threads)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_native_projection_reuses_only_free_buffers(dtype):
    """minimal_project(x, w) = x wᵀ (against a float64 matmul), also for a non-contiguous x;
    its pooled buffer is handed out again only once nothing else holds it: a result still
    held keeps its values through later calls, and bad arguments name themselves."""
    ops = engine.native.load()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(9, 4, 6, generator=g, dtype=dtype)
    w = torch.randn(10, 6, generator=g, dtype=dtype)
    want = (x.double() @ w.double().T).to(dtype)
    held = ops.minimal_project(x, w)
    assert_close(held, want, dtype, "x wᵀ")
    kept = held.clone()
    for _ in range(3):  # later calls of the same size must not write into `held`
        other = ops.minimal_project(x * 2, w)
        assert other.data_ptr() != held.data_ptr()
        assert_close(other, 2 * want, dtype, "2x wᵀ")
    assert torch.equal(held, kept)
    xt = torch.randn(4, 9, 6, generator=g, dtype=dtype).transpose(0, 1)  # (9, 4, 6), strided
    assert_close(ops.minimal_project(xt, w), (xt.double() @ w.double().T).to(dtype), dtype, "xt")
    with pytest.raises(RuntimeError, match=r"minimal_project: w: expected shape \(N, 6\)"):
        ops.minimal_project(x, w[:, :5])
    with pytest.raises(RuntimeError, match="minimal_project: x: expected a CPU"):
        ops.minimal_project(x[0], w)
    with pytest.raises(RuntimeError, match="minimal_project: w: expected a CPU"):
        ops.minimal_project(x, w.to(torch.float32 if dtype == F64 else F64))


_ISA_SCRIPT = """
import sys, torch
from seqlab.engine import native


def outputs():
    ops = native.load()
    torch.manual_seed(8)
    out = {"isa": ops.minimal_isa()}
    for kind in (0, 1):
        for dtype in (torch.float32, torch.float64):
            xw = torch.randn(37, 3, (2 + kind) * 21, dtype=dtype) * 3
            bias = torch.randn((2 + kind) * 21, dtype=dtype)
            h0, c = torch.randn(3, 21, dtype=dtype), torch.randn(37, 3, 21, dtype=dtype)
            lengths = torch.tensor([37, 5, 20])
            h = ops.minimal_forward(kind, xw, bias, h0, lengths, 1)
            grads = ops.minimal_backward(kind, xw, bias, h, h0, c, h0, lengths, 1)
            out[(kind, str(dtype))] = [h, *grads]
    return out


if __name__ == "__main__":
    torch.save(outputs(), sys.argv[1])
"""


@needs_native
def test_avx512_row_kernels_equal_avx2(tmp_path):
    """Where the AVX-512 copy of the row kernels runs, it equals the AVX2 copy (forced by
    SEQLAB_MINIMAL_ISA=avx2 in a second process) in every output of both ops."""
    if engine.native.load().minimal_isa() != "avx512":
        pytest.skip("this CPU runs the AVX2 (or baseline) row kernels only")
    import os
    import subprocess
    import sys

    script = {"__name__": "isa_check"}
    exec(_ISA_SCRIPT, script)
    got = script["outputs"]()
    path = tmp_path / "avx2.pt"
    env = dict(os.environ, SEQLAB_MINIMAL_ISA="avx2")
    subprocess.run([sys.executable, "-c", _ISA_SCRIPT, str(path)], env=env, check=True)
    want = torch.load(path)
    assert (got.pop("isa"), want.pop("isa")) == ("avx512", "avx2+fma")
    assert got.keys() == want.keys()
    for key, tensors in got.items():
        for k, (a, b) in enumerate(zip(tensors, want[key], strict=True)):
            assert_close(a, b, a.dtype, f"{key}: output {k}")


def test_cell_recurrent_trace_and_models():
    torch.manual_seed(5)
    for mode in MODES:
        cell = Cell(mode, 3, 4).double()
        assert [n for n, _ in cell.named_parameters()] == ["weight_ih", "bias_ih"]
        x = torch.randn(5, 2, 3, dtype=F64)
        h0 = torch.randn(2, 4, dtype=F64)
        want, h_want = hand_loop(mode, x, h0, cell.weight_ih, cell.bias_ih)
        out, h = seqlab.Recurrent(cell)(x, h0)
        assert_close(out, want, F64, f"{mode} Recurrent")
        assert_close(h, h_want, F64, f"{mode} final h")
        y1, s1 = cell.step(x[0], h0)
        assert_close(y1, want[0], F64, f"{mode} one step")
        assert_close(cell(x[0], h0), want[0], F64, f"{mode} torch-style call returns h")
        layer = seqlab.RecurrentLayer(mode, 3, 4).double()
        out, _, (tr,) = layer(x, trace=True)
        assert set(tr) == set(layer.spec.trace)
        if mode == "mingru":  # h = (1 − z) h_prev + z n, recorded per step
            prev = torch.cat([torch.zeros_like(out[:1]), out[:-1]])
            assert_close((1 - tr["z"]) * prev + tr["z"] * tr["n"], out, F64, "trace")
        else:
            assert_close(tr["f"] + tr["i"], torch.ones_like(out), F64, "f' + i' = 1")
        config = LanguageModelConfig(vocab_size=7, embed_size=3, hidden_size=4, cell=mode)
        lm = LanguageModel(config)
        logits, state = lm(torch.randint(0, 7, (2, 5)))
        assert logits.shape == (2, 5, 7) and state.shape == (1, 2, 4)


def test_forget_bias_bias_false_and_bad_method():
    layer = seqlab.RecurrentLayer("minlstm", 3, 4, forget_bias=2.0)
    assert (layer.bias_ih_l0[:4] == 2.0).all()
    no_bias = seqlab.RecurrentLayer("mingru", 3, 4, bias=False)
    assert [n for n, _ in no_bias.named_parameters()] == ["weight_ih_l0"]
    with pytest.raises(ValueError, match="forget_bias"):
        seqlab.RecurrentLayer("mingru", 3, 4, forget_bias=1.0)
    with pytest.raises(ValueError, match="method"), minimal.evaluation("parallel"):
        pass
    with pytest.raises(ValueError, match="chunks"), minimal.evaluation("scan", chunks=0):
        pass
