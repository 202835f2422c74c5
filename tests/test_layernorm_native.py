"""The native LayerNorm LSTM/GRU kernel (``csrc/layernorm_cells.h``) against the reference loop
(``backend="reference"``: the descriptions' step equations under autograd): outputs, final
states and every gradient, over lengths, both directions, bias or not, float32/float64 and 1 or
2 threads (sizes chosen so that 2 threads split each step into two uneven shards of units, or
into uneven halves of the batch rows: both team layouts are forced with SEQLAB_LN_SPLIT);
layers with 2 layers and both directions; float64 gradcheck of ``engine.run(backend="native")``.
"""

from __future__ import annotations

import pytest
import torch

import seqlab
from helpers import assert_close
from seqlab import engine
from seqlab.engine import native, native_ln
from seqlab.functional import get_spec

pytestmark = pytest.mark.skipif(native.load() is None, reason="native backend unavailable")

F64 = torch.float64
MODES = ["lnlstm", "lngru"]


def make_inputs(mode, T, B, I, H, dtype, bias=True, seed=0):  # noqa: E741
    """x, state parts and parameters (spec order; None for an absent bias), all leaves."""
    spec = get_spec(mode)
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, shift=0.0):
        t = torch.randn(*shape, generator=g, dtype=F64) * scale + shift
        return t.to(dtype).requires_grad_(True)

    x = rand(T, B, I)
    state = tuple(rand(B, H, scale=0.5) for _ in spec.state)
    params = []
    for p in spec.params:
        if p.bias and not bias:
            params.append(None)
        elif p.role == "gain":  # gains near 1, as initialised, but not all equal
            params.append(rand(*p.shape(spec.G, I, H), scale=0.3, shift=1.0))
        else:
            params.append(rand(*p.shape(spec.G, I, H), scale=0.3))
    return x, state, params


def run_and_grads(backend, mode, inputs, lengths, reverse, weighted=True):
    """(y, *final, *grads of x, the state parts and every present parameter)."""
    x, state, params = inputs
    y, final = engine.run(mode, x, state, params, lengths, reverse, backend=backend)
    if weighted:  # a loss that weighs every output and final state differently
        w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
        loss = (y * w).sum() + sum((f * f).sum() for f in final)
    else:  # y.sum(): its gradient is a broadcast (stride-0) tensor
        loss = y.sum()
    leaves = [x, *state, *[p for p in params if p is not None]]
    return [y, *final], list(torch.autograd.grad(loss, leaves))


def as_f64(inputs):
    """The same values as float64 leaves (an oracle free of float32 rounding)."""
    x, state, params = inputs

    def leaf(t):
        return None if t is None else t.detach().to(F64).requires_grad_(True)

    return leaf(x), tuple(leaf(s) for s in state), [leaf(p) for p in params]


def compare(mode, inputs, lengths, reverse, dtype, what, weighted=True, oracle_f64=False):
    """native vs the reference loop (in float64 on the same values with ``oracle_f64``)."""
    ref_inputs = as_f64(inputs) if oracle_f64 else inputs
    want_out, want_grads = run_and_grads("reference", mode, ref_inputs, lengths, reverse, weighted)
    got_out, got_grads = run_and_grads("native", mode, inputs, lengths, reverse, weighted)
    spec = get_spec(mode)
    names = ["y", *spec.state, "dx", *(f"d{s}0" for s in spec.state)]
    names += [f"d{p.name}" for p, t in zip(spec.params, inputs[2], strict=True) if t is not None]
    pairs = zip(got_out + got_grads, want_out + want_grads, strict=True)
    for name, (a, b) in zip(names, pairs, strict=True):
        assert_close(a, b, dtype, f"{name} ({what})")


# 1 thread, or a team of 2 that splits the batch rows or the hidden units of each step (and,
# for two tests, 3 threads over rows: more threads than this 2-core CI machine has cores)
TEAMS = [1, "2-rows", "2-units"]
TEAMS3 = [*TEAMS, "3-rows"]


@pytest.fixture
def threads(request, monkeypatch):
    n, _, split = str(request.param).partition("-")
    if split:
        monkeypatch.setenv("SEQLAB_LN_SPLIT", split)
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    yield request.param
    torch.set_num_threads(previous)


