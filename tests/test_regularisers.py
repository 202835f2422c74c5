"""Recurrent regularisers (input / recurrent variational dropout, DropConnect on w_hh).

Oracles: a hand-written loop of each classic cell applying given masks (the same at every
step), the reference loop with the same masks (for the fast kernels, values and every
gradient), float64 gradcheck, and the plain layer (eval mode, p = 0).
"""

from __future__ import annotations

import pytest
import torch

import seqlab
from helpers import assert_close
from seqlab import engine
from seqlab.engine import native
from seqlab.functional import SPECS
from seqlab.functional.regularisers import DropoutMasks, dropout_mask
from seqlab.functional.scan import reference_run
from seqlab.layers import make_layer

F64 = torch.float64
FAST = ["fused"] + (["native"] if native.load() is not None else [])
KINDS = [name for name, spec in SPECS.items() if spec.kernel is not None]
CLASSIC_LAYERS = {  # kind -> (layer class, kwargs)
    "rnn_tanh": (seqlab.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (seqlab.RNN, {"nonlinearity": "relu"}),
    "lstm": (seqlab.LSTM, {}),
    "gru": (seqlab.GRU, {}),
    "gru_reset_before": (seqlab.GRU, {"reset_after": False}),
}
REGS = {"input_dropout": 0.3, "recurrent_dropout": 0.4, "weight_dropout": 0.5}


def loss_of(y, final, seed=7):
    g = torch.Generator().manual_seed(seed)
    loss = (y * torch.randn(y.shape, generator=g, dtype=y.dtype)).sum()
    for s in (final,) if isinstance(final, torch.Tensor) else final:
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
    return loss


def assert_matches(what, dtype, got, want):
    """(outputs, final state parts, gradients) of a run against the oracle's, each by name."""
    (y, final, grads), (want_y, want_final, want_grads) = got, want
    assert_close(y, want_y, dtype, f"{what}: outputs")
    for a, b in zip(final, want_final, strict=True):
        assert_close(a, b, dtype, f"{what}: final state")
    for k, (a, b) in enumerate(zip(grads, want_grads, strict=True)):
        assert_close(a, b, dtype, f"{what}: gradient {k}")


def engine_inputs(kind, T, B, I, H, dtype, seed=0):  # noqa: E741
    g = torch.Generator().manual_seed(seed)
    G = SPECS[kind].G

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    x = r(T, B, I)
    state = tuple(r(B, H) for _ in SPECS[kind].state)
    params = [r(G * H, I, scale=0.3), r(G * H, H, scale=0.3), r(G * H), r(G * H)]
    h_mask = dropout_mask((B, H), 0.4, dtype=dtype, generator=g)
    return x, state, params, h_mask


# ------------------------------------------------------------ kernels vs reference loop
@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_masked_kernel_matches_reference(backend, kind, dtype):
    """engine.run with h_mask on a fast backend == the reference loop with the same mask:
    outputs, final states and the gradients of x, the state and all four parameters, with
    and without lengths, both directions."""
    T, B, I, H = 7, 5, 4, 6  # noqa: E741
    x, state, params, h_mask = engine_inputs(kind, T, B, I, H, dtype)
    leaves = [x, *state, *params]
    names = [p.name for p in SPECS[kind].params]
    for lengths in (None, torch.tensor([7, 3, 5, 1, 6])):
        for reverse in (False, True):
            want_y, want_f = reference_run(
                kind, x, state, dict(zip(names, params, strict=True)), lengths, reverse, h_mask
            )
            want_g = torch.autograd.grad(loss_of(want_y, want_f), leaves)
            y, f = engine.run(kind, x, state, params, lengths, reverse, backend, h_mask=h_mask)
            got_g = torch.autograd.grad(loss_of(y, f), leaves)
            what = f"{backend} {kind} lengths={lengths is not None} reverse={reverse}"
            assert_matches(what, dtype, (y, f, got_g), (want_y, want_f, want_g))
            with torch.no_grad():  # the inference path (no saved buffers)
                y0, _ = engine.run(kind, x, state, params, lengths, reverse, backend, h_mask)
            assert_close(y0, want_y.detach(), dtype, f"{what}: no-grad outputs")


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
def test_masked_kernel_two_threads(kind):
    """Sizes where the native loop splits each step by hidden units across a team of two
    (H = 50: shards of 32 and 18 units) and chunks the input projection (T=9 > a chunk)."""
    if "native" not in FAST:
        pytest.skip("native backend unavailable")
    backend = "native"
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for dtype in (F64, torch.float32):
            T, B, I, H = 9, 29, 16, 50  # noqa: E741
            x, state, params, h_mask = engine_inputs(kind, T, B, I, H, dtype, seed=3)
            leaves = [x, *state, *params]
            lengths = torch.randint(1, T + 1, (B,), generator=torch.Generator().manual_seed(1))
            names = [p.name for p in SPECS[kind].params]
            for reverse in (False, True):
                named = dict(zip(names, params, strict=True))
                want = reference_run(kind, x, state, named, lengths, reverse, h_mask)
                want_g = torch.autograd.grad(loss_of(*want), leaves)
                got = engine.run(kind, x, state, params, lengths, reverse, backend, h_mask=h_mask)
                got_g = torch.autograd.grad(loss_of(*got), leaves)
                assert_close(got[0], want[0], dtype, "outputs")
                for k, (a, b) in enumerate(zip(got_g, want_g, strict=True)):
                    assert_close(a, b, dtype, f"{kind} {dtype} reverse={reverse} gradient {k}")
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("threads", [1, 2])
def test_masked_native_chunks(threads):
    """The native loop forms dW_hh from h_prev ⊙ m a chunk of steps at a time: with B=64
    a chunk is 8 steps, so T=9 crosses a chunk boundary (both directions, lengths)."""
    if "native" not in FAST:
        pytest.skip("native backend unavailable")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for kind in ("lstm", "gru"):
            T, B, I, H = 9, 64, 24, 320  # noqa: E741
            x, state, params, h_mask = engine_inputs(kind, T, B, I, H, torch.float32, seed=5)
            with torch.no_grad():
                params[1].mul_(0.2)  # keep the 320-unit recurrence well scaled
            leaves = [x, *state, *params]
            lengths = torch.randint(1, T + 1, (B,), generator=torch.Generator().manual_seed(5))
            named = dict(zip(("w_ih", "w_hh", "b_ih", "b_hh"), params, strict=True))
            for reverse in (False, True):
                want = reference_run(kind, x, state, named, lengths, reverse, h_mask)
                want_g = torch.autograd.grad(loss_of(*want), leaves)
                got = engine.run(kind, x, state, params, lengths, reverse, "native", h_mask=h_mask)
                got_g = torch.autograd.grad(loss_of(*got), leaves)
                assert_close(got[0], want[0], torch.float32, "outputs")
                for k, (a, b) in enumerate(zip(got_g, want_g, strict=True)):
                    assert_close(a, b, torch.float32, f"{kind} reverse={reverse} gradient {k}")
    finally:
        torch.set_num_threads(previous)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_reset_before"])
def test_masked_kernel_gradcheck(backend, kind):
    """Finite differences (float64) through the hand-derived masked backward."""
    x, state, params, h_mask = engine_inputs(kind, 4, 3, 2, 3, F64, seed=2)
    lengths = torch.tensor([4, 2, 3])

    def fn(x, *rest):
        st, ps = rest[: len(state)], rest[len(state) :]
        y, f = engine.run(kind, x, st, ps, lengths, True, backend, h_mask=h_mask)
        return (y, *f)

    assert torch.autograd.gradcheck(fn, (x, *state, *params))


# ---------------------------------------------------------------- a hand-written oracle
def hand_layer(kind, x, h0, c0, w_ih, w_hh, b_ih, b_hh, m_x, m_h, m_w):
    """One direction, no lengths, written out step by step: x_t ⊙ m_x, h_{t-1} ⊙ m_h in
    the recurrent product only, w_hh ⊙ m_w; the same masks at every step."""
    T, H = x.shape[0], h0.shape[1]
    w = w_hh * m_w
    h, c, ys = h0, c0, []
    for t in range(T):
        xt = x[t] * m_x
        hm = h * m_h
        if kind in ("rnn_tanh", "rnn_relu"):
            a = xt @ w_ih.T + b_ih + hm @ w.T + b_hh
            h = torch.tanh(a) if kind == "rnn_tanh" else torch.relu(a)
        elif kind == "lstm":
            a = xt @ w_ih.T + b_ih + hm @ w.T + b_hh
            i, f = torch.sigmoid(a[:, :H]), torch.sigmoid(a[:, H : 2 * H])
            g, o = torch.tanh(a[:, 2 * H : 3 * H]), torch.sigmoid(a[:, 3 * H :])
            c = f * c + i * g
            h = o * torch.tanh(c)
        else:
            xa = xt @ w_ih.T + b_ih
            if kind == "gru":
                ha = hm @ w.T + b_hh
                r = torch.sigmoid(xa[:, :H] + ha[:, :H])
                z = torch.sigmoid(xa[:, H : 2 * H] + ha[:, H : 2 * H])
                n = torch.tanh(xa[:, 2 * H :] + r * ha[:, 2 * H :])
            else:  # reset before: r scales the masked h inside the candidate's product
                ha = hm @ w[: 2 * H].T + b_hh[: 2 * H]
                r = torch.sigmoid(xa[:, :H] + ha[:, :H])
                z = torch.sigmoid(xa[:, H : 2 * H] + ha[:, H:])
                n = torch.tanh(xa[:, 2 * H :] + (r * hm) @ w[2 * H :].T + b_hh[2 * H :])
            h = (1 - z) * n + z * h  # the plain h_{t-1}
        ys.append(h)
    return torch.stack(ys), h, c


@pytest.mark.parametrize("kind", list(CLASSIC_LAYERS))
@pytest.mark.parametrize("backend", ["reference", *FAST])
def test_layer_matches_hand_loop(kind, backend):
    """A training layer with all three regularisers, given its masks, equals the hand loop
    applying the same masks at every step (values and every gradient, float64): the masks
    are one per sequence and DropConnect acts on w_hh (gradient through the mask)."""
    cls, kw = CLASSIC_LAYERS[kind]
    torch.manual_seed(0)
    T, B, I, H = 6, 3, 4, 5  # noqa: E741
    layer = cls(I, H, **kw, **REGS, backend=backend).to(F64)
    masks = layer.sample_masks(B, generator=torch.Generator().manual_seed(3))
    m = masks[0]
    assert all(t is not None for t in m)
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    h0 = torch.randn(B, H, dtype=F64, requires_grad=True)
    c0 = torch.randn(B, H, dtype=F64, requires_grad=True)
    state = (h0, c0) if kind == "lstm" else h0
    state_in = tuple(s.unsqueeze(0) for s in state) if kind == "lstm" else h0.unsqueeze(0)
    y, final = layer(x, state_in, masks=masks)
    leaves = [x, h0, *([c0] if kind == "lstm" else []), *layer.parameters()]
    got = torch.autograd.grad(loss_of(y, final), leaves)
    ys, hT, cT = hand_layer(kind, x, h0, c0, *layer.weights("_l0"), *m)
    want_final = (hT.unsqueeze(0), cT.unsqueeze(0)) if kind == "lstm" else hT.unsqueeze(0)
    want = torch.autograd.grad(loss_of(ys, want_final), leaves)
    assert_close(y, ys, F64, "outputs")
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert_close(a, b, F64, f"gradient {k}")
    y_tr, _, traces = layer(x, state_in, trace=True, masks=masks)  # the traced loop too
    assert_close(y_tr, ys, F64, "traced outputs")
    assert_close(traces[0]["h"], ys, F64, "traced h")


def test_kernel_without_mask_support_falls_back_to_reference():
    """A registered kernel that does not declare covers_h_mask is never handed a mask: the
    masked call runs on a kernel of the kind that takes it (here the built-in LN kernel named
    like the backend), else on the reference loop (the unmasked call still uses the kernel)."""
    calls = []

    class Plain:
        # named like the default backend, so the engine prefers it to the built-in LN kernels
        name = engine.resolve_backend(None)

        def covers(self, spec):
            return spec.name == "lnlstm"

        def forward(self, spec, x, state, params, lengths, reverse, save):
            calls.append("forward")
            named = {p.name: t for p, t in zip(spec.params, params, strict=True)}
            y, final = reference_run(spec, x, state, named, lengths, reverse)
            return y, final, ()

    layer = make_layer("lnlstm", 3, 4, recurrent_dropout=0.5).to(F64)
    masks = layer.sample_masks(2, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 2, 3, dtype=F64)
    with torch.no_grad():
        want, _ = layer(x, masks=masks)  # before registering: the reference loop
    engine.EXTRA_KERNELS.insert(0, Plain())
    try:
        with torch.no_grad():
            got, _ = layer(x, masks=masks)
            assert calls == []
            layer.eval()(x)
            assert calls == ["forward"]
    finally:
        engine.EXTRA_KERNELS.pop(0)
    assert torch.equal(got, want)


def test_training_forward_draws_what_sample_masks_draws():
    """While training, forward draws its masks exactly as sample_masks does (same RNG order),
    so the hand loop with sample_masks' draw reproduces a plain training call: one mask per
    call, the same at every step; a second call draws new masks."""
    torch.manual_seed(0)
    T, B, I, H = 8, 4, 3, 5  # noqa: E741
    layer = seqlab.LSTM(I, H, **REGS).to(F64)
    x = torch.randn(T, B, I, dtype=F64)
    torch.manual_seed(11)
    y, _ = layer(x)
    torch.manual_seed(11)
    (m,) = layer.sample_masks(B)
    zero = torch.zeros(B, H, dtype=F64)
    want, _, _ = hand_layer("lstm", x, zero, zero, *layer.weights("_l0"), *m)
    assert_close(y, want, F64, "training forward vs hand loop with the drawn masks")
    y2, _ = layer(x)
    assert not torch.allclose(y, y2)  # fresh masks per call


def test_two_layer_bidirectional_lengths_backends_agree():
    """2 layers, bidirectional, lengths, torch.nn's dropout off: every fast backend equals
    the reference loop given the same masks, values and every gradient (float64 and 32)."""
    for dtype in (F64, torch.float32):
        for kind, (cls, kw) in CLASSIC_LAYERS.items():
            torch.manual_seed(1)
            layer = cls(4, 6, num_layers=2, bidirectional=True, **kw, **REGS).to(dtype)
            B = 5
            masks = layer.sample_masks(B, generator=torch.Generator().manual_seed(2))
            x = torch.randn(7, B, 4, dtype=dtype, requires_grad=True)
            lengths = torch.tensor([7, 2, 5, 1, 6])
            results = {}
            for backend in ("reference", *FAST, "torch"):
                layer.backend = backend
                y, final = layer(x, lengths=lengths, masks=masks)
                grads = torch.autograd.grad(loss_of(y, final), [x, *layer.parameters()])
                results[backend] = (y, final, grads)
            want = results["reference"]
            for backend in (*FAST, "torch"):  # torch: masked calls run on fused
                y, final, grads = results[backend]
                assert_close(y, want[0], dtype, f"{kind} {backend} outputs")
                for a, b in zip(grads, want[2], strict=True):
                    assert_close(a, b, dtype, f"{kind} {backend} gradient")


# ------------------------------------------------------------------ off means plain
@pytest.mark.parametrize("kind", list(CLASSIC_LAYERS))
def test_eval_mode_is_the_plain_layer(kind):
    cls, kw = CLASSIC_LAYERS[kind]
    torch.manual_seed(0)
    reg = cls(3, 5, num_layers=2, bidirectional=True, **kw, **REGS)
    plain = cls(3, 5, num_layers=2, bidirectional=True, **kw)
    plain.load_state_dict(reg.state_dict())
    reg.eval()
    plain.eval()
    x = torch.randn(6, 2, 3)
    y, f = reg(x)
    y0, f0 = plain(x)
    assert torch.equal(y, y0)
    for a, b in zip(f if kind == "lstm" else [f], f0 if kind == "lstm" else [f0], strict=True):
        assert torch.equal(a, b)


def test_zero_probabilities_are_the_plain_layer_while_training():
    torch.manual_seed(0)
    layer = seqlab.GRU(3, 5, num_layers=2, input_dropout=0, recurrent_dropout=0.0)
    plain = seqlab.GRU(3, 5, num_layers=2)
    plain.load_state_dict(layer.state_dict())
    assert not layer.regularised
    assert layer.sample_masks(2) == [DropoutMasks(), DropoutMasks()]
    x = torch.randn(4, 2, 3, requires_grad=True)
    y, _ = layer(x)
    y0, _ = plain(x)
    assert torch.equal(y, y0)
    g = torch.autograd.grad(y.sum(), [x, *layer.parameters()])
    g0 = torch.autograd.grad(y0.sum(), [x, *plain.parameters()])
    for a, b in zip(g, g0, strict=True):
        assert torch.equal(a, b)


def test_given_masks_apply_in_eval_mode_too():
    """masks= is explicit: used in eval mode as well (Monte-Carlo dropout)."""
    torch.manual_seed(0)
    layer = seqlab.LSTM(3, 4, **REGS).eval()
    masks = layer.sample_masks(2, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 2, 3)
    assert torch.equal(layer(x, masks=masks)[0], layer.train()(x, masks=masks)[0])
    assert not torch.equal(layer.eval()(x)[0], layer(x, masks=masks)[0])


# --------------------------------------------------------------------- the masks
@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 0.9])
def test_inverted_scaling(p):
    """Values are 0 or 1/(1−p); the mean is 1 in expectation (here within 4 standard errors
    of a fixed-seed draw of 200 000), so evaluation needs no rescaling."""
    m = dropout_mask((400, 500), p, dtype=F64, generator=torch.Generator().manual_seed(0))
    values = set(torch.unique(m).tolist())
    assert values <= {0.0, 1.0 / (1.0 - p)}
    se = (p / (1 - p) / m.numel()) ** 0.5  # sd of one value is sqrt(p/(1-p))
    assert abs(m.mean().item() - 1.0) <= 4 * se + 1e-12
    assert abs((m == 0).double().mean().item() - p) <= 0.01


