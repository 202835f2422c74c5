"""The fused LayerNorm LSTM/GRU kernel (:mod:`seqlab.engine.fused_ln`) against the reference
loop (the oracle, itself checked against a hand loop in test_layernorm_cells.py): outputs,
final states and every gradient; float64 gradcheck through the kernel; the layer, cell and
``Recurrent`` paths use it."""

from __future__ import annotations

import itertools

import pytest
import torch

import seqlab
from helpers import assert_close
from seqlab import engine
from seqlab.cells import Cell
from seqlab.engine import fused_ln
from seqlab.functional import get_spec

F32, F64 = torch.float32, torch.float64
MODES = ("lnlstm", "lngru")


@pytest.fixture
def calls(monkeypatch):
    """Counts of the fused LayerNorm kernel's forward and backward calls, and of the
    engine's fallback to the reference loop (``reference``)."""
    seen = {"forward": 0, "backward": 0, "reference": 0}

    def reference(*args, _original=engine.reference_run):
        seen["reference"] += 1
        return _original(*args)

    monkeypatch.setattr(engine, "reference_run", reference)
    cls = fused_ln.LayerNormKernel
    for name in ("forward", "backward"):
        original = getattr(cls, name)

        def spy(self, *args, _original=original, _name=name):
            seen[_name] += 1
            return _original(self, *args)

        monkeypatch.setattr(cls, name, spy)
    return seen


def fused_by_default(mode: str) -> bool:
    """Whether the default backend runs this kind on the fused kernel (a kernel registered
    under the default backend's name, e.g. a native one, is preferred by the engine)."""
    name = engine.resolve_backend(None, torch.empty(0))
    spec = get_spec(mode)
    named = [k for k in engine.EXTRA_KERNELS if k.covers(spec) and k.name == name]
    return name != "reference" and (named or [fused_ln.KERNEL])[0] is fused_ln.KERNEL


def random_params(spec, I, H, bias, dtype):  # noqa: E741
    """Parameters away from their init (gains around 1, biases and shifts nonzero)."""
    shapes = spec.shapes(I, H, bias)
    out = {}
    for p in spec.params:
        if p.name not in shapes:
            out[p.name] = None
            continue
        t = 0.5 * torch.randn(shapes[p.name], dtype=dtype)
        out[p.name] = (t + 1 if p.role == "gain" else t).requires_grad_()
    return out


def run_and_grads(mode, backend, x, state, params, lengths, reverse):
    """Outputs, final state and the gradient of a random weighting of both w.r.t. every
    input (x, each state part, each present parameter)."""
    y, final = engine.run(mode, x, state, params, lengths, reverse, backend=backend)
    g = torch.Generator().manual_seed(7)
    # weights drawn in float64 and rounded, so float32 and float64 runs weigh alike
    loss = (y * torch.randn(y.shape, generator=g, dtype=F64).to(y.dtype)).sum()
    for f in final:
        loss = loss + (f * torch.randn(f.shape, generator=g, dtype=F64).to(f.dtype)).sum()
    leaves = [x, *state, *[p for p in params.values() if p is not None]]
    return [y, *final], list(torch.autograd.grad(loss, leaves))


CASES = list(itertools.product(MODES, (F32, F64), (True, False), (None, "some"), (False, True)))


