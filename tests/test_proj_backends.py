"""The projected LSTM (``proj_size``) on every backend: native (``csrc/proj_cells.h``), fused
(:mod:`seqlab.engine.fused_proj`), torch (``torch._VF.lstm``) and the reference loop.

Oracles: torch.nn.LSTM with copied weights (outputs, final (h, c) and every gradient, float64,
over full batches, ``lengths=`` and packed input, 1-2 layers, both directions, batch_first),
the reference loop for what torch.nn cannot take (rows of length 0, bias=False with lengths,
reversed single layers), float64 gradcheck of each kernel, float32 closeness at sizes that
take the packed/panel products. Spies make a silent fallback to another kernel fail.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import seqlab
from helpers import assert_close
from seqlab import engine
from seqlab.engine import fused_proj, native, native_proj, torch_ops
from seqlab.engine.proj import run_proj

F64 = torch.float64
HAS_NATIVE = native.load() is not None
BACKENDS = ["native", "fused", "torch", "reference"]
KERNELS = {"native": native_proj.KERNEL, "fused": fused_proj.KERNEL}


def _needs(backend):
    if backend == "native" and not HAS_NATIVE:
        pytest.skip("native backend unavailable")


@pytest.fixture
def threads(request):
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


@pytest.fixture
def spy(monkeypatch):
    """Calls per backend: the proj kernels' forward/backward and the torch backend's run."""
    calls = {"native": 0, "fused": 0, "native.backward": 0, "fused.backward": 0, "torch": 0}
    for name, kernel in KERNELS.items():
        for fn in ("forward", "backward"):
            original = getattr(kernel, fn)
            key = name if fn == "forward" else f"{name}.backward"

            def counted(*args, _key=key, _original=original, **kwargs):
                calls[_key] += 1
                return _original(*args, **kwargs)

            monkeypatch.setattr(kernel, fn, counted)
    real = torch_ops.run
    monkeypatch.setattr(
        torch_ops,
        "run",
        lambda *a, **k: calls.__setitem__("torch", calls["torch"] + 1) or real(*a, **k),
    )
    return calls


def _twins(backend, I, H, P, layers, bidirectional, batch_first, bias=True, dtype=F64):  # noqa: E741
    kw = dict(bidirectional=bidirectional, batch_first=batch_first, bias=bias, dtype=dtype)
    ref = nn.LSTM(I, H, layers, proj_size=P, **kw)
    ours = seqlab.LSTM(I, H, layers, proj_size=P, backend=backend, **kw)
    ours.load_state_dict(ref.state_dict())
    return ours, ref


def _outputs_and_grads(module, x, state, lengths, packed, batch_first, T):
    """(y padded, h_n, c_n) and the gradients of a weighted loss w.r.t. x, h0, c0 and every
    parameter (by name, sorted)."""
    if packed:
        inp = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
        y, (h, c) = module(inp, state)
        y, _ = pad_packed_sequence(y, batch_first=batch_first, total_length=T)
    elif lengths is not None:
        y, (h, c) = module(x, state, lengths=lengths)
    else:
        y, (h, c) = module(x, state)
    g = torch.Generator().manual_seed(5)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in (y, h, c))
    names = sorted(n for n, _ in module.named_parameters())
    params = dict(module.named_parameters())
    leaves = [x, *state] + [params[n] for n in names]
    grads = torch.autograd.grad(loss, leaves)
    return [y, h, c], dict(zip(["dx", "dh0", "dc0", *names], grads, strict=True))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_equals_torch_nn(backend, layers, bidirectional, batch_first, spy):
    """Every backend = torch.nn in float64: full batch, ``lengths=`` and packed input."""
    _needs(backend)
    T, B, I, H, P = 7, 5, 4, 9, 3  # noqa: E741
    D = 2 if bidirectional else 1
    ours, ref = _twins(backend, I, H, P, layers, bidirectional, batch_first)
    lengths = torch.tensor([7, 3, 1, 5, 7])
    for case in ("full", "lengths", "packed"):
        shape = (B, T, I) if batch_first else (T, B, I)
        x = torch.randn(shape, dtype=F64, requires_grad=True)
        state = (
            torch.randn(layers * D, B, P, dtype=F64, requires_grad=True),
            torch.randn(layers * D, B, H, dtype=F64, requires_grad=True),
        )
        lens = None if case == "full" else lengths
        want, want_g = _outputs_and_grads(ref, x, state, lengths if lens is not None else None,
                                          lens is not None, batch_first, T)  # fmt: skip
        got, got_g = _outputs_and_grads(ours, x, state, lens, case == "packed", batch_first, T)
        for name, a, b in zip(("y", "h_n", "c_n"), got, want, strict=True):
            assert_close(a, b, F64, f"{name} ({case})")
        assert got_g.keys() == want_g.keys()
        assert any(k.startswith("weight_hr") for k in got_g)
        for name in want_g:
            assert_close(got_g[name], want_g[name], F64, f"{name} ({case})")
    runs = 3 * layers * D  # one kernel call per (layer, direction) and case
    if backend in KERNELS:
        assert spy[backend] == runs and spy[f"{backend}.backward"] == runs
    elif backend == "torch":
        assert spy["torch"] == runs
    else:
        assert spy["native"] == spy["fused"] == spy["torch"] == 0


def _inputs(T, B, I, H, P, dtype, bias=True, seed=0, scale=0.5):  # noqa: E741
    g = torch.Generator().manual_seed(seed)
    w_scale = scale

    def rand(*shape, scale=w_scale):
        return (torch.randn(*shape, generator=g, dtype=F64) * scale).to(dtype).requires_grad_()

    x = rand(T, B, I, scale=1.0)
    state = (rand(B, P), rand(B, H))
    b = (rand(4 * H), rand(4 * H)) if bias else (None, None)
    params = (rand(4 * H, I), rand(4 * H, P), *b, rand(P, H))
    return x, state, params


def _run_with_grads(backend, inputs, lengths, reverse, weighted=True):
    x, state, params = inputs
    y, (h, c) = run_proj(x, state, params, lengths, reverse, backend=backend)
    if weighted:
        w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
        loss = (y * w).sum() + (h * h).sum() + (c * c).sum()
    else:  # y.sum(): the output gradient reaches the kernel as a stride-0 tensor
        loss = y.sum()
    leaves = [x, *state, *[p for p in params if p is not None]]
    return [y, h, c, *torch.autograd.grad(loss, leaves)]


@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("backend", ["native", "fused", "torch"])
def test_kernels_equal_reference_loop(backend, dtype, threads, spy):
    """Against the reference loop (the oracle for what torch.nn cannot take): a row of
    length 0 (state carried, outputs 0), both directions, bias or not. Sizes: with 2 threads
    the native step (5·B·H·P ≥ 64 Ki multiply-adds) splits into a team of two shards, of 24
    and 20 cell units and 12 and 13 projected columns."""
    _needs(backend)
    T, B, I, H, P = 6, 13, 5, 44, 25  # noqa: E741
    lengths = torch.tensor([6, 0, 3, 6, 1, 5, 2, 6, 4, 3, 5, 2, 6])
    seed = 0
    for bias in (True, False):
        for lens in (None, lengths):
            for reverse in (False, True):
                seed += 1
                inputs = _inputs(T, B, I, H, P, dtype, bias, seed, scale=0.15)  # ~ 1/√H
                want = _run_with_grads("reference", inputs, lens, reverse)
                got = _run_with_grads(backend, inputs, lens, reverse)
                what = f"bias={bias} lengths={lens is not None} reverse={reverse}"
                for k, (a, b) in enumerate(zip(got, want, strict=True)):
                    assert_close(a, b, dtype, f"output/grad {k} ({what})")
    assert spy[backend] == 8


@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("backend", ["native", "fused"])
def test_float32_larger_products_and_broadcast_gradient(backend, threads, spy):
    """float32 = torch.nn at sizes whose per-step products take the panel kernel (H=160,
    P=64) and MKL's packed GEMM (H=300, P=100); a y.sum() loss (stride-0 output gradient).
    Weights ~ N(0, 0.1²) as an initialised layer's: larger ones make the recurrence amplify
    float32 rounding (every implementation, torch's included, is then ~5e-5 off float64)."""
    _needs(backend)
    T, B, I = 5, 40, 8  # noqa: E741
    for H, P in ((160, 64), (300, 100)):
        inputs = _inputs(T, B, I, H, P, torch.float32, seed=H, scale=0.1)
        lengths = torch.randint(1, T + 1, (B,), generator=torch.Generator().manual_seed(1))
        for lens, weighted in ((lengths, True), (None, False)):
            want = _run_with_grads("torch", inputs, lens, True, weighted)
            got = _run_with_grads(backend, inputs, lens, True, weighted)
            for k, (a, b) in enumerate(zip(got, want, strict=True)):
                assert_close(a, b, torch.float32, f"output/grad {k} (H={H}, sum={not weighted})")
    assert spy[backend] == 4 and spy[f"{backend}.backward"] == 4


@pytest.mark.parametrize("backend", ["native", "fused", "torch"])
def test_gradcheck(backend, spy):
    """float64 gradcheck of each kernel's hand-derived backward (lengths with a 0, both
    directions, bias and none)."""
    _needs(backend)
    T, B, I, H, P = 4, 3, 2, 3, 2  # noqa: E741
    lengths = torch.tensor([4, 0, 2])
    for bias, lens, reverse in ((True, lengths, False), (False, lengths, True), (True, None, True)):
        x, state, params = _inputs(T, B, I, H, P, F64, bias, seed=9)
        present = [p for p in params if p is not None]

        def fn(x, h0, c0, *ps, _bias=bias, _lens=lens, _reverse=reverse):
            full = list(ps[:2]) + (list(ps[2:4]) if _bias else [None, None]) + [ps[-1]]
            y, (h, c) = run_proj(x, (h0, c0), full, _lens, _reverse, backend=backend)
            return y, h, c

        assert torch.autograd.gradcheck(fn, (x, *state, *present))
    assert spy[backend] > 0


def test_double_backward_native():
    """create_graph=True: the gradients are differentiable (recomputed by the reference loop)."""
    _needs("native")
    x, state, params = _inputs(3, 2, 2, 3, 2, F64, seed=4)

    def fn(x, h0, c0, *ps):
        y, (h, c) = run_proj(x, (h0, c0), ps, torch.tensor([3, 2]), False, backend="native")
        return y, h, c

    assert torch.autograd.gradgradcheck(fn, (x, *state, *params))


@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("backend", ["native", "fused"])
def test_no_grad_forward(backend, threads, spy):
    _needs(backend)
    x, state, params = _inputs(7, 13, 5, 44, 25, torch.float32, seed=3, scale=0.15)
    lengths = torch.randint(1, 8, (13,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for reverse in (False, True):
            want = run_proj(x, state, params, lengths, reverse, backend="reference")
            got = run_proj(x, state, params, lengths, reverse, backend=backend)
            for k, (a, b) in enumerate(zip([got[0], *got[1]], [want[0], *want[1]], strict=True)):
                assert_close(a, b, torch.float32, f"output {k} (reverse={reverse})")
    assert spy[backend] == 2 and spy[f"{backend}.backward"] == 0


def test_default_backend_runs_the_native_kernel(spy):
    """A plain ``seqlab.LSTM(..., proj_size=P)`` runs on the native kernel when it is built."""
    _needs("native")
    assert engine.resolve_backend(None) == "native"
    model = seqlab.LSTM(4, 8, 2, proj_size=3, bidirectional=True)
    model(torch.randn(5, 2, 4))[0].sum().backward()
    assert spy["native"] == 4 and spy["native.backward"] == 4 and spy["fused"] == 0


def test_native_unavailable_falls_back_to_fused(monkeypatch, spy):
    """Without the native library (or while Dynamo traces) the fused kernel runs."""
    monkeypatch.setattr(native_proj.KERNEL, "available", lambda: False)
    x, state, params = _inputs(5, 3, 4, 6, 2, F64, seed=2)
    want = run_proj(x, state, params, None, False, backend="reference")
    got = run_proj(x, state, params, None, False, backend="native" if HAS_NATIVE else None)
    assert_close(got[0], want[0], F64, "y")
    assert spy["fused"] == 1 and spy["native"] == 0


def test_run_proj_checks_its_arguments():
    x, state, params = _inputs(3, 2, 4, 6, 2, F64)
    with pytest.raises(ValueError, match=r"w_hr: expected shape \(2, 6\), got \(6, 2\)"):
        run_proj(x, state, (*params[:4], params[4].t()), None, False)
    with pytest.raises(ValueError, match=r"state.h: expected shape \(2, 2\), got \(3, 2\)"):
        run_proj(x, (torch.zeros(3, 2, dtype=F64), state[1]), params, None, False)
    with pytest.raises(TypeError, match="w_ih: expected dtype torch.float64"):
        run_proj(x, state, (params[0].float(), *params[1:]), None, False)


@pytest.mark.skipif(not HAS_NATIVE, reason="native backend unavailable")
def test_native_ops_check_their_arguments():
    """The ops are reachable directly: a wrong call is a RuntimeError naming the argument."""
    ops = native.load()
    x, (h0, c0), (w_ih, w_hh, b_ih, b_hh, w_hr) = [
        t.detach() if isinstance(t, torch.Tensor) else tuple(p.detach() for p in t)
        for t in _inputs(3, 2, 4, 6, 2, F64)
    ]
    with pytest.raises(RuntimeError, match=r"proj_forward: w_hr: expected shape \(2, 6\)"):
        ops.proj_forward(
            x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr.t().contiguous(), None, False, True
        )
    with pytest.raises(RuntimeError, match=r"proj_forward: w_hh: expected shape \(24, 2\)"):
        ops.proj_forward(x, h0, c0, w_ih, w_ih, b_ih, b_hh, w_hr, None, False, True)
    with pytest.raises(RuntimeError, match=r"lengths: expected values in \[0, 3\]"):
        ops.proj_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, torch.tensor([4, 1]), False, True)
    y, h, c, hbuf, cbuf, gates = ops.proj_forward(
        x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, None, False, True
    )
    gy = torch.zeros(3, 2, 6, dtype=F64)  # H wide where P belongs
    with pytest.raises(RuntimeError, match=r"proj_backward: gy: expected shape \(3, 2, 2\)"):
        ops.proj_backward(x, w_ih, w_hh, w_hr, True, True, None, False, hbuf, cbuf, gates, gy, h, c)


@pytest.mark.slow
def test_compiled_model_equals_eager():
    """torch.compile of a 2-layer bidirectional proj LSTM with lengths: outputs, final state
    and every gradient equal eager (Dynamo runs the fused kernel; minutes to compile here)."""
    model = seqlab.LSTM(4, 8, 2, proj_size=3, bidirectional=True)
    x = torch.randn(5, 2, 4, requires_grad=True)
    lengths = torch.tensor([5, 3])

    def run(fn):
        y, (h, c) = fn(x, lengths=lengths)
        loss = (y * y).sum() + h.sum() + c.sum()
        return [y, h, c, *torch.autograd.grad(loss, [x, *model.parameters()])]

    for a, b in zip(run(torch.compile(model)), run(model), strict=True):
        assert_close(a, b, torch.float32, "compiled vs eager")


@pytest.mark.skipif(not HAS_NATIVE, reason="native backend unavailable")
def test_native_ops_empty_sizes():
    """Direct calls with T = 0, B = 0 or H = 0 return correctly shaped results."""
    ops = native.load()
    for T, B, H, P in ((0, 2, 6, 2), (3, 0, 6, 2), (3, 2, 0, 0)):
        x = torch.randn(T, B, 4, dtype=F64)
        h0, c0 = torch.randn(B, P, dtype=F64), torch.randn(B, H, dtype=F64)
        w_ih, w_hh = torch.randn(4 * H, 4, dtype=F64), torch.randn(4 * H, P, dtype=F64)
        w_hr = torch.randn(P, H, dtype=F64)
        y, h, c, hbuf, cbuf, gates = ops.proj_forward(
            x, h0, c0, w_ih, w_hh, None, None, w_hr, None, False, True
        )
        assert y.shape == (T, B, P) and h.shape == (B, P) and c.shape == (B, H)
        if T == 0:
            assert torch.equal(h, h0) and torch.equal(c, c0)
        grads = ops.proj_backward(
            x, w_ih, w_hh, w_hr, False, False, None, False, hbuf, cbuf, gates,
            torch.ones_like(y), torch.ones_like(h), torch.ones_like(c),
        )  # fmt: skip
        assert [tuple(g.shape) for g in grads] == [
            (T, B, 4), (B, P), (B, H), (4 * H, 4), (4 * H, P), (0,), (0,), (P, H)
        ]  # fmt: skip


@pytest.mark.parametrize("threads", [1, 2], indirect=True)
def test_native_team_layer_equals_torch_nn(threads, spy):
    """The native layer at sizes whose steps split into a team of two (2 threads; uneven
    shards of 24/20 cell units and 12/13 projected columns) = torch.nn in float64: 2 layers,
    bidirectional, batch_first, packed and ``lengths=`` input."""
    _needs("native")
    T, B, I, H, P = 6, 13, 5, 44, 25  # noqa: E741
    ours, ref = _twins("native", I, H, P, 2, True, True)
    lengths = torch.tensor([6, 2, 3, 6, 1, 5, 2, 6, 4, 3, 5, 2, 6])
    for packed in (False, True):
        x = torch.randn(B, T, I, dtype=F64, requires_grad=True)
        state = (
            torch.randn(4, B, P, dtype=F64, requires_grad=True),
            torch.randn(4, B, H, dtype=F64, requires_grad=True),
        )
        want, want_g = _outputs_and_grads(ref, x, state, lengths, True, True, T)
        got, got_g = _outputs_and_grads(ours, x, state, lengths, packed, True, T)
        for name, a, b in zip(("y", "h_n", "c_n"), got, want, strict=True):
            assert_close(a, b, F64, f"{name} (packed={packed})")
        for name in want_g:
            assert_close(got_g[name], want_g[name], F64, f"{name} (packed={packed})")
    assert spy["native"] == 8 and spy["native.backward"] == 8