def test_p_one_drops_everything():
    assert torch.equal(dropout_mask((3, 4), 1.0), torch.zeros(3, 4))
    layer = seqlab.RNN(3, 4, input_dropout=1.0)
    x = torch.randn(5, 2, 3)
    y, _ = layer(x)
    y0, _ = layer.eval()(torch.zeros(5, 2, 3))  # x ⊙ 0: the response to no input
    assert torch.equal(y, y0)


def test_masks_shapes_and_order():
    layer = seqlab.LSTM(3, 4, num_layers=2, bidirectional=True, **REGS)
    masks = layer.sample_masks(6)
    assert len(masks) == 4
    assert [tuple(m.input.shape) for m in masks] == [(6, 3), (6, 3), (6, 8), (6, 8)]
    assert all(tuple(m.recurrent.shape) == (6, 4) for m in masks)
    assert all(tuple(m.weight.shape) == (16, 4) for m in masks)
    # independent draws per layer and direction
    assert not torch.equal(masks[0].recurrent, masks[1].recurrent)


def test_layernorm_cells_take_recurrent_dropout():
    """A kind registered on the reference loop gets the regularisers from its step."""
    torch.manual_seed(0)
    for kind in ("lnlstm", "lngru"):
        layer = make_layer(kind, 3, 4, **REGS).to(F64)
        masks = layer.sample_masks(2, generator=torch.Generator().manual_seed(1))
        x = torch.randn(5, 2, 3, dtype=F64)
        y, _ = layer(x, masks=masks)
        y_plain, _ = layer.eval()(x)
        assert not torch.allclose(y, y_plain)
        # the recurrent mask alone: equal to a step-by-step loop of the spec's step
        only = [DropoutMasks(None, masks[0].recurrent, None)]
        y_h, _ = layer(x, masks=only)
        spec, p = layer.spec, dict(layer.params("_l0"))
        xw = spec.project(x, p)
        state = spec.default_state(2, 4, x)
        outs = []
        for t in range(5):
            hm = {**p, "h_mask": masks[0].recurrent}
            state, _ = spec.step(xw[t], state, hm)
            outs.append(state[0])
        assert_close(y_h, torch.stack(outs), F64, kind)