@pytest.mark.parametrize("mode,dtype,bias,lengths,reverse", CASES)
def test_fused_and_default_equal_reference(mode, dtype, bias, lengths, reverse, calls):
    spec = get_spec(mode)
    T, B, I, H = 6, 4, 5, 7  # noqa: E741
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    state = [torch.randn(B, H, dtype=dtype, requires_grad=True) for _ in spec.state]
    params = random_params(spec, I, H, bias, dtype)
    # a full row, two cut rows and an empty one (the engine runs 0 as "no steps")
    lens = None if lengths is None else torch.tensor([6, 3, 1, 0])

    # the oracle: the reference loop in float64 on the same numbers (a float32 kernel is
    # held to 1e-5 of the exact result, not of another float32 rounding)
    def exact(t):
        return None if t is None else t.detach().double().requires_grad_()

    want_out, want_grads = run_and_grads(
        mode, "reference", exact(x), [exact(s) for s in state],
        {k: exact(v) for k, v in params.items()}, lens, reverse,
    )  # fmt: skip
    want_out = [w.to(dtype) for w in want_out]
    want_grads = [w.to(dtype) for w in want_grads]
    assert calls["forward"] == 0 and calls["reference"] == 1
    for backend in ("fused", None):
        before = dict(calls)
        out, grads = run_and_grads(mode, backend, x, state, params, lens, reverse)
        runs = 1 if backend == "fused" or fused_by_default(mode) else 0
        assert calls["forward"] == before["forward"] + runs, backend
        assert calls["backward"] == before["backward"] + runs, backend
        assert calls["reference"] == 1, backend  # a kernel ran, not the reference loop
        names = ["y", *spec.state, "x", *(f"d{n}" for n in spec.state)]
        names += [f"d{n}" for n, p in params.items() if p is not None]
        for name, a, b in zip(names, out + grads, want_out + want_grads, strict=True):
            assert_close(a, b, dtype, f"{backend}: {name}")
    with torch.no_grad():  # inference: the kernel saves nothing for a backward
        y, final = engine.run(mode, x, state, params, lens, reverse, backend="fused")
    for k, (a, b) in enumerate(zip([y, *final], want_out, strict=True)):
        assert_close(a, b, dtype, f"no_grad: output {k}")
    assert calls["forward"] == before["forward"] + 1 + runs
    if lens is not None:  # padding: outputs exactly 0, the empty row keeps its state
        assert torch.equal(out[0][3:, 1], torch.zeros(T - 3, H, dtype=dtype))
        assert torch.equal(out[1][3], state[0][3])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_through_the_fused_kernel(mode, bias, calls):
    spec = get_spec(mode)
    T, B, I, H = 3, 2, 2, 3  # noqa: E741
    params = random_params(spec, I, H, bias, F64)
    names = [n for n, p in params.items() if p is not None]
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    state = [torch.randn(B, H, dtype=F64, requires_grad=True) for _ in spec.state]
    lengths = torch.tensor([3, 2])

    def f(x, *rest):
        st, ps = rest[: len(state)], dict(zip(names, rest[len(state) :], strict=True))
        outs = []
        for reverse in (False, True):
            y, final = engine.run(mode, x, st, ps, lengths, reverse, backend="fused")
            outs += [y, *final]
        return tuple(outs)

    assert torch.autograd.gradcheck(f, (x, *state, *[params[n] for n in names]))
    assert calls["backward"] > 0  # the hand-derived backward, not the reference loop


def layer_case(mode, num_layers, bidirectional, backend, dtype, lengths, weights):
    layer = seqlab.RecurrentLayer(
        mode, 3, 5, num_layers=num_layers, bidirectional=bidirectional, backend=backend
    ).to(dtype)
    layer.load_state_dict(weights)
    D = 2 if bidirectional else 1
    g = torch.Generator().manual_seed(11)
    x = torch.randn(5, 3, 3, generator=g, dtype=dtype, requires_grad=True)
    parts = len(get_spec(mode).state)
    state = [
        torch.randn(num_layers * D, 3, 5, generator=g, dtype=dtype).requires_grad_()
        for _ in range(parts)
    ]
    out, final = layer(x, state[0] if parts == 1 else tuple(state), lengths=lengths)
    finals = [final] if parts == 1 else list(final)
    loss = (out * torch.randn(out.shape, generator=g, dtype=dtype)).sum()
    loss = loss + sum((f * torch.randn(f.shape, generator=g, dtype=dtype)).sum() for f in finals)
    leaves = [x, *state, *layer.parameters()]
    return [out, *finals], list(torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "num_layers,bidirectional,threads", [(1, True, 1), (2, False, 1), (2, True, 1), (2, True, 2)]
)
@pytest.mark.parametrize("dtype", [F32, F64])
def test_layers_equal_reference(mode, num_layers, bidirectional, dtype, threads, calls):
    torch.manual_seed(3)
    base = seqlab.RecurrentLayer(mode, 3, 5, num_layers=num_layers, bidirectional=bidirectional)
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.3 * torch.randn_like(p))
    weights = base.to(dtype).state_dict()
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for lengths in (None, torch.tensor([5, 2, 4])):
            args = (mode, num_layers, bidirectional)
            want_out, want_grads = layer_case(*args, "reference", dtype, lengths, weights)
            for backend in ("fused", None):
                out, grads = layer_case(*args, backend, dtype, lengths, weights)
                for k, (a, b) in enumerate(zip(out + grads, want_out + want_grads, strict=True)):
                    assert_close(a, b, dtype, f"{backend}, lengths {lengths}: tensor {k}")
    finally:
        torch.set_num_threads(old)
    passes = num_layers * (2 if bidirectional else 1)
    runs = 2 * passes * (2 if fused_by_default(mode) else 1)  # lengths × passes × backends
    assert calls["forward"] == runs and calls["backward"] == runs
    assert calls["reference"] == 2 * passes


