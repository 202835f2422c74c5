"""Property-based fuzz cases over seqlab's public entry points, with an oracle for "correct".

Each hypothesis strategy below draws one :class:`Case`: arguments for one public call, at
most one of them deliberately invalid (a *mutation*: a bool or zero size, an integer or
complex tensor, lengths out of range, a NaN option, ...). :func:`classify` runs it:

=================  ==========================================================================
outcome            meaning
=================  ==========================================================================
correct            valid input, and the result agrees with the oracle (torch.nn with the same
                   weights, a hand-written loop, exhaustive search, F.cross_entropy, ...)
clear error        invalid input, refused with ValueError/TypeError whose one-line message
                   names the invalid argument
unclear error      invalid input refused some other way (a raw torch error, no name)
wrong              valid input refused or answered differently from the oracle, or invalid
                   input accepted (silently wrong)
crash              the process died (seen by the campaign, which runs chunks in subprocesses)
=================  ==========================================================================

``known`` marks the regions that other work owns (the core refactor of issue 12, the native
engine); they are counted in their real category and listed, and the fast test subset avoids
them (their reproducers are xfail-strict tests in ``test_fuzz.py``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import seqlab
from seqlab import decoding, losses
from seqlab.engine import run_layer

OUTCOMES = ("correct", "clear error", "unclear error", "wrong", "crash")
BAD_SIZES = (0, -1, True, 2.0)


@dataclass
class Case:
    area: str
    what: str  # a short description (reproducer)
    run: Callable[[], Any]
    check: Callable[[Any], None] | None = None  # oracle: raises AssertionError when wrong
    bad: tuple[str, ...] = ()  # names of the invalid argument (empty: all valid)
    known: str = ""  # owner of a known failure region ("" when none)
    meta: dict = field(default_factory=dict)


def classify(case: Case) -> tuple[str, str]:
    """(outcome, detail) of running ``case`` (see the module doc)."""
    try:
        result = case.run()
    except (ValueError, TypeError) as err:
        msg = str(err)
        if not case.bad:
            return "wrong", f"valid input refused: {type(err).__name__}: {msg[:200]}"
        if "\n" not in msg.strip() and any(name in msg for name in case.bad):
            return "clear error", ""
        return "unclear error", f"{type(err).__name__}: {msg[:200]}"
    except Exception as err:  # noqa: BLE001 (anything else is an unclear error)
        return "unclear error", f"{type(err).__name__}: {str(err)[:200]}"
    if case.bad:
        return "wrong", f"accepted invalid {case.bad}"
    if case.check is not None:
        try:
            case.check(result)
        except AssertionError as err:
            return "wrong", f"oracle mismatch: {str(err)[:200]}"
    return "correct", ""


def close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert isinstance(a, torch.Tensor), f"{what}: got {type(a).__name__}"
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} vs oracle {tuple(b.shape)}"
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} vs oracle {b.dtype}"
    tol = 1e-9 if a.dtype == torch.float64 else 2e-5
    ok = torch.allclose(a, b, rtol=tol * 10, atol=tol, equal_nan=True)
    assert ok, f"{what}: max |diff| {(a - b).abs().max().item() if a.numel() else 0:.3g}"


def _mutation(draw, options: list[str], p_valid: int = 2) -> str:
    """'' (all valid) with weight ``p_valid``, else one of ``options``."""
    return draw(st.sampled_from([""] * p_valid * len(options) + options))


def _tensor_dtype(draw, mutation: str) -> torch.dtype:
    if mutation == "dtype":
        return draw(st.sampled_from([torch.int64, torch.complex64, torch.bool]))
    return draw(st.sampled_from([torch.float32, torch.float32, torch.float64]))


def _make(shape, dtype, gen) -> torch.Tensor:
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    if dtype == torch.bool:
        return x > 0
    if dtype.is_complex:
        return torch.complex(x, x).to(dtype)
    return (x * 3).to(dtype)


def _lengths(
    draw, B: int, T: int, mutation: str, zero_ok: bool = False
) -> tuple[torch.Tensor | None, str]:
    if mutation != "lengths":
        if B >= 1 and T >= 1 and draw(st.booleans()):
            return torch.tensor(draw(st.lists(st.integers(1, T), min_size=B, max_size=B))), ""
        return None, ""
    kinds = ["float", "bool", "long", "shape", "neg"] + ([] if zero_ok else ["zero"])
    kind = draw(st.sampled_from(kinds))
    Bl, Tl = max(B, 1), max(T, 1)
    if kind == "float":
        return torch.full((Bl,), Tl - 0.5), kind
    if kind == "bool":
        return torch.ones(Bl, dtype=torch.bool), kind
    if kind == "zero":
        return torch.zeros(Bl, dtype=torch.long), kind
    if kind == "long":
        return torch.full((Bl,), Tl + 1), kind
    if kind == "neg":
        return torch.full((Bl,), -1), kind
    return torch.ones(Bl + 1, dtype=torch.long), kind


# ------------------------------------------------------------------ layers vs torch.nn


def _torch_layer_oracle(ref: nn.Module, x, state, lengths, batch_first, T, B, H, LD, lstm):
    """torch.nn's answer; T=0 or B=0 written out (empty outputs, state unchanged)."""
    if T == 0 or B == 0:
        shape = (B, T, ref.hidden_size * (2 if ref.bidirectional else 1))
        out = x.new_zeros(shape if batch_first else (T, B, shape[2]))
        zero = x.new_zeros(LD, B, H)
        final = state if state is not None else ((zero, zero) if lstm else zero)
        if T == 0 or B == 0:
            return out, final
    if lengths is None:
        return ref(x, state)
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
    out, final = ref(packed, state)
    out, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    return out, final