# ------------------------------------------- LayerNorm kernels vs reference loop, masked
LN_KINDS = ["lnlstm", "lngru"]


def ln_inputs(kind, T, B, I, H, dtype, seed=0):  # noqa: E741
    """x, state, parameters in the description's order (gains near 1) and a mask (p = 0.4)."""
    spec = SPECS[kind]
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0, shift=0.0):
        t = torch.randn(*shape, generator=g, dtype=F64) * scale + shift
        return t.to(dtype).requires_grad_()

    x = r(T, B, I)
    state = tuple(r(B, H, scale=0.5) for _ in spec.state)
    params = [
        r(*p.shape(spec.G, I, H), scale=0.3, shift=1.0 if p.role == "gain" else 0.0)
        for p in spec.params
    ]
    h_mask = dropout_mask((B, H), 0.4, dtype=dtype, generator=g)
    return x, state, params, h_mask


@pytest.fixture
def ln_calls(monkeypatch):
    """Backward calls of the LayerNorm kernels (fused, native), by kernel name: a masked call
    that silently ran on the reference loop counts nothing."""
    from seqlab.engine import fused_ln, native_ln

    calls = {"fused": 0, "native": 0}
    for kernel in (fused_ln.KERNEL, native_ln.KERNEL):
        original = kernel.backward

        def counted(*args, _name=kernel.name, _original=original, **kwargs):
            calls[_name] += kwargs.get("h_mask") is not None
            return _original(*args, **kwargs)

        monkeypatch.setattr(kernel, "backward", counted)
    return calls