@pytest.fixture
def spy(monkeypatch):
    """Counts the native LN kernel's forward and backward calls (so a silent fallback to
    another kernel fails the tests)."""
    calls = {"forward": 0, "backward": 0}
    kernel = native_ln.KERNEL
    for name in calls:
        original = getattr(kernel, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(kernel, name, counted)
    return calls


@pytest.mark.parametrize(
    "threads,B,H,want",
    [
        (1, 32, 128, 1),  # one thread: no team
        (2, 32, 128, 2),  # C1: rows
        (2, 2, 256, 1),  # one row per thread with a 1 MB W_hh: units
        (2, 2, 128, 2),  # ... with a 256 KB W_hh: rows
        ("2-units", 32, 128, 1),
        ("2-rows", 2, 256, 2),
        ("2-rows", 13, 44, 2),  # the sizes below
        ("2-units", 13, 44, 1),
        ("3-rows", 13, 44, 3),
        (3, 32, 128, 3),
        (3, 4, 256, 2),  # 2 rows per thread at the most (W_hh 1 MB): 2 threads
        (2, 32, 512, 1),  # W_hh 4 MB: 32 rows per thread needed
        (2, 64, 512, 2),
        (2, 128, 512, 2),  # C3
    ],
    indirect=["threads"],
)
def test_team_layout(threads, B, H, want):
    """Which team the loops use (the tests below force each with SEQLAB_LN_SPLIT)."""
    assert torch.ops.seqlab_engine.ln_row_team_size(B, 4, H, 4) == want


@pytest.mark.parametrize("threads", TEAMS3, indirect=True)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("mode", MODES)
def test_matches_reference_over_the_product(mode, dtype, threads, spy):
    """T=6, B=13, H=44: with 2 threads each step splits into shards of 24 and 20 units, or
    into 6 and 7 batch rows (3 threads: 4, 4, 5); one row has no steps (length 0: state
    carried, outputs zero)."""
    T, B, I, H = 6, 13, 5, 44  # noqa: E741
    lengths = torch.tensor([6, 1, 3, 6, 2, 5, 4, 6, 0, 3, 5, 2, 6])  # 0: the engine runs it
    seed = 0
    for bias in (True, False):
        for lens in (None, lengths):
            for reverse in (False, True):
                seed += 1
                inputs = make_inputs(mode, T, B, I, H, dtype, bias, seed)
                what = f"bias={bias}, lengths={lens is not None}, reverse={reverse}"
                compare(mode, inputs, lens, reverse, dtype, what)
    assert spy["forward"] == 8 and spy["backward"] == 8


@pytest.mark.parametrize("threads", TEAMS, indirect=True)
@pytest.mark.parametrize("mode", MODES)
def test_larger_step_products_and_broadcast_output_gradient(mode, threads, spy):
    """H=160, B=40: per-step products beyond the panel kernel's size (MKL's packed GEMM on one
    thread) and a y.sum() loss, whose gradient reaches the kernel as a stride-0 tensor."""
    T, B, I, H = 4, 40, 8, 160  # noqa: E741
    inputs = make_inputs(mode, T, B, I, H, torch.float32, seed=7)
    lengths = torch.randint(1, T + 1, (B,), generator=torch.Generator().manual_seed(1))
    compare(mode, inputs, lengths, True, torch.float32, "weighted")
    compare(mode, inputs, None, False, torch.float32, "y.sum()", weighted=False)
    assert spy["backward"] == 2


@pytest.mark.parametrize("threads", TEAMS3, indirect=True)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("mode", MODES)
def test_input_side_chunks_match_reference(mode, dtype, threads, spy):
    """The loops run the input side (projection and LN; LN backward, dx, dW_ih, dW_hh) by
    chunks of ~1 MB of G·H-wide rows, split over the team's shards: at H=96, B=100 a chunk
    is 3-9 steps (by mode and dtype), so T=14 crosses chunk boundaries, and with 2 threads the
    chunks' rows split unevenly; lengths, both directions, no-grad forward too. The oracle is
    the reference loop in float64 on the same values (the float32 reference loop's own
    rounding grows with T past the float32 tolerance)."""
    T, B, I, H = 14, 100, 8, 96  # noqa: E741
    lengths = torch.randint(0, T + 1, (B,), generator=torch.Generator().manual_seed(3))
    inputs = make_inputs(mode, T, B, I, H, dtype, True, seed=31)
    for lens, reverse in ((lengths, False), (lengths, True), (None, False)):
        what = f"lengths={lens is not None} {reverse=}"
        compare(mode, inputs, lens, reverse, dtype, what, oracle_f64=True)
    x, state, params = inputs
    with torch.no_grad():
        x64, state64, params64 = as_f64(inputs)
        want = engine.run(mode, x64, state64, params64, lengths, True, backend="reference")
        got = engine.run(mode, x, state, params, lengths, True, backend="native")
    for k, (a, b) in enumerate(zip([got[0], *got[1]], [want[0], *want[1]], strict=True)):
        assert_close(a, b, dtype, f"no-grad output {k}")
    assert spy["forward"] == 4 and spy["backward"] == 3


@pytest.mark.parametrize("threads", TEAMS, indirect=True)
@pytest.mark.parametrize("mode", MODES)
def test_no_grad_forward_matches_reference(mode, threads, spy):
    T, B, I, H = 7, 13, 5, 44  # noqa: E741
    x, state, params = make_inputs(mode, T, B, I, H, torch.float32, seed=3)
    lengths = torch.randint(1, T + 1, (B,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for reverse in (False, True):
            want = engine.run(mode, x, state, params, lengths, reverse, backend="reference")
            got = engine.run(mode, x, state, params, lengths, reverse, backend="native")
            for k, (a, b) in enumerate(zip([got[0], *got[1]], [want[0], *want[1]], strict=True)):
                assert_close(a, b, torch.float32, f"output {k} (reverse={reverse})")
    assert spy["forward"] == 2 and spy["backward"] == 0


@pytest.mark.parametrize("threads", TEAMS, indirect=True)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("mode", MODES)
def test_two_layer_bidirectional_layer_matches_reference(mode, dtype, threads, spy):
    """seqlab.RecurrentLayer(num_layers=2, bidirectional=True) with lengths, native vs
    reference with the same weights: outputs, final states, dx and every parameter's grad."""
    torch.manual_seed(0)
    T, B, I, H = 5, 11, 6, 48  # noqa: E741
    layers = {
        b: seqlab.RecurrentLayer(mode, I, H, num_layers=2, bidirectional=True, backend=b)
        for b in ("native", "reference")
    }
    for layer in layers.values():
        layer.to(dtype)
    with torch.no_grad():
        for p in layers["native"].parameters():
            p.add_(torch.randn_like(p) * 0.2)
    layers["reference"].load_state_dict(layers["native"].state_dict())
    x0 = torch.randn(T, B, I, dtype=dtype)
    lengths = torch.tensor([5, 2, 4, 1, 5, 3, 5, 2, 4, 5, 1])
    results = {}
    for name, layer in layers.items():
        x = x0.clone().requires_grad_(True)
        out, state = layer(x, lengths=lengths)
        parts = list(state) if isinstance(state, tuple) else [state]
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum()
        loss = loss + sum((s * s).sum() for s in parts)
        names = [n for n, _ in layer.named_parameters()]
        grads = torch.autograd.grad(loss, [x, *layer.parameters()])
        results[name] = (["out", *("state" for _ in parts), "dx", *names], [out, *parts, *grads])
    names, got = results["native"]
    _, want = results["reference"]
    for name, a, b in zip(names, got, want, strict=True):
        assert_close(a, b, dtype, name)
    assert spy["backward"] == 4  # 2 layers × 2 directions


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_native(mode, spy):
    """float64 gradcheck of engine.run(backend="native") with lengths, both directions."""
    T, B, I, H = 4, 3, 2, 3  # noqa: E741
    x, state, params = make_inputs(mode, T, B, I, H, F64, seed=11)
    lengths = torch.tensor([4, 2, 3])
    n_state = len(state)

    def f(x, *rest):
        st, ps = rest[:n_state], rest[n_state:]
        outs = []
        for reverse in (False, True):
            y, final = engine.run(mode, x, st, ps, lengths, reverse, backend="native")
            outs += [y, *final]
        return tuple(outs)

    assert torch.autograd.gradcheck(f, (x, *state, *params))
    assert spy["backward"] > 0


@pytest.mark.parametrize("mode", MODES)
def test_not_used_when_native_disabled(mode, monkeypatch, spy):
    """SEQLAB_NATIVE=0: the kernel covers nothing, so engine.run uses another kernel (or the
    reference loop) and gives the same result."""
    inputs = make_inputs(mode, 4, 3, 2, 16, F64, seed=5)
    want = run_and_grads("reference", mode, inputs, None, False)
    monkeypatch.setenv("SEQLAB_NATIVE", "0")
    assert not native_ln.KERNEL.covers(get_spec(mode))
    got = run_and_grads(None, mode, inputs, None, False)
    for a, b in zip(got[0] + got[1], want[0] + want[1], strict=True):
        assert_close(a, b, F64, "disabled native")
    assert spy["forward"] == 0
    monkeypatch.delenv("SEQLAB_NATIVE")
    assert native_ln.KERNEL.covers(get_spec(mode))
    assert not native_ln.KERNEL.covers(get_spec("lstm"))


def test_ops_check_their_arguments():
    ops = native.load()
    x, (h0, c0), p = make_inputs("lnlstm", 3, 2, 4, 5, torch.float32)
    p = [t.detach() for t in p]
    w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c = p
    with pytest.raises(RuntimeError, match=r"g_ih: expected shape \(20,\)"):
        ops.ln_forward(0, x.detach(), h0.detach(), c0.detach(), w_ih, w_hh, b_ih, b_hh,
                       g_ih[:-1], g_hh, g_c, b_c, None, False, True)  # fmt: skip
    with pytest.raises(RuntimeError, match="mode: expected 0 .lnlstm. or 1 .lngru., got 7"):
        ops.ln_forward(7, x.detach(), h0.detach(), c0.detach(), w_ih, w_hh, b_ih, b_hh,
                       g_ih, g_hh, g_c, b_c, None, False, True)  # fmt: skip
    with pytest.raises(RuntimeError, match=r"lengths: expected values in \[0, 3\]"):
        ops.ln_forward(0, x.detach(), h0.detach(), c0.detach(), w_ih, w_hh, b_ih, b_hh,
                       g_ih, g_hh, g_c, b_c, torch.tensor([1, 4]), False, True)  # fmt: skip


@pytest.mark.parametrize("mode", MODES)
def test_results_survive_later_calls(mode, spy):
    """The kernel reuses per-thread buffers (the backward's dA, the saved forward buffers once
    released): nothing it returns may alias one. Also a second forward before the first
    backward (both graphs alive) gets its own saved buffers."""
    T, B, I, H = 5, 6, 3, 20  # noqa: E741
    first = make_inputs(mode, T, B, I, H, torch.float32, seed=21)
    second = make_inputs(mode, T, B, I, H, torch.float32, seed=22)
    want = [run_and_grads("reference", mode, inp, None, False) for inp in (first, second)]
    outs = [engine.run(mode, inp[0], inp[1], inp[2], backend="native") for inp in (first, second)]
    got = []
    for (x, state, params), (y, final) in zip((first, second), outs, strict=True):
        w = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
        loss = (y * w).sum() + sum((f * f).sum() for f in final)
        leaves = [x, *state, *[p for p in params if p is not None]]
        got.append(([y, *final], list(torch.autograd.grad(loss, leaves))))
    run_and_grads("native", mode, first, None, True)  # more calls reusing the buffers
    with torch.no_grad():
        engine.run(mode, second[0], second[1], second[2], backend="native")
    for (go, gg), (wo, wg) in zip(got, want, strict=True):
        for k, (a, b) in enumerate(zip(go + gg, wo + wg, strict=True)):
            assert_close(a, b.detach(), torch.float32, f"tensor {k}")
    assert spy["backward"] == 3
