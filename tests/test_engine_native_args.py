"""The native ops check their own arguments, survive empty sizes, and propagate NaN.

``torch.ops.seqlab_engine.forward/backward`` are reachable directly, so every bad argument
must end in a RuntimeError naming it (never a crash or a silently wrong answer). The calls
that used to kill the process (hidden size 0, B = 0, lengths > T) run in one subprocess, so a
crash fails these tests instead of killing pytest; its report is one JSON line per case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqlab import engine
from seqlab.engine import native
from seqlab.functional.scan import reference_layer

MODES = ["rnn_tanh", "rnn_relu", "lstm", "gru", "gru_reset_before"]
MODE_ID = {m: i for i, m in enumerate(MODES)}
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3, "gru_reset_before": 3}

pytestmark = pytest.mark.skipif(native.load() is None, reason="native backend unavailable")


def fwd_args(mode="lstm", T=3, B=2, I=4, H=5, dtype=torch.float64, lengths=True):
    """Valid keyword arguments of forward (in op order) for one small layer."""
    g = torch.Generator().manual_seed(0)
    G = GATES[mode]

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    return {
        "mode": MODE_ID[mode],
        "x": r(T, B, I),
        "h0": r(B, H),
        "c0": r(B, H) if mode == "lstm" else None,
        "w_ih": r(G * H, I),
        "w_hh": r(G * H, H),
        "b_ih": r(G * H),
        "b_hh": r(G * H),
        "lengths": torch.tensor([T] + [max(T - 1, 0)] * (B - 1), dtype=torch.int64)
        if lengths and B
        else None,
        "reverse": False,
        "save": True,
    }


def bwd_args(mode="lstm", **kw):
    """Valid arguments of backward (in op order), from a saved forward."""
    a = fwd_args(mode, **kw)
    y, h_n, c_n, hbuf, cbuf, gates = torch.ops.seqlab_engine.forward(*a.values())
    return {
        "mode": a["mode"],
        "x": a["x"],
        "w_ih": a["w_ih"],
        "w_hh": a["w_hh"],
        "has_b_ih": True,
        "has_b_hh": True,
        "lengths": a["lengths"],
        "reverse": False,
        "hbuf": hbuf,
        "cbuf": cbuf,
        "gates": gates,
        "gy": torch.ones_like(y),
        "ghn": torch.ones_like(h_n),
        "gcn": torch.ones_like(c_n) if mode == "lstm" else None,
    }


def _with(args, **changes):
    out = dict(args)
    out.update(changes)
    return out


def _bad_forward():
    """(case id, forward arguments, the argument the message must name)."""
    a = fwd_args("lstm")
    T, B, I = a["x"].shape
    H = a["h0"].shape[1]
    r = fwd_args("rnn_tanh")
    return [
        ("mode", _with(a, mode=7), "mode"),
        ("x-2d", _with(a, x=a["x"][0]), "x"),
        ("x-int", _with(a, x=a["x"].long()), "x"),
        ("x-half", _with(a, x=a["x"].half()), "x"),
        ("x-noncontig", _with(a, x=a["x"].transpose(0, 1)), "x"),
        ("h0-batch", _with(a, h0=a["h0"][:1]), "h0"),
        ("h0-dtype", _with(a, h0=a["h0"].float()), "h0"),
        ("h0-1d", _with(a, h0=a["h0"][0]), "h0"),
        ("c0-missing", _with(a, c0=None), "c0"),
        ("c0-size", _with(a, c0=a["h0"][:, :-1].contiguous()), "c0"),
        ("c0-dtype", _with(a, c0=a["c0"].float()), "c0"),
        ("w_ih-gates", _with(a, w_ih=a["w_ih"][: 3 * H]), "w_ih"),
        ("w_ih-input", _with(a, w_ih=a["w_ih"][:, :-1].contiguous()), "w_ih"),
        ("w_hh-gates", _with(a, w_hh=a["w_hh"][: 3 * H]), "w_hh"),
        ("w_hh-noncontig", _with(a, w_hh=a["w_hh"].t().contiguous().t()[:, :H]), "w_hh"),
        ("w_hh-square", _with(r, w_hh=torch.zeros(H, H + 1, dtype=torch.float64)), "w_hh"),
        ("b_ih-size", _with(a, b_ih=a["b_ih"][:-1]), "b_ih"),
        ("b_hh-dtype", _with(a, b_hh=a["b_hh"].float()), "b_hh"),
        ("lengths-short", _with(a, lengths=a["lengths"][:1]), "lengths"),
        ("lengths-over-T", _with(a, lengths=torch.tensor([T + 1, 1])), "lengths"),
        ("lengths-negative", _with(a, lengths=torch.tensor([T, -1])), "lengths"),
        ("lengths-float", _with(a, lengths=torch.tensor([2.9, 1.0])), "lengths"),
        ("lengths-int32", _with(a, lengths=torch.tensor([T, 1], dtype=torch.int32)), "lengths"),
        ("lengths-2d", _with(a, lengths=torch.tensor([[T, 1]])), "lengths"),
        ("gru-w_ih-as-lstm", _with(fwd_args("gru", H=H), w_ih=a["w_ih"]), "w_ih"),
    ]


def _bad_backward():
    a = bwd_args("lstm")
    g = bwd_args("gru")
    rb = bwd_args("gru_reset_before")
    T, B, _ = a["x"].shape
    return [
        ("mode", _with(a, mode=-1), "mode"),
        ("x-3d", _with(a, x=a["x"][0]), "x"),
        ("hbuf-steps", _with(a, hbuf=a["hbuf"][:-1]), "hbuf"),
        ("cbuf-missing", _with(a, cbuf=torch.empty(0, dtype=torch.float64)), "cbuf"),
        ("gates-empty", _with(a, gates=torch.empty(0, dtype=torch.float64)), "gates"),
        ("gates-gru", _with(g, gates=g["gates"][..., :-1].contiguous()), "gates"),
        ("gates-reset-before", _with(rb, gates=g["gates"]), "gates"),
        ("w_hh-size", _with(a, w_hh=a["w_hh"][:-1]), "w_hh"),
        ("w_ih-dtype", _with(a, w_ih=a["w_ih"].float()), "w_ih"),
        ("gy-shape", _with(a, gy=a["gy"][:-1]), "gy"),
        ("ghn-shape", _with(a, ghn=a["ghn"][:1]), "ghn"),
        ("gcn-missing", _with(a, gcn=None), "gcn"),
        ("lengths-over-T", _with(a, lengths=torch.tensor([T + 1, 1])), "lengths"),
        ("lengths-short", _with(a, lengths=torch.tensor([T])), "lengths"),
    ]


def _empty_cases():
    """(case id, mode, T, B, I, H): sizes with nothing to loop over, or no input features."""
    sizes = [(3, 2, 4, 0), (3, 0, 4, 5), (0, 2, 4, 5), (3, 2, 0, 5), (0, 0, 0, 0)]
    return [
        (f"{mode}-T{T}-B{B}-I{I}-H{H}", mode, T, B, I, H)
        for mode in MODES
        for (T, B, I, H) in sizes
    ]


def _run_empty(mode, T, B, I, H):
    """Forward and backward through the op against the autograd reference loop."""
    for lengths in (False, True):
        a = fwd_args(mode, T=T, B=B, I=I, H=H, lengths=lengths)
        leaves = [a[k] for k in ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")]
        leaves = [t.requires_grad_() for t in leaves if t is not None]
        state = (a["h0"],) + ((a["c0"],) if mode == "lstm" else ())
        y_ref, final_ref = reference_layer(
            mode, a["x"], state, a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], a["lengths"]
        )
        with torch.no_grad():
            y, h_n, c_n, hbuf, cbuf, gates = torch.ops.seqlab_engine.forward(*a.values())
        if T == 0:  # the reference loop's T = 0 output is not (0, B, H) (its own issue)
            y_ref = torch.zeros(0, B, H, dtype=y.dtype)
        torch.testing.assert_close(y, y_ref.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h_n, final_ref[0].detach(), rtol=1e-12, atol=1e-12)
        if mode == "lstm":
            torch.testing.assert_close(c_n, final_ref[1].detach(), rtol=1e-12, atol=1e-12)
        gy, ghn = torch.ones_like(y), torch.full_like(h_n, 2.0)
        gcn = torch.full_like(c_n, 3.0) if mode == "lstm" else None
        loss = (y_ref * gy).sum() + (final_ref[0] * ghn).sum()
        if mode == "lstm":
            loss = loss + (final_ref[1] * gcn).sum()
        want = torch.autograd.grad(loss, leaves, allow_unused=True)
        got = torch.ops.seqlab_engine.backward(
            a["mode"], a["x"], a["w_ih"], a["w_hh"], True, True, a["lengths"], False,
            hbuf, cbuf, gates, gy, ghn, gcn,
        )  # fmt: skip
        dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh = got
        got = [dx, dh0] + ([dc0] if mode == "lstm" else []) + [dw_ih, dw_hh, db_ih, db_hh]
        for g_, w_, t in zip(got, want, leaves, strict=True):
            w_ = torch.zeros_like(t) if w_ is None else w_
            torch.testing.assert_close(g_, w_, rtol=1e-12, atol=1e-12)
    if T and B:  # the public entry point (it bypasses the engine only for T = 0 or B = 0)
        a = fwd_args(mode, T=T, B=B, I=I, H=H)
        state = (a["h0"],) + ((a["c0"],) if mode == "lstm" else ())
        y, _ = engine.run_layer(
            mode, a["x"], state, a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"], backend="native"
        )
        assert tuple(y.shape) == (T, B, H)


def _outcome(fn):
    try:
        fn()
    except RuntimeError as exc:
        return {"raised": "RuntimeError", "message": str(exc).splitlines()[0]}
    except Exception as exc:  # noqa: BLE001 - reported, the test says what was wrong
        return {"raised": type(exc).__name__, "message": str(exc).splitlines()[0][:300]}
    return {"raised": None}


def main() -> None:
    """Every case of this module, in this process; one JSON line per case (run by the test)."""
    ops = torch.ops.seqlab_engine
    groups = [
        ("fwd", [(i, (lambda a=a: ops.forward(*a.values()))) for i, a, _ in _bad_forward()]),
        ("bwd", [(i, (lambda a=a: ops.backward(*a.values()))) for i, a, _ in _bad_backward()]),
        ("empty", [(c[0], (lambda c=c: _run_empty(*c[1:]))) for c in _empty_cases()]),
    ]
    for group, cases in groups:
        for case, fn in cases:
            print(json.dumps({"start": f"{group}:{case}"}), flush=True)
            print(json.dumps({"case": f"{group}:{case}", **_outcome(fn)}), flush=True)


@pytest.fixture(scope="module")
def outcomes():
    """Run main() in a child process: a crash there fails the tests, not the test run."""
    here = Path(__file__).parent
    code = f"import sys; sys.path.insert(0, {str(here)!r}); import {Path(__file__).stem} as m; "
    code += "m.main()"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    results = {d["case"]: d for d in lines if "case" in d}
    started = [d["start"] for d in lines if "start" in d]
    last = started[-1] if started else None
    crashed = proc.returncode != 0
    return results, (last if crashed and last not in results else None), proc


def _get(outcomes, case):
    results, crashed_in, proc = outcomes
    assert crashed_in != case, f"the process died (rc {proc.returncode}) in {case}"
    assert case in results, (
        f"{case} never ran: rc {proc.returncode}, died in {crashed_in}; {proc.stderr[-2000:]}"
    )
    return results[case]


@pytest.mark.parametrize(("case", "name"), [(c, n) for c, _, n in _bad_forward()])
def test_forward_rejects_bad_argument(outcomes, case, name):
    got = _get(outcomes, f"fwd:{case}")
    assert got["raised"] == "RuntimeError", got
    assert got["message"].startswith(f"seqlab_engine.forward: {name}: expected"), got


@pytest.mark.parametrize(("case", "name"), [(c, n) for c, _, n in _bad_backward()])
def test_backward_rejects_bad_argument(outcomes, case, name):
    got = _get(outcomes, f"bwd:{case}")
    assert got["raised"] == "RuntimeError", got
    assert got["message"].startswith(f"seqlab_engine.backward: {name}: expected"), got


@pytest.mark.parametrize("case", [c[0] for c in _empty_cases()])
def test_empty_sizes_match_reference(outcomes, case):
    got = _get(outcomes, f"empty:{case}")
    assert got["raised"] is None, got


def test_messages_say_expected_and_actual():
    a = fwd_args("lstm", T=3, B=2, I=4, H=5)
    want = r"w_ih: expected shape \(20, 4\) .*G = 4.*got \(15, 4\)"
    with pytest.raises(RuntimeError, match=want):
        torch.ops.seqlab_engine.forward(*_with(a, w_ih=a["w_ih"][:15]).values())
    with pytest.raises(RuntimeError, match=r"lengths: expected values in \[0, 3\].*= 4"):
        torch.ops.seqlab_engine.forward(*_with(a, lengths=torch.tensor([3, 4])).values())


# ---- NaN and inf propagate as in torch.nn


def _torch_nn(mode, I, H):
    if mode == "lstm":
        return torch.nn.LSTM(I, H)
    if mode == "gru":
        return torch.nn.GRU(I, H)
    return torch.nn.RNN(I, H, nonlinearity="relu" if mode == "rnn_relu" else "tanh")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_propagates_like_torch_nn(mode, dtype, bad):
    """A non-finite input gives the outputs (and gradients) torch.nn gives: NaN stays NaN
    (the native ReLU RNN used to turn it into 0). The reset-before GRU, absent from torch.nn,
    is held to seqlab's reference loop (torch ops, autograd)."""
    T, B, I, H = 4, 3, 5, 6
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, I, generator=g, dtype=dtype)
    x[1, 0, 2] = bad  # one entry of row 0; rows 1 and 2 stay finite
    x[3, 2, :] = bad  # a whole entry of row 2 at the last step
    h0 = torch.randn(B, H, generator=g, dtype=dtype)
    c0 = torch.randn(B, H, generator=g, dtype=dtype)
    state = (h0, c0) if mode == "lstm" else (h0,)
    if mode == "gru_reset_before":
        w = [torch.randn(s, generator=g, dtype=dtype) * 0.5 for s in [(3 * H, I), (3 * H, H)]]
        b = [torch.randn(3 * H, generator=g, dtype=dtype) * 0.5 for _ in range(2)]
        params = [*w, *b]

        def oracle(x_, state_, params_):
            return reference_layer(mode, x_, state_, *params_)
    else:
        net = _torch_nn(mode, I, H).to(dtype)
        names = [n for n, _ in net.named_parameters()]
        params = [p.detach().clone() for p in net.parameters()]

        def oracle(x_, state_, params_):
            nn_state = tuple(s.unsqueeze(0) for s in state_)
            args = (x_, nn_state if mode == "lstm" else nn_state[0])
            y, final = torch.func.functional_call(net, dict(zip(names, params_, strict=True)), args)
            final = final if isinstance(final, tuple) else (final,)
            return y, tuple(s[0] for s in final)

    def both(fn):
        leaves = [t.clone().requires_grad_() for t in (x, *state, *params)]
        lx, ls, lp = leaves[0], tuple(leaves[1 : 1 + len(state)]), leaves[1 + len(state) :]
        y, final = fn(lx, ls, lp)
        loss = y.sum() + sum(s.sum() for s in final)
        return [y, *final], torch.autograd.grad(loss, leaves)

    got, got_g = both(lambda x_, s_, p_: engine.run_layer(mode, x_, s_, *p_, backend="native"))
    want, want_g = both(oracle)
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    for a, b_ in zip(got, want, strict=True):
        torch.testing.assert_close(a, b_, equal_nan=True, **tol)
    assert got[0][:, 1].isfinite().all()  # the clean row stays clean
    if mode in ("rnn_relu", "rnn_tanh", "lstm", "gru") and bad != bad:
        assert got[0][1:, 0].isnan().any()
    for a, b_ in zip(got_g, want_g, strict=True):
        torch.testing.assert_close(a, b_, equal_nan=True, **tol)