def masked_ln_kernel(backend):
    """The LN kernel that takes a masked call on ``backend`` (the native one where it can)."""
    from seqlab.engine import native_ln

    takes = getattr(native_ln.KERNEL, "covers_h_mask", None)
    native_takes = takes is not None and takes(SPECS["lnlstm"])
    return "native" if backend == "native" and native_takes else "fused"


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("kind", LN_KINDS)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_masked_layernorm_kernel_matches_reference(backend, kind, dtype, ln_calls):
    """LN-LSTM/LN-GRU with h_mask on a fast backend (its LN kernel, not the reference loop)
    == the reference loop with the same mask: outputs, final states and the gradients of x,
    every state part and every parameter (gains included), with and without lengths (one of
    length 0), both directions; and the no-grad forward. The oracle runs in float64 on the
    same values (for float32, the reference loop's own rounding is of the tolerance's size)."""
    T, B, I, H = 7, 5, 4, 6  # noqa: E741
    x, state, params, h_mask = ln_inputs(kind, T, B, I, H, dtype)
    leaves = [x, *state, *params]
    leaves64 = [t.detach().to(F64).requires_grad_() for t in leaves]
    x64, state64, params64 = leaves64[0], leaves64[1 : 1 + len(state)], leaves64[1 + len(state) :]
    names = [p.name for p in SPECS[kind].params]
    runs = 0
    for lengths in (None, torch.tensor([7, 3, 0, 1, 6])):
        for reverse in (False, True):
            named = dict(zip(names, params64, strict=True))
            want_y, want_f = reference_run(
                kind, x64, state64, named, lengths, reverse, h_mask.to(F64)
            )
            want_g = torch.autograd.grad(loss_of(want_y, want_f), leaves64)
            y, f = engine.run(kind, x, state, params, lengths, reverse, backend, h_mask=h_mask)
            # the same loss weights as the oracle's (drawn in float64)
            got_g = torch.autograd.grad(loss_of(y.to(F64), [s.to(F64) for s in f]), leaves)
            runs += 1
            what = f"{backend} {kind} lengths={lengths is not None} reverse={reverse}"
            assert_matches(what, dtype, (y, f, got_g), (want_y, want_f, want_g))
            with torch.no_grad():  # the inference path (no saved buffers)
                y0, _ = engine.run(kind, x, state, params, lengths, reverse, backend, h_mask)
            assert_close(y0, want_y.detach(), dtype, f"{what}: no-grad outputs")
    assert ln_calls[masked_ln_kernel(backend)] == runs


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("kind", LN_KINDS)
def test_masked_layernorm_kernel_gradcheck(backend, kind, ln_calls):
    """Finite differences (float64) through the LN kernels' hand-derived masked backward."""
    x, state, params, h_mask = ln_inputs(kind, 4, 3, 2, 3, F64, seed=2)
    lengths = torch.tensor([4, 2, 3])

    def fn(x, *rest):
        st, ps = rest[: len(state)], rest[len(state) :]
        y, f = engine.run(kind, x, st, ps, lengths, True, backend, h_mask=h_mask)
        return (y, *f)

    assert torch.autograd.gradcheck(fn, (x, *state, *params))
    assert ln_calls[masked_ln_kernel(backend)] > 0