@st.composite
def layer_case(draw) -> Case:
    mode = draw(st.sampled_from(["RNN", "LSTM", "GRU"]))
    mut = _mutation(
        draw,
        [
            "input_size",
            "hidden_size",
            "num_layers",
            "dropout",
            "dtype",
            "lengths",
            "features",
            "state",
        ],
    )
    I, H, L = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 2))
    bidir, batch_first = draw(st.booleans()), draw(st.booleans())
    B = draw(st.sampled_from([0, 1, 2, 3, 3]))
    T = draw(st.sampled_from([0, 1, 2, 3, 4, 4]))
    nonlin = draw(st.sampled_from(["tanh", "relu"])) if mode == "RNN" else None
    kw = {"nonlinearity": nonlin} if nonlin else {}
    sizes = {"input_size": I, "hidden_size": H, "num_layers": L}
    dropout = 0.0
    bad: tuple[str, ...] = ()
    if mut in sizes:
        sizes[mut] = draw(st.sampled_from(BAD_SIZES))
        bad = (mut,)
    if mut == "dropout":
        dropout, bad = draw(st.sampled_from([-0.1, 1.5, math.nan])), ("dropout",)
    dtype = _tensor_dtype(draw, mut)
    if mut == "dtype":
        bad = ("input", "x")
    lengths, lkind = _lengths(draw, B, T, mut)
    if mut == "lengths":
        bad = ("lengths",)
        B, T = max(B, 1), max(T, 1)
    feat = I + 1 if mut == "features" else I
    if mut == "features":
        bad, B, T = ("input", "x"), max(B, 1), max(T, 1)
    D = 2 if bidir else 1
    with_state = draw(st.booleans()) or mut == "state"
    if mut == "state":
        bad, B = ("state",), max(B, 1)
    seed = draw(st.integers(0, 2**16))
    what = (
        f"seqlab.{mode}({sizes}, bidirectional={bidir}, batch_first={batch_first}, "
        f"dropout={dropout}{', ' + repr(kw) if kw else ''})(x {dtype} "
        f"{'(B,T,I)' if batch_first else '(T,B,I)'} B={B} T={T} I={feat}, "
        f"lengths={lkind or (None if lengths is None else lengths.tolist())}, "
        f"state={'given' if with_state else None}{' wrong shape' if mut == 'state' else ''})"
    )
    known = ""
    if T == 0:  # torch.nn refuses an empty sequence ("Expected sequence length ..."), as seqlab
        bad = (*bad, "input")
    out_holder: dict = {}

    def run():
        torch.manual_seed(seed)
        layer = getattr(seqlab, mode)(
            **sizes, bias=True, batch_first=batch_first, dropout=dropout, bidirectional=bidir, **kw
        )
        layer = layer.to(dtype if dtype.is_floating_point else torch.float32).eval()
        gen = torch.Generator().manual_seed(seed)
        shape = (B, T, feat) if batch_first else (T, B, feat)
        x = _make(shape, dtype, gen)
        state = None
        if with_state:
            Bs = B + 1 if mut == "state" else B
            fdt = dtype if dtype.is_floating_point else torch.float32
            h0 = torch.randn(L * D, Bs, H, generator=gen, dtype=torch.float64).to(fdt)
            state = (h0, torch.randn_like(h0)) if mode == "LSTM" else h0
        if x.is_floating_point() and T and B:
            x.requires_grad_(True)
        out_holder.update(layer=layer, x=x, state=state)
        return layer(x, state, lengths=lengths)

    def check(result):
        layer, x, state = out_holder["layer"], out_holder["x"], out_holder["state"]
        ref = (
            getattr(nn, mode)(
                I, H, L, bias=True, batch_first=batch_first, bidirectional=bidir, **kw
            )
            .to(x.dtype)
            .eval()
        )
        ref.load_state_dict(layer.state_dict())
        xr = x.detach().clone().requires_grad_(x.requires_grad)
        out, final = result
        r_out, r_final = _torch_layer_oracle(
            ref, xr, state, lengths, batch_first, T, B, H, L * D, mode == "LSTM"
        )
        close(out, r_out, "outputs")
        finals = tuple(final) if mode == "LSTM" else (final,)
        r_finals = tuple(r_final) if mode == "LSTM" else (r_final,)
        for k, (a, b) in enumerate(zip(finals, r_finals, strict=True)):
            close(a, b, f"final state[{k}]")
        if x.requires_grad:
            g = torch.randn_like(out)
            (gx,) = torch.autograd.grad((out * g).sum(), x)
            (rgx,) = torch.autograd.grad((r_out * g).sum(), xr)
            close(gx, rgx, "d outputs / d x")

    return Case("layers", what, run, check, bad, known)