@pytest.mark.parametrize("mode", MODES)
def test_cell_recurrent_and_compositions_use_the_kernel(mode, calls):
    """``Recurrent(Cell(mode))`` (forward and reverse), ``Bidirectional`` and ``Stacked`` of
    them run a kernel (the fused one unless the default backend has its own) and equal the
    layer on the reference loop with the same weights; one ``Cell`` step equals the layer's
    first step."""
    torch.manual_seed(5)
    ref = seqlab.RecurrentLayer(mode, 3, 4, num_layers=2, bidirectional=True, backend="reference")
    ref = ref.double()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.3 * torch.randn_like(p))

    cells = {}

    def cell_of(suffix, input_size):
        cell = Cell(mode, input_size, 4).double()
        with torch.no_grad():
            for p in cell.spec.params:
                getattr(cell, p.attr).copy_(getattr(ref, p.attr + suffix))
        cells[suffix] = cell
        return cell

    module = seqlab.Stacked(
        [
            seqlab.Bidirectional(
                seqlab.Recurrent(cell_of(f"_l{k}", 3 if k == 0 else 8)),
                seqlab.Recurrent(cell_of(f"_l{k}_reverse", 3 if k == 0 else 8), reverse=True),
            )
            for k in range(2)
        ]
    )
    x = torch.randn(6, 2, 3, dtype=F64, requires_grad=True)
    lengths = torch.tensor([6, 4])
    weight = torch.randn(6, 2, 8, dtype=F64)
    out, _ = module(x, lengths=lengths)
    (out * weight).sum().backward()
    dx, x.grad = x.grad, None
    want, _ = ref(x, lengths=lengths)
    (want * weight).sum().backward()
    assert_close(out, want, F64, "Stacked(Bidirectional(Recurrent(Cell)))")
    assert_close(dx, x.grad, F64, "dx")
    for suffix, cell in cells.items():
        for p in cell.spec.params:
            got, expected = getattr(cell, p.attr).grad, getattr(ref, p.attr + suffix).grad
            assert_close(got, expected, F64, f"d{p.attr}{suffix}")
    used = 4 if fused_by_default(mode) else 0
    assert calls["forward"] == used and calls["backward"] == used
    assert calls["reference"] == 4  # the layer on the reference backend, two layers × two ways

    single = seqlab.RecurrentLayer(mode, 3, 4, backend="reference").double()
    cell = cell_of("_l0", 3)
    for p in cell.spec.params:
        setattr(single, p.attr + "_l0", getattr(cell, p.attr))
    y_cell, _ = seqlab.Recurrent(cell)(x)
    y_ref, _ = single(x)
    assert_close(y_cell, y_ref, F64, "Recurrent(Cell)")
    y1, _ = cell.step(x[0], None)
    assert_close(y1, y_ref[0], F64, "one Cell step")
    assert calls["forward"] == used + used // 4
    assert calls["reference"] == 5


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("I,H", [(3, 0), (0, 3)])  # noqa: E741
def test_zero_sizes_as_the_reference(mode, I, H, calls):  # noqa: E741
    """Cells take zero sizes (as torch.nn's); the kernel agrees with the reference loop."""
    cell = Cell(mode, I, H).double()
    x = torch.randn(4, 2, I, dtype=F64, requires_grad=True)
    state = [torch.randn(2, H, dtype=F64, requires_grad=True) for _ in cell.spec.state]
    params = cell.params()
    got = run_and_grads(mode, "fused", x, state, params, torch.tensor([4, 2]), False)
    want = run_and_grads(mode, "reference", x, state, params, torch.tensor([4, 2]), False)
    for k, (a, b) in enumerate(zip(got[0] + got[1], want[0] + want[1], strict=True)):
        assert_close(a, b, F64, f"tensor {k}")
    assert calls["forward"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_double_backward_matches_reference(mode, calls):
    """``create_graph=True`` through the kernel gives differentiable gradients (the engine
    re-runs the reference loop for them): second derivatives equal the reference's."""
    spec = get_spec(mode)
    params = random_params(spec, 3, 4, True, F64)
    x = torch.randn(4, 2, 3, dtype=F64, requires_grad=True)
    state = [torch.randn(2, 4, dtype=F64) for _ in spec.state]
    lengths = torch.tensor([4, 3])
    results = []
    for backend in ("reference", "fused"):
        y, _ = engine.run(mode, x, state, params, lengths, True, backend=backend)
        (gx,) = torch.autograd.grad((y * y).sum(), x, create_graph=True)
        results.append(
            torch.autograd.grad(
                (gx * gx).sum(), [x, params["w_hh"], params["g_c" if mode == "lnlstm" else "g_hh"]]
            )
        )
    for k, (a, b) in enumerate(zip(*results, strict=True)):
        assert_close(a, b, F64, f"second derivative {k}")
    assert calls["forward"] == 1