@pytest.mark.parametrize("threads", ["1", "2-rows", "2-units"])
@pytest.mark.parametrize("kind", LN_KINDS)
def test_masked_layernorm_native_team_and_chunks(kind, threads, ln_calls, monkeypatch):
    """The native LN loop with h_mask where 2 threads split each step into shards of 32 and
    18 units (H=50), or the batch into halves of 50 rows, and the input side runs by chunks of
    6-8 steps (T=14, B=100): float64, lengths (some 0), both directions, against the
    reference loop with the same mask."""
    if "native" not in FAST:
        pytest.skip("native backend unavailable")
    n, _, split = threads.partition("-")
    if split:
        monkeypatch.setenv("SEQLAB_LN_SPLIT", split)
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        T, B, I, H = 14, 100, 6, 50  # noqa: E741
        x, state, params, h_mask = ln_inputs(kind, T, B, I, H, F64, seed=9)
        leaves = [x, *state, *params]
        lengths = torch.randint(0, T + 1, (B,), generator=torch.Generator().manual_seed(9))
        named = dict(zip([p.name for p in SPECS[kind].params], params, strict=True))
        for reverse in (False, True):
            want = reference_run(kind, x, state, named, lengths, reverse, h_mask)
            want_g = torch.autograd.grad(loss_of(*want), leaves)
            got = engine.run(kind, x, state, params, lengths, reverse, "native", h_mask=h_mask)
            got_g = torch.autograd.grad(loss_of(*got), leaves)
            what = f"{kind} threads={threads} {reverse=}"
            assert_matches(what, F64, (*got, got_g), (*want, want_g))
    finally:
        torch.set_num_threads(previous)
    assert ln_calls["native"] == 2