# ------------------------------------------------------------------ cells vs torch.nn


@st.composite
def cell_case(draw) -> Case:
    mode = draw(st.sampled_from(["RNNCell", "LSTMCell", "GRUCell"]))
    mut = _mutation(draw, ["input_size", "hidden_size", "dtype", "features"])
    I, H, B = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    sizes = {"input_size": I, "hidden_size": H}
    bad: tuple[str, ...] = ()
    if mut in sizes:
        sizes[mut], bad = draw(st.sampled_from(BAD_SIZES)), (mut,)
        if sizes[mut] == 0:  # torch.nn's cells take zero sizes, and so do seqlab's
            bad = ()
            I, H = sizes["input_size"], sizes["hidden_size"]
    dtype = _tensor_dtype(draw, mut)
    if mut in ("dtype", "features"):
        bad = ("input", "x")
    feat = I + 1 if mut == "features" else I
    with_state = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    what = (
        f"seqlab.{mode}({sizes})(x {dtype} ({B}, {feat}), state={'given' if with_state else None})"
    )
    known = ""
    held: dict = {}

    def run():
        torch.manual_seed(seed)
        cell = getattr(seqlab, mode)(**sizes)
        cell = cell.to(dtype if dtype.is_floating_point else torch.float32)
        gen = torch.Generator().manual_seed(seed)
        x = _make((B, feat), dtype, gen)
        state = None
        if with_state:
            fdt = dtype if dtype.is_floating_point else torch.float32
            h = torch.randn(B, H, generator=gen, dtype=torch.float64).to(fdt)
            state = (h, torch.randn_like(h)) if mode == "LSTMCell" else h
        held.update(cell=cell, x=x, state=state)
        return cell(x, state)

    def check(result):
        cell, x, state = held["cell"], held["x"], held["state"]
        ref = getattr(nn, mode)(I, H).to(x.dtype)
        ref.load_state_dict(cell.state_dict())
        expect = ref(x, state)
        out, new = cell.step(x, state)  # composition's form: (h', new state)
        if mode == "LSTMCell":  # torch.nn's return: (h', c')
            h, c = result
            close(h, expect[0], "h'")
            close(c, expect[1], "c'")
            close(out, expect[0], "step h'")
            close(new[0], expect[0], "step state h'")
            close(new[1], expect[1], "step state c'")
        else:  # h'
            close(result, expect, "h'")
            close(out, expect, "step h'")
            close(new, expect, "step state h'")

    return Case("cells", what, run, check, bad, known)


# ------------------------------------------------------------------ wrappers


@st.composite
def wrapper_case(draw) -> Case:
    kind = draw(st.sampled_from(["Recurrent", "Bidirectional", "TimeDistributed"]))
    mut = _mutation(draw, ["dtype", "lengths", "features"])
    I, H = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    B, T = draw(st.integers(1, 3)), draw(st.sampled_from([0, 1, 2, 3, 4]))
    mode = draw(st.sampled_from(["LSTM", "GRU", "RNN"]))
    merge = draw(st.sampled_from(["concat", "sum", "mean", "mul"]))
    batch_first = draw(st.booleans())
    dtype = _tensor_dtype(draw, mut)
    bad: tuple[str, ...] = ("input", "x") if mut in ("dtype", "features") else ()
    if kind == "TimeDistributed" and mut == "lengths":
        mut = ""
    lengths, lkind = _lengths(draw, B, T, mut)
    if mut == "lengths":
        bad, T = ("lengths",), max(T, 1)
    if mut == "features":
        T = max(T, 1)
    feat = I + 1 if mut == "features" else I
    seed = draw(st.integers(0, 2**16))
    known = ""
    what = (
        f"{kind}({mode}Cell({I}, {H}), merge={merge}, batch_first={batch_first})(x {dtype}"
        f" B={B} T={T} I={feat}, lengths={lkind or lengths})"
    )
    held: dict = {}

    def run():
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        x = _make((B, T, feat) if batch_first else (T, B, feat), dtype, gen)
        fdt = dtype if dtype.is_floating_point else torch.float32
        held["x"] = x
        if kind == "TimeDistributed":
            lin = nn.Linear(I, H).to(fdt)
            held["lin"] = lin
            return seqlab.TimeDistributed(lin)(x)
        cells = [getattr(seqlab, mode + "Cell")(I, H).to(fdt) for _ in range(2)]
        held["cells"] = cells
        f = seqlab.Recurrent(cells[0], batch_first=batch_first)
        if kind == "Recurrent":
            return f(x, None, lengths)
        b = seqlab.Recurrent(cells[1], batch_first=batch_first)
        return seqlab.Bidirectional(f, b, merge=merge)(x, None, lengths)

    def check(result):
        x = held["x"]
        if kind == "TimeDistributed":
            close(result, held["lin"](x), "outputs")
            return
        cells = held["cells"]
        ref = getattr(nn, mode)(
            I, H, batch_first=batch_first, bidirectional=kind == "Bidirectional"
        ).to(x.dtype)
        sd = {f"{k}_l0": v for k, v in cells[0].state_dict().items()}
        if kind == "Bidirectional":
            sd.update({f"{k}_l0_reverse": v for k, v in cells[1].state_dict().items()})
        ref.load_state_dict(sd)
        r_out, r_final = _torch_layer_oracle(
            ref,
            x,
            None,
            lengths,
            batch_first,
            T,
            B,
            H,
            2 if kind == "Bidirectional" else 1,
            mode == "LSTM",
        )
        out, final = result
        if kind == "Bidirectional":
            yf, yb = r_out[..., :H], r_out[..., H:]
            r_out = {"concat": r_out, "sum": yf + yb, "mean": (yf + yb) / 2, "mul": yf * yb}[merge]
        close(out, r_out, "outputs")
        r_h = r_final[0] if mode == "LSTM" else r_final
        if kind == "Recurrent":
            h = final[0] if mode == "LSTM" else final
            close(h, r_h[0], "final h")
        else:
            for d in range(2):
                h = final[d][0] if mode == "LSTM" else final[d]
                close(h, r_h[d], f"final h (direction {d})")

    return Case("wrappers", what, run, check, bad, known)


# ------------------------------------------------------------------ engine.run_layer


@st.composite
def engine_case(draw) -> Case:
    mode = draw(st.sampled_from(["lstm", "gru", "rnn_tanh", "rnn_relu"]))
    backend = draw(st.sampled_from(["reference", "fused", "native", None]))
    mut = _mutation(draw, ["hidden", "lengths", "state", "dtype"], p_valid=3)
    I, H = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    B, T = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    reverse = draw(st.booleans())
    G = {"lstm": 4, "gru": 3}.get(mode, 1)
    bad: tuple[str, ...] = ()
    if mut == "hidden":  # valid for the engine: no units (torch.nn's layers refuse H=0)
        H = 0
    dtype = _tensor_dtype(draw, mut)
    if mut == "dtype":
        bad = ("x",)
    lengths, lkind = _lengths(draw, B, T, mut, zero_ok=True)
    if mut == "lengths":
        bad = ("lengths",)
    seed = draw(st.integers(0, 2**16))
    known = ""
    what = (
        f"run_layer({mode!r}, x {dtype} ({T},{B},{I}), H={H}, lengths={lkind or lengths}, "
        f"reverse={reverse}, backend={backend!r}{', state B+1' if mut == 'state' else ''})"
    )
    if mut == "state":
        bad = ("state", "h0")
    held: dict = {}

    def run():
        gen = torch.Generator().manual_seed(seed)
        fdt = dtype if dtype.is_floating_point else torch.float32
        x = _make((T, B, I), dtype, gen)
        w_ih = torch.randn(G * H, I, generator=gen, dtype=torch.float64).to(fdt) * 0.5
        w_hh = torch.randn(G * H, H, generator=gen, dtype=torch.float64).to(fdt) * 0.5
        b_ih = torch.randn(G * H, generator=gen, dtype=torch.float64).to(fdt)
        b_hh = torch.randn(G * H, generator=gen, dtype=torch.float64).to(fdt)
        Bs = B + 1 if mut == "state" else B
        h0 = torch.randn(Bs, H, generator=gen, dtype=torch.float64).to(fdt)
        state = (h0, torch.randn_like(h0)) if mode == "lstm" else (h0,)
        held.update(x=x, w=(w_ih, w_hh, b_ih, b_hh), state=state)
        return run_layer(mode, x, state, w_ih, w_hh, b_ih, b_hh, lengths, reverse, backend)

    def check(result):
        x, (w_ih, w_hh, b_ih, b_hh), state = held["x"], held["w"], held["state"]
        if H == 0:  # written out (torch.nn refuses H=0): no units, empty outputs and states
            out, final = result
            assert out.shape == (T, B, 0), f"outputs: shape {tuple(out.shape)} vs ({T}, {B}, 0)"
            assert all(f.shape == (B, 0) for f in final), "final state: expected (B, 0) parts"
            return
        name = {"lstm": "LSTM", "gru": "GRU"}.get(mode, "RNN")
        kw = {"nonlinearity": mode[4:]} if name == "RNN" else {}
        ref = getattr(nn, name)(I, H, **kw).to(x.dtype)
        ref.load_state_dict(
            {"weight_ih_l0": w_ih, "weight_hh_l0": w_hh, "bias_ih_l0": b_ih, "bias_hh_l0": b_hh}
        )
        out, final = result
        lens = lengths.tolist() if lengths is not None else [T] * B
        for b in range(B):  # one row at a time: its valid prefix, read backwards if reverse
            n = lens[b]
            xb = x[:n, b : b + 1]
            xb = xb.flip(0) if reverse else xb
            s = tuple(t[b : b + 1].unsqueeze(0) for t in state)
            o, f = ref(xb, s if mode == "lstm" else s[0])
            o = o.flip(0) if reverse else o
            close(out[:n, b], o[:, 0], f"outputs row {b}")
            assert torch.all(out[n:, b] == 0), f"padded outputs of row {b} are not zero"
            fs = f if mode == "lstm" else (f,)
            for k in range(len(fs)):
                close(final[k][b], fs[k][0, 0], f"final state[{k}] row {b}")

    return Case("engine", what, run, check, bad, known)