def test_regularised_layernorm_layer_matches_reference_layer():
    """A 2-layer bidirectional LN-LSTM layer with all three regularisers and lengths: the
    default backend (masked calls on an LN kernel) == backend="reference", same masks."""
    torch.manual_seed(0)
    layers = {
        b: make_layer("lnlstm", 5, 8, num_layers=2, bidirectional=True, backend=b, **REGS)
        for b in (None, "reference")
    }
    layers["reference"].load_state_dict(layers[None].state_dict())
    for layer in layers.values():
        layer.to(F64)
    masks = layers[None].sample_masks(3, generator=torch.Generator().manual_seed(4))
    x0 = torch.randn(6, 3, 5, dtype=F64)
    lengths = torch.tensor([6, 2, 4])
    got = {}
    for name, layer in layers.items():
        x = x0.clone().requires_grad_()
        y, final = layer(x, lengths=lengths, masks=masks)
        grads = torch.autograd.grad(loss_of(y, final), [x, *layer.parameters()])
        got[name] = [y, *final, *grads]
    for k, (a, b) in enumerate(zip(got[None], got["reference"], strict=True)):
        assert_close(a, b, F64, f"tensor {k}")


# ------------------------------------------------------------------------- errors
@pytest.mark.parametrize("name", list(REGS))
@pytest.mark.parametrize("bad", [-0.1, 1.5, "0.5", True, None])
def test_bad_probability(name, bad):
    with pytest.raises(ValueError, match=rf"{name}: expected a probability in \[0, 1\]"):
        seqlab.LSTM(3, 4, **{name: bad})


def test_kinds_without_a_recurrent_matrix_refuse():
    with pytest.raises(ValueError, match="recurrent_dropout: cell kind 'indrnn'"):
        make_layer("indrnn", 3, 4, recurrent_dropout=0.2)
    with pytest.raises(ValueError, match="weight_dropout: cell kind 'indrnn'"):
        make_layer("indrnn", 3, 4, weight_dropout=0.2)
    layer = make_layer("indrnn", 3, 4, input_dropout=0.2)  # input dropout works for any kind
    y, _ = layer(torch.randn(5, 2, 3))
    assert y.shape == (5, 2, 4)
    with pytest.raises(ValueError, match="recurrent_dropout: not available with proj_size"):
        seqlab.LSTM(3, 4, proj_size=2, recurrent_dropout=0.2)
    x, state, params, h_mask = engine_inputs("lstm", 3, 2, 3, 4, F64)
    with pytest.raises(ValueError, match=r"h_mask: expected shape \(2, 4\), got \(2, 5\)"):
        engine.run("lstm", x, state, params, h_mask=torch.ones(2, 5, dtype=F64))