# ------------------------------------------------------------------ models


@st.composite
def lm_case(draw) -> Case:
    cell = draw(st.sampled_from(["lstm", "gru", "rnn"]))
    mut = _mutation(
        draw,
        [
            "vocab_size",
            "embed_size",
            "hidden_size",
            "num_layers",
            "cell",
            "tokens",
            "resets",
            "lengths",
        ],
    )
    V, E, H, L = (
        draw(st.integers(2, 6)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, 3)),
        draw(st.integers(1, 2)),
    )
    B, T = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    sizes = {"vocab_size": V, "embed_size": E, "hidden_size": H, "num_layers": L, "cell": cell}
    bad: tuple[str, ...] = ()
    if mut in ("vocab_size", "embed_size", "hidden_size", "num_layers"):
        sizes[mut], bad = draw(st.sampled_from(BAD_SIZES)), (mut,)
    if mut == "cell":
        sizes["cell"], bad = "lstmx", ("cell",)
    tok_kind = draw(st.sampled_from(["float", "high", "neg"])) if mut == "tokens" else ""
    if mut == "tokens":
        bad = ("tokens",)
    use_resets = mut == "resets" or draw(st.booleans())
    lengths, lkind = (None, "") if use_resets else _lengths(draw, B, T, mut)
    if mut == "lengths":
        bad = ("lengths",)
        use_resets = False
        lengths, lkind = _lengths(draw, B, T, mut)
    if mut == "resets":
        bad = ("resets",)
    known = ""
    seed = draw(st.integers(0, 2**16))
    what = (
        f"LanguageModel({sizes})(tokens {tok_kind or 'ok'} ({B},{T}), "
        f"resets={'int' if mut == 'resets' else use_resets}, lengths={lkind or lengths})"
    )
    held: dict = {}

    def run():
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = seqlab.LanguageModel(seqlab.LanguageModelConfig(**sizes)).eval()
        tokens = torch.randint(0, V, (B, T), generator=gen)
        if tok_kind == "float":
            tokens = tokens.float()
        elif tok_kind == "high":
            tokens[0, 0] = V
        elif tok_kind == "neg":
            tokens[0, 0] = -1
        resets = None
        if use_resets:
            resets = torch.rand(B, T, generator=gen) < 0.3
            if mut == "resets":
                resets = resets.long()
        held.update(model=model, tokens=tokens, resets=resets)
        return model(tokens, None, lengths, resets)

    def check(result):
        model, tokens, resets = held["model"], held["tokens"], held["resets"]
        name = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[cell]
        ref = getattr(nn, name)(E, H, L, batch_first=True)
        ref.load_state_dict(
            {
                k[len("rnn.rnn.") :]: v
                for k, v in model.state_dict().items()
                if k.startswith("rnn.rnn.")
            }
        )
        emb, out = nn.Embedding(V, E), nn.Linear(H, V)
        emb.weight.data.copy_(model.embed.weight)
        out.load_state_dict(model.out.state_dict())
        logits, _ = result
        for b in range(B):  # one row at a time, restarting from zero at each reset
            n = int(lengths[b]) if lengths is not None else T
            rows, state = [], None
            for t in range(n):
                if resets is not None and resets[b, t] and t > 0:
                    state = None
                y, state = ref(emb(tokens[b : b + 1, t : t + 1]), state)
                rows.append(out(y[0, 0]))
            close(logits[b, :n], torch.stack(rows), f"logits row {b}")

    return Case("models", what, run, check, bad, known)


MODEL_CONFIGS = {
    "ClassifierConfig": (
        seqlab.SequenceClassifier,
        {"num_classes": 3, "vocab_size": 5},
        ["num_classes", "vocab_size", "embed_size", "hidden_size", "num_layers"],
    ),
    "TaggerConfig": (
        seqlab.SequenceTagger,
        {"num_tags": 3, "vocab_size": 5},
        ["num_tags", "vocab_size", "embed_size", "hidden_size", "num_layers"],
    ),
    "WindowConfig": (
        seqlab.WindowMLP,
        {"output_size": 2, "vocab_size": 5},
        ["output_size", "window", "vocab_size", "embed_size", "hidden_size"],
    ),
    "Seq2SeqConfig": (
        seqlab.Seq2Seq,
        {"src_vocab": 5, "tgt_vocab": 6},
        ["src_vocab", "tgt_vocab", "embed_size", "hidden_size", "encoder_layers"],
    ),
    "GeneratorConfig": (
        seqlab.Generator,
        {"cond_size": 2, "vocab_size": 5},
        ["cond_size", "vocab_size", "embed_size", "hidden_size", "num_layers"],
    ),
    "TransformerLMConfig": (
        seqlab.TransformerLM,
        {"vocab_size": 5, "d_model": 8, "nhead": 2, "num_layers": 1, "dim_feedforward": 8},
        ["vocab_size", "d_model", "nhead", "num_layers", "dim_feedforward"],
    ),
}


@st.composite
def config_case(draw) -> Case:
    """Model constructors: a bool, zero, negative or float size is refused by name."""
    name = draw(st.sampled_from(sorted(MODEL_CONFIGS)))
    cls, base, fields = MODEL_CONFIGS[name]
    field_ = draw(st.sampled_from(fields))
    value = draw(st.sampled_from([*BAD_SIZES, None]))
    kw = dict(base, **({field_: value} if value is not None else {}))
    if name in (
        "ClassifierConfig",
        "TaggerConfig",
        "WindowConfig",
        "Seq2SeqConfig",
        "GeneratorConfig",
    ):
        kw.setdefault("hidden_size", 4)
        kw.setdefault("embed_size", 3)
    bad = (field_,) if value is not None else ()
    config_cls = getattr(seqlab, name)
    what = f"{cls.__name__}({name}({kw}))"

    def run():
        model_cls = getattr(seqlab, cls.__name__)
        return model_cls(config_cls(**kw)) if name != "TransformerLMConfig" else model_cls(**kw)

    def check(model):
        assert sum(p.numel() for p in model.parameters()) > 0, "no parameters"

    return Case("models", what, run, check, bad)


# ------------------------------------------------------------------ decoding


class Markov:
    """A decodable toy: logits of the next token depend on the last token only."""

    def __init__(self, table: torch.Tensor) -> None:
        self.table = table  # (V, V)

    def step(self, tokens, state):
        return self.table[tokens], state

    def reorder_state(self, state, index):
        return state.index_select(0, index)


def _greedy_oracle(table, bos, max_len, eos):
    out, tok = [], bos
    for _ in range(max_len):
        tok = int(table[tok].argmax())
        out.append(tok)
        if eos is not None and tok == eos:
            break
    return out


def _best_by_search(table, bos, max_len, eos, alpha):
    """Exhaustive search of the best normalised score log p(y) / |y|^alpha."""
    logp = torch.log_softmax(table.double(), -1)
    V, best = table.shape[0], (-math.inf, None)
    for n in range(1, max_len + 1):
        for seq in itertools.product(range(V), repeat=n):
            if eos is not None and eos in seq[:-1]:
                continue
            if n < max_len and (eos is None or seq[-1] != eos):
                continue  # only hypotheses that ended (or reached max_len) compete
            lp, prev = 0.0, bos
            for t in seq:
                lp, prev = lp + float(logp[prev, t]), t
            s = lp / n**alpha
            if s > best[0] + 1e-9:
                best = (s, list(seq))
    return best