def test_bad_masks():
    layer = seqlab.GRU(3, 4, num_layers=2, **REGS)
    x = torch.randn(5, 2, 3)
    with pytest.raises(ValueError, match="masks: expected a list of 2 DropoutMasks"):
        layer(x, masks=layer.sample_masks(2)[:1])
    masks = layer.sample_masks(3)
    with pytest.raises(ValueError, match=r"masks\[0\].input: expected shape \(2, 3\)"):
        layer(x, masks=masks)
    masks = [m._replace(weight=m.weight.double()) for m in layer.sample_masks(2)]
    with pytest.raises(TypeError, match=r"masks\[0\].weight: expected dtype torch.float32"):
        layer(x, masks=masks)


def test_models_take_the_regularisers():
    from seqlab.models import LanguageModel, LanguageModelConfig
    from seqlab.models.encoders import make_recurrent

    torch.manual_seed(0)
    cfg = LanguageModelConfig(20, 8, 16, 2, "lstm", **REGS)
    lm = LanguageModel(cfg)
    assert lm.rnn.rnn.recurrent_dropout == 0.4
    tokens = torch.randint(0, 20, (3, 7))
    logits, _ = lm(tokens)
    logits.sum().backward()
    lm.eval()
    plain = LanguageModel(LanguageModelConfig(20, 8, 16, 2, "lstm"))
    plain.load_state_dict(lm.state_dict())
    assert torch.equal(lm(tokens)[0], plain.eval()(tokens)[0])
    with pytest.raises(ValueError, match="impl: 'torch' has no recurrent_dropout"):
        make_recurrent("lstm", 3, 4, impl="torch", recurrent_dropout=0.1)


# ------------------------------------------------------------------- native ops
def test_native_team_loop_takes_the_mask():
    """The native kernel itself (not a fallback) runs masked RNN/LSTM/GRU calls; its masked
    ops check their mask like every other argument."""
    if "native" not in FAST:
        pytest.skip("native backend unavailable")
    kernel = engine._kernel("native")
    for kind in KINDS:
        assert kernel.covers_h_mask(SPECS[kind]) == (kind != "gru_reset_before")
    ops = native.load()
    x, state, params, h_mask = engine_inputs("lstm", 4, 2, 3, 5, F64)
    with torch.no_grad():
        args = (x, state[0], state[1], *params, None, False, False)
        y = ops.forward_masked(2, *args, h_mask)[0]
        named = dict(zip(("w_ih", "w_hh", "b_ih", "b_hh"), params, strict=True))
        want, _ = reference_run("lstm", x, state, named, None, False, h_mask)
        assert_close(y, want, F64, "forward_masked")
        with pytest.raises(RuntimeError, match=r"forward_masked: h_mask: expected shape \(2, 5\)"):
            ops.forward_masked(2, *args, h_mask[:, :4].contiguous())
        with pytest.raises(RuntimeError, match="gru_reset_before takes no h_mask"):
            ops.forward_masked(4, x, state[0], None, *engine_inputs("gru", 4, 2, 3, 5, F64)[2],
                               None, False, False, h_mask)  # fmt: skip


@pytest.mark.slow
def test_compiled_layer_with_masks_equals_eager():
    """torch.compile of a regularised native layer (masked calls trace through fused)."""
    if "native" not in FAST:
        pytest.skip("native backend unavailable")
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = seqlab.LSTM(3, 4, num_layers=2, bidirectional=True, backend="native", **REGS)
    masks = layer.sample_masks(2, generator=torch.Generator().manual_seed(0))
    x = torch.randn(5, 2, 3)
    results = []
    for model in (layer, torch.compile(layer)):
        layer.zero_grad()
        y, state = model(x, masks=masks)
        loss_of(y, state).backward()
        results.append((y.detach(), [p.grad.clone() for p in layer.parameters()]))
    assert_close(results[1][0], results[0][0], torch.float32, "outputs")
    for a, b in zip(results[1][1], results[0][1], strict=True):
        assert_close(a, b, torch.float32, "gradient")