@st.composite
def decoding_case(draw) -> Case:
    fn = draw(st.sampled_from(["greedy", "beam_search", "sample"]))
    mut = _mutation(
        draw, ["pad", "eos", "max_len", "length_penalty", "temperature", "beam_size", "nan"]
    )
    V = draw(st.integers(1, 3))
    max_len = draw(st.integers(1, 3))
    eos = draw(st.sampled_from([None, 0, V - 1]))
    pad, alpha, temp, K = 0, draw(st.sampled_from([0.0, 0.5, 1.0])), 1.0, V**max_len
    bad: tuple[str, ...] = ()
    if mut == "pad":
        pad, bad = draw(st.sampled_from([V, -1, V + 5])), ("pad",)
    if mut == "eos":
        eos, bad = draw(st.sampled_from([V, -2])), ("eos",)
    if mut == "max_len":
        max_len, bad = draw(st.sampled_from([0, -1, True, 2.0])), ("max_len",)
    if mut == "length_penalty" and fn == "beam_search":
        alpha, bad = draw(st.sampled_from([math.nan, -1.0, math.inf])), ("length_penalty",)
    if mut == "temperature" and fn == "sample":
        temp, bad = draw(st.sampled_from([math.nan, 0.0, -1.0, math.inf])), ("temperature",)
    if mut == "beam_size" and fn == "beam_search":
        K, bad = draw(st.sampled_from([0, -1, True])), ("beam_size",)
    if mut == "nan":
        bad = ("NaN", "nan")
    seed = draw(st.integers(0, 2**16))
    B = draw(st.integers(1, 2))
    what = (
        f"{fn}(Markov V={V}, B={B}, max_len={max_len}, eos={eos}, pad={pad}, alpha={alpha},"
        f" temperature={temp}, beam={K}{', NaN logits' if mut == 'nan' else ''})"
    )
    held: dict = {}

    def run():
        gen = torch.Generator().manual_seed(seed)
        table = torch.randn(V, V, generator=gen) * 2
        if mut == "nan":
            table[:, 0] = math.nan
        held["table"] = table
        m, state, bos = Markov(table), torch.zeros(B, 1), torch.zeros(B, dtype=torch.long)
        if fn == "greedy":
            return decoding.greedy(m, state, bos, max_len, eos=eos, pad=pad)
        if fn == "beam_search":
            return decoding.beam_search(
                m, state, bos, max_len, K, eos=eos, length_penalty=alpha, pad=pad
            )
        return decoding.sample(
            m,
            state,
            bos,
            max_len,
            temperature=temp,
            eos=eos,
            pad=pad,
            generator=torch.Generator().manual_seed(seed),
        )

    def check(res):
        table = held["table"]
        logp = torch.log_softmax(table.double(), -1)
        for b in range(B):
            toks = res.tokens[b, : int(res.lengths[b])].tolist()
            if fn == "greedy":
                assert toks == _greedy_oracle(table, 0, max_len, eos), f"greedy {toks}"
            elif fn == "beam_search":
                score, seq = _best_by_search(table, 0, max_len, eos, alpha)
                assert abs(float(res.scores[b]) - score) < 1e-4, (
                    f"beam score {float(res.scores[b])} vs exhaustive {score} ({seq})"
                )
            lp, prev = 0.0, 0
            for t in toks:
                lp, prev = lp + float(logp[prev, t]), t
            assert abs(float(res.log_probs[b]) - lp) < 1e-4, "log_probs"
            assert all(0 <= t < V for t in res.tokens[b].tolist()), "token outside vocab"

    return Case("decoding", what, run, check, bad)


# ------------------------------------------------------------------ losses


@st.composite
def loss_case(draw) -> Case:
    fn = draw(st.sampled_from(["cross_entropy", "mse"]))
    mut = _mutation(draw, ["pred_dtype", "target_dtype", "lengths", "mask", "shape"])
    B, T, V = draw(st.integers(0, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    use_mask = draw(st.booleans())
    bad: tuple[str, ...] = ()
    lengths, lkind = (None, "") if use_mask else _lengths(draw, B, T, mut)
    if mut == "lengths":
        bad, B = ("lengths",), max(B, 1)
        use_mask = False
        lengths, lkind = _lengths(draw, B, T, mut, zero_ok=True)
    if mut == "pred_dtype":
        bad = ("logits",) if fn == "cross_entropy" else ("pred",)
    if mut == "target_dtype":
        bad = ("targets",) if fn == "cross_entropy" else ("target",)
    if mut == "mask":
        bad, use_mask = ("mask",), True
    if mut == "shape":
        bad = ("targets",) if fn == "cross_entropy" else ("target",)
    seed = draw(st.integers(0, 2**16))
    what = (
        f"sequence_{fn}(B={B}, T={T}, V={V}, reduction={reduction}, "
        f"{'mask' if use_mask else 'lengths=' + str(lkind or lengths)}, mutation={mut!r})"
    )
    held: dict = {}

    def run():
        gen = torch.Generator().manual_seed(seed)
        mask = (torch.rand(B, T, generator=gen) < 0.7) if use_mask else None
        if mut == "mask":
            mask = mask.long()
        if fn == "cross_entropy":
            pred = torch.randn(B, T, V, generator=gen)
            target = torch.randint(0, V, (B, T + (mut == "shape")), generator=gen)
            if mut == "pred_dtype":
                pred = (pred * 3).long()
            if mut == "target_dtype":
                target = target.float()
            held.update(pred=pred, target=target, mask=mask)
            return losses.sequence_cross_entropy(pred, target, lengths, mask, reduction)
        pred = torch.randn(B, T, V, generator=gen)
        target = torch.randn(B, T + (mut == "shape"), V, generator=gen)
        if mut == "pred_dtype":
            pred = (pred * 3).long()
        if mut == "target_dtype":
            target = (target * 3).long()
        held.update(pred=pred, target=target, mask=mask)
        return losses.sequence_mse(pred, target, lengths, mask, reduction)

    def check(result):
        pred, target, mask = held["pred"], held["target"], held["mask"]
        if mask is None:
            steps = torch.arange(T).unsqueeze(0)
            mask = steps < (lengths.unsqueeze(1) if lengths is not None else T)
            mask = mask.expand(B, T)
        if fn == "cross_entropy":
            per = F.cross_entropy(pred.reshape(-1, V), target.reshape(-1), reduction="none")
            per = per.view(B, T)
            n = mask.sum()
        else:
            per = ((pred - target) ** 2).sum(-1)
            n = mask.sum() * V
        per = per * mask
        if reduction == "none":
            close(result, per, "per-step loss")
        elif reduction == "sum":
            close(result, per.sum(), "sum")
        else:
            expect = per.sum() / n if n > 0 else per.sum() * 0  # documented: empty -> 0
            close(result, expect, "mean")

    return Case("losses", what, run, check, bad)


# ------------------------------------------------------------------ attention


@st.composite
def attention_case(draw) -> Case:
    fn = draw(st.sampled_from(["sdpa", "mha"]))
    mut = _mutation(draw, ["dtype", "features"])
    B, Tq, S = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h = draw(st.integers(1, 2))
    d = h * draw(st.integers(1, 3))
    causal = draw(st.booleans()) and Tq <= S
    use_key_mask = draw(st.booleans())
    dtype = _tensor_dtype(draw, mut)
    bad: tuple[str, ...] = ("query", "key", "value") if mut in ("dtype", "features") else ()
    seed = draw(st.integers(0, 2**16))
    what = (
        f"{fn}(B={B}, T={Tq}, S={S}, heads={h}, d={d}, dtype={dtype}, causal={causal}, "
        f"key_mask={use_key_mask}, mutation={mut!r})"
    )
    held: dict = {}

    def run():
        gen = torch.Generator().manual_seed(seed)
        fdt = dtype if dtype.is_floating_point else torch.float32
        q = _make((B, Tq, d), dtype, gen)
        kv = _make((B, S, d + (mut == "features")), dtype, gen)
        key_mask = None
        if use_key_mask:
            key_mask = torch.rand(B, S, generator=gen) < 0.7
            key_mask[:, -1] = True
        held.update(q=q, kv=kv, key_mask=key_mask)
        if fn == "sdpa":
            return seqlab.scaled_dot_product_attention(
                q, kv, kv, key_mask=key_mask, is_causal=causal
            )[0]
        torch.manual_seed(seed)
        mha = seqlab.MultiHeadAttention(d, h).to(fdt)
        held["mha"] = mha
        return mha(q, kv, kv, key_mask=key_mask, is_causal=causal).output

    def check(result):
        q, kv, key_mask = held["q"], held["kv"], held["key_mask"]
        Tq_, S_ = q.shape[1], kv.shape[1]
        allowed = torch.ones(B, Tq_, S_, dtype=torch.bool)
        if key_mask is not None:
            allowed &= key_mask[:, None, :]
        if causal:
            allowed &= torch.ones(Tq_, S_, dtype=torch.bool).tril(S_ - Tq_)
        if fn == "sdpa":
            scores = q @ kv.transpose(-1, -2) / math.sqrt(d)
            scores = scores.masked_fill(~allowed, -math.inf)
            w = torch.softmax(scores, -1).nan_to_num(0.0)
            close(result, w @ kv, "attention output")
            return
        mha = held["mha"]
        ref = nn.MultiheadAttention(d, h, batch_first=True).to(q.dtype)
        ref.in_proj_weight.data.copy_(mha.in_proj_weight)
        ref.in_proj_bias.data.copy_(mha.in_proj_bias)
        ref.out_proj.load_state_dict(mha.out_proj.state_dict())
        rows_alive = allowed.any(-1)  # torch returns NaN for a fully masked row
        expect, _ = ref(q, kv, kv, attn_mask=(~allowed).repeat_interleave(h, 0), need_weights=False)
        close(result[rows_alive], expect[rows_alive], "attention output")

    return Case("attention", what, run, check, bad)


AREAS: dict[str, Any] = {
    "layers": layer_case,
    "cells": cell_case,
    "wrappers": wrapper_case,
    "engine": engine_case,
    "models": lm_case,
    "model configs": config_case,
    "decoding": decoding_case,
    "losses": loss_case,
    "attention": attention_case,
}