# ------------------------------------------------------------------ Recurrent(cell)
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_recurrent_cell_matches_hand_loop(kind, batch_first):
    """Recurrent(seqlab cell, regularisers) with given masks == the hand loop, values and
    every gradient; trace=True gives the same outputs; a training call draws what
    sample_masks draws."""
    from seqlab.cells import make_cell

    torch.manual_seed(0)
    T, B, I, H = 5, 3, 4, 6  # noqa: E741
    cell = make_cell(kind, I, H).to(F64)
    rec = seqlab.Recurrent(cell, batch_first=batch_first, **REGS)
    masks = rec.sample_masks(B, generator=torch.Generator().manual_seed(1))
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    xin = x.transpose(0, 1) if batch_first else x
    y, final = rec(xin, masks=masks)
    y = y.transpose(0, 1) if batch_first else y
    leaves = [x, *cell.parameters()]
    got = torch.autograd.grad(loss_of(y, final), leaves)
    zero = torch.zeros(B, H, dtype=F64)
    p = cell.params()
    ys, hT, cT = hand_layer(kind, x, zero, zero, p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"], *masks)
    want = torch.autograd.grad(loss_of(ys, (hT, cT) if kind == "lstm" else hT), leaves)
    assert_close(y, ys, F64, "outputs")
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert_close(a, b, F64, f"gradient {k}")
    y_tr, _, traces = rec(xin, masks=masks, trace=True)
    assert_close(y_tr, rec(xin, masks=masks)[0], F64, "traced outputs")
    torch.manual_seed(5)
    y_train, _ = rec(xin)
    torch.manual_seed(5)
    again = rec.sample_masks(B, (I,))
    assert torch.equal(y_train, rec(xin, masks=again)[0])
    assert torch.equal(rec.eval()(xin)[0], seqlab.Recurrent(cell, batch_first)(xin)[0])


def test_recurrent_any_cell_input_dropout_only():
    """A cell of one's own: input dropout works (the reference loop on x ⊙ m); the two
    engine-side regularisers are refused with the reason."""

    class Halver(torch.nn.Module):
        hidden_size = 3

        def initial_state(self, batch_size, dtype=None, device=None):
            return torch.zeros(batch_size, 3, dtype=dtype, device=device)

        def forward(self, x, h):
            h = 0.5 * h + x
            return h, h

    rec = seqlab.Recurrent(Halver(), input_dropout=0.5)
    x = torch.randn(6, 2, 3)
    m = rec.sample_masks(2, (3,), generator=torch.Generator().manual_seed(0))
    y, _ = rec(x, masks=m)
    h, want = torch.zeros(2, 3), []
    for t in range(6):
        h = 0.5 * h + x[t] * m.input
        want.append(h)
    assert_close(y, torch.stack(want), torch.float32, "outputs")
    with pytest.raises(ValueError, match="recurrent_dropout: needs one of seqlab's cells"):
        seqlab.Recurrent(Halver(), recurrent_dropout=0.2)
    from seqlab.cells import make_cell

    with pytest.raises(ValueError, match="weight_dropout: cell kind 'indrnn'"):
        seqlab.Recurrent(make_cell("indrnn", 3, 4), weight_dropout=0.2)
    with pytest.raises(ValueError, match=r"masks.input: expected shape \(2, 3\)"):
        rec(x, masks=DropoutMasks(torch.ones(2, 4)))


def test_classifier_and_tagger_configs():
    from seqlab.models import ClassifierConfig, SequenceClassifier, SequenceTagger, TaggerConfig

    clf = SequenceClassifier(ClassifierConfig(3, vocab_size=10, **REGS))
    tag = SequenceTagger(TaggerConfig(4, vocab_size=10, **REGS))
    for model in (clf, tag):
        assert model.encoder.rnn.weight_dropout == 0.5
        assert model.encoder.rnn.input_dropout == 0.3
    with pytest.raises(ValueError, match="input_dropout: not applicable to cell='transformer'"):
        SequenceClassifier(ClassifierConfig(3, vocab_size=10, cell="transformer", **REGS))


def test_unbatched_packed_and_projected_inputs():
    """Unbatched input (B = 1 masks), a PackedSequence (masks passed through) and an LSTM
    with proj_size (input and weight dropout; w_hh is (4H, P)) all take the regularisers."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(0)
    layer = seqlab.GRU(3, 4, **REGS).to(F64)
    x = torch.randn(5, 2, 3, dtype=F64)
    masks1 = layer.sample_masks(1)
    y1, _ = layer(x[:, 0], masks=masks1)
    assert torch.equal(y1, layer(x[:, :1], masks=masks1)[0][:, 0])
    masks = layer.sample_masks(2)
    lengths = torch.tensor([5, 3])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    yp, _ = pad_packed_sequence(layer(packed, masks=masks)[0])
    assert_close(yp, layer(x, lengths=lengths, masks=masks)[0], F64, "packed")
    proj = seqlab.LSTM(3, 4, proj_size=2, input_dropout=0.3, weight_dropout=0.5).to(F64)
    (m,) = proj.sample_masks(2)
    assert m.weight.shape == (16, 2)
    y, _ = proj(x, masks=[m])
    plain = seqlab.LSTM(3, 4, proj_size=2).to(F64)
    plain.load_state_dict(proj.state_dict())
    with torch.no_grad():
        plain.weight_hh_l0.mul_(m.weight)
    assert_close(y, plain(x * m.input)[0], F64, "projected LSTM with masks")
