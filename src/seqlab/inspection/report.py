"""``seqlab inspect``: one HTML page showing what a trained recurrent run does on an input.

For each recurrent part (encoder, decoder, …), layer and direction: heatmaps of every gate,
the cell state and the hidden state over the input tokens; the most active and most
saturated units; the share of saturated gate activations per gate. For the whole model:
saliency ‖∂y/∂x_t‖ of the output ``y`` to each input vector ``x_t`` (the embedding the first
recurrent layer reads) and ‖∂L/∂h_t‖ of a loss ``L`` to every hidden state. Per task:

============  ==============================  ==============================================
task          output y (saliency)             loss L (gradient through time)
============  ==============================  ==============================================
shakespeare   top next-character logit        −log p(that character) after the text
sentiment     the predicted class's logit     −log p(predicted class)
g2p           log p(greedy transcription)     −log p(greedy transcription)
translate     log p(greedy translation), or   −log p(the same)
              log p(reference) with one
sunspots      the forecast                    squared error to the actual value (or ŷ²/2)
============  ==============================  ==============================================

(caption and errordetect: :mod:`seqlab.inspection.tagged`; vowels:
:mod:`seqlab.inspection.vowels`.)

plus attention maps and beams with scores (g2p, translate) and forecast vs actual with the
baselines (sunspots). "Saturated": a sigmoid gate below 0.05 or above 0.95 (|a| > 2.94), a tanh
value (LSTM ``g``, GRU ``n``, RNN ``h``) beyond ±0.95 (|a| > 1.83).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from seqlab import plots
from seqlab.inspection.page import Section, render
from seqlab.inspection.probe import Probe
from seqlab.inspection.tagged import DEFAULT_TEXT as TAGGED
from seqlab.inspection.tagged import inspect_tagged
from seqlab.runs import LoadedRun, load

SIGMOID_GATES = ("i", "f", "o", "r", "z")
TANH_VALUES = ("g", "n")
SAT = 0.05  # sigmoid within SAT of 0 or 1, tanh within SAT of ±1
MAX_UNITS = 32  # heatmaps show at most this many units (the most variable h)

DEFAULT_TEXT = {
    "shakespeare": "ROMEO:\nBut soft, what light through yonder window breaks?\n",
    "sentiment": "a moving, beautifully acted film, though the plot drags in the middle.",
    "g2p": "inspection",
    "vowels": "0",  # the first official test series
}
# Kinds with a page here (caption and errordetect: :mod:`.tagged`).
PAGES = ("shakespeare", "sentiment", "g2p", "sunspots", "translate", "vowels")


def shown(token: str) -> str:
    """A token as a table shows it: whitespace spelled out."""
    return {" ": "· (space)", "\n": "\\n (newline)", "\t": "\\t (tab)"}.get(token, token)


# ------------------------------------------------------------------------ statistics
def saturated_mask(name: str, values: Tensor) -> Tensor | None:
    """Bool mask of saturated entries of a traced gate, or None for states (c, LSTM h)."""
    if name in SIGMOID_GATES:
        return (values < SAT) | (values > 1 - SAT)
    if name in TANH_VALUES:
        return values.abs() > 1 - SAT
    if name == "a":  # RNN pre-activation: saturated where tanh(a) is
        return torch.tanh(values).abs() > 1 - SAT
    return None


def saturation(trace: dict[str, Tensor]) -> dict[str, float]:
    """Share of saturated entries per gate (T, H) of one layer direction."""
    out = {}
    for name, v in trace.items():
        m = saturated_mask(name, v)
        if m is not None and m.numel():
            out[name] = float(m.float().mean())
    return out


def top_units(trace: dict[str, Tensor], k: int = 5) -> tuple[list, list]:
    """(most active: [(unit, mean |h_t|)], most saturated: [(unit, share of saturated gate
    entries over all gates and steps)]), ``k`` each, from one (T, H) trace."""
    h = trace["h"]
    act = h.abs().mean(0)
    active = [(int(u), float(act[u])) for u in act.argsort(descending=True)[:k]]
    masks = [m for n, v in trace.items() if (m := saturated_mask(n, v)) is not None]
    if not masks:
        return active, []
    sat = torch.stack(masks).float().mean((0, 1))
    saturated = [(int(u), float(sat[u])) for u in sat.argsort(descending=True)[:k]]
    return active, saturated


def shown_units(h: Tensor, limit: int = MAX_UNITS) -> list[int]:
    """The units a heatmap shows: all if H ≤ limit, else the ``limit`` with the largest
    variance of h over time (in unit order)."""
    H = h.shape[-1]
    if limit >= H:
        return list(range(H))
    var = h.var(0) if h.shape[0] > 1 else h.abs()[0]
    return sorted(int(u) for u in var.argsort(descending=True)[:limit])


# ------------------------------------------------------------------------ the probe run
def _part_sections(
    probe: Probe, traces, grads, tokens_of: dict[str, list[str]], stem: str
) -> list[Section]:
    sections = []
    for name, per_k in traces.items():
        D = probe.directions(name)
        tokens = tokens_of.get(name)
        kind = probe.kind(name).split("_")[0].upper()
        sec = Section(f"{name} ({kind}): gates and states")
        if tokens is not None:
            sec.paragraphs.append(f"steps: {len(tokens)}; layers × directions: {len(per_k)}")
        for k, tr in enumerate(per_k):
            layer, d = divmod(k, D)
            where = f"layer {layer}" + ((", backward" if d else ", forward") if D == 2 else "")
            row = {n: v[0] for n, v in tr.items()}  # batch row 0: (T, H)
            units = shown_units(row["h"])
            H = row["h"].shape[-1]
            sub = Section(f"{name}, {where}")
            note = "" if len(units) == H else f" ({len(units)} of {H} units: h varies most)"
            fig = plots.trace_heatmaps(
                row,
                tokens,
                f"{name} ({kind}) {where}: {', '.join(row)} over the input{note}",
                units,
            )
            sub.figures.append((f"{stem}-{name}-k{k}-gates", fig, f"{name} {where}: per-step "
                                f"gates and states{note}"))  # fmt: skip
            sat = saturation(row)
            if sat:
                sub.figures.append((
                    f"{stem}-{name}-k{k}-saturation",
                    plots.saturation_bar(sat, f"{name} {where}: saturated share per gate"),
                    "fraction of saturated gate activations (sigmoid < 0.05 or > 0.95; "
                    "tanh beyond ±0.95)",
                ))  # fmt: skip
                sub.tables.append((["gate", "saturated share"], [[g, v] for g, v in sat.items()]))
            active, saturated = top_units(row)
            rows = [
                [i + 1, a[0], a[1], *(saturated[i] if i < len(saturated) else ("", ""))]
                for i, a in enumerate(active)
            ]
            sub.tables.append(
                (["rank", "most active unit", "mean |h|", "most saturated unit", "share"], rows)
            )
            sec.children.append(sub)
        g = grads.get(name)
        if g is not None:
            curves = {}
            for k, gk in enumerate(g):
                layer, d = divmod(k, D)
                if "h" in gk:
                    label = f"layer {layer}" + ((" bwd" if d else " fwd") if D == 2 else "")
                    curves[f"‖∂L/∂h_t‖ {label}"] = gk["h"]
                    if "c" in gk:
                        curves[f"‖∂L/∂c_t‖ {label}"] = gk["c"]
            sec.figures.append((
                f"{stem}-{name}-grad-through-time",
                plots.grad_through_time(curves, tokens, f"{name}: gradient of L through time"),
                f"{name}: ‖∂L/∂h_t‖ (and ‖∂L/∂c_t‖) at every step, log scale",
            ))  # fmt: skip
        sections.append(sec)
    return sections


def _probe_run(lr: LoadedRun, call, outputs) -> tuple[Probe, Any, Any, Any]:
    """Run ``call()`` under a probe; ``outputs(result) -> (y, L)``; returns (probe, result,
    saliency grads, loss grads)."""
    model = lr.model
    with torch.enable_grad(), Probe(model) as probe:
        result = call()
        y, loss = outputs(result)
        sal = probe.grad_norms(y, retain_graph=True)
        grads = probe.grad_norms(loss)
    return probe, result, sal, grads


def _saliency_section(sal, part: str, tokens: list[str], stem: str, what: str) -> Section:
    s = Section("saliency")
    x = sal[part][0]["x"]
    s.paragraphs.append(
        f"‖∂y/∂x_t‖ with y = {what}, x_t the vector the first {part} layer reads at step t."
    )
    s.figures.append((f"{stem}-saliency", plots.saliency_bar(x, tokens), f"saliency of {what}"))
    order = x.argsort(descending=True)[:5].tolist()
    s.tables.append((["input step", "token", "‖∂y/∂x_t‖"], [[t, shown(tokens[t]), float(x[t])]
                                                            for t in order]))  # fmt: skip
    return s


# ------------------------------------------------------------------------ per task
def _shakespeare(lr: LoadedRun, text: str, stem: str) -> tuple[list[str], list[Section]]:
    tokens = lr.tokens(text)
    ids = lr.encode(text)
    pred: dict[str, Any] = {}

    def outputs(result):
        logits = result[0][0, -1]
        k = int(logits.argmax())
        pred["char"] = lr.vocab.decode([k], strip_specials=False)
        pred["p"] = float(torch.softmax(logits.detach(), -1)[k])
        return logits[k], -F.log_softmax(logits, -1)[k]

    probe, _, sal, grads = _probe_run(lr, lambda: lr.model(ids), outputs)
    summary = [f"input: {len(tokens)} characters; predicted next character "
               f"{''.join(pred['char'])!r} with p = {pred['p']:.3f}"]  # fmt: skip
    sections = [_saliency_section(sal, "rnn", tokens, stem, "the top next-character logit")]
    sections += _part_sections(probe, probe.traces(), grads, {"rnn": tokens}, stem)
    return summary, sections


def _sentiment(lr: LoadedRun, text: str, stem: str) -> tuple[list[str], list[Section]]:
    tokens = lr.tokens(text)
    ids = lr.encode(text)
    lengths = torch.tensor([ids.shape[1]])
    pred: dict[str, Any] = {}

    def outputs(logits):
        k = int(logits[0].argmax())
        pred["label"] = lr.labels[k]
        pred["p"] = float(torch.softmax(logits[0].detach(), -1)[k])
        return logits[0, k], -F.log_softmax(logits[0], -1)[k]

    probe, _, sal, grads = _probe_run(lr, lambda: lr.model(ids, lengths), outputs)
    unk = [t for t, i in zip(tokens, ids[0].tolist(), strict=True) if i == lr.vocab.stoi["<unk>"]]
    summary = [f"input: {len(tokens)} words; predicted {pred['label']!r} with p = {pred['p']:.3f}"]
    if unk:
        summary.append(f"words unknown to the model (read as <unk>): {', '.join(unk)}")
    sections = [_saliency_section(sal, "encoder", tokens, stem, "the predicted class's logit")]
    sections += _part_sections(probe, probe.traces(), grads, {"encoder": tokens}, stem)
    return summary, sections


def _joiner(lr: LoadedRun):
    """How a target sequence is shown: phonemes and target words spaced, characters joined."""
    if lr.kind == "translate" and lr.config.tgt_tokens == "chars":
        return "".join
    return " ".join


def _seq2seq_input(lr: LoadedRun, text: str | None) -> tuple[str, list[str] | None]:
    """(the source as the model reads it, the reference target tokens or None). g2p: the
    first word of ``text``. translate: ``source`` or ``source<TAB>reference`` (a literal
    ``\\t`` too); without text, the first test item of the run's corpus and its reference."""
    if lr.kind == "g2p":
        text = text or DEFAULT_TEXT["g2p"]
        return (text.strip().split()[0] if text.strip() else DEFAULT_TEXT["g2p"]), None
    from seqlab.tasks.g2p import _tokens, load_groups, split_groups
    from seqlab.tasks.translate import _join

    cfg = lr.config
    if not text or not text.strip():
        if not cfg.data or not Path(cfg.data).is_file():
            raise ValueError(
                f"text: the run's corpus {cfg.data!r} is not there to pick an example from; "
                "give --text 'source sentence' (or 'source<TAB>reference')"
            )
        src, refs = split_groups(load_groups(cfg), cfg.seed)[2][0]
        return _join(src, cfg.src_tokens), refs[0]
    src, sep, ref = text.replace("\\t", "\t").partition("\t")
    if not src.strip():
        raise ValueError(f"text: expected a source sentence before the tab, got {text!r}")
    ref_tokens = _tokens(ref.strip("\n"), cfg.tgt_tokens) if sep else None
    if ref_tokens == []:
        raise ValueError(f"text: expected a reference after the tab, got {text!r}")
    return src.strip("\n"), ref_tokens


def _g2p_decode(lr: LoadedRun, src: Tensor, src_len: Tensor, beam: int):
    """(greedy output tokens, a section listing the beams with their scores or None)."""
    from seqlab.data import EOS

    def strip(ids: list[int]) -> list[int]:
        return ids[:-1] if ids and ids[-1] == EOS else ids

    with torch.no_grad():
        found = lr.model.generate(src, src_len, max_len=lr.config.max_len)
    phonemes = lr.decode(strip(found.tokens[0, : int(found.lengths[0])].tolist()))
    if beam <= 1:
        return phonemes, None
    from seqlab.data import BOS, PAD
    from seqlab.decoding import beam_search

    with torch.no_grad():  # the decoding protocol both model kinds follow (as the task does)
        beams = beam_search(lr.model, lr.model.start(src, src_len), BOS, lr.config.max_len,
                            beam, eos=EOS, pad=PAD, n_best=beam)  # fmt: skip
    rows = []
    join = _joiner(lr)
    for j in range(beam):
        ids = strip(beams.tokens[0, j, : int(beams.lengths[0, j])].tolist())
        rows.append([j + 1, join(lr.decode(ids)), float(beams.scores[0, j]),
                     float(beams.log_probs[0, j])])  # fmt: skip
    s = Section(f"beam search (beam size {beam})")
    s.paragraphs.append("score = log p / length (length penalty 1); best first.")
    what = "phonemes" if lr.kind == "g2p" else "translation"
    s.tables.append((["rank", what, "score", "log p"], rows))
    return phonemes, s


def _g2p(lr: LoadedRun, text: str | None, stem: str, beam: int):
    """g2p and translate: greedy output and beams, then the pair (source, greedy output, or
    the reference when translate's text gives one) read teacher-forced under the probe."""
    from seqlab.data import BOS, EOS

    model = lr.model
    word, ref = _seq2seq_input(lr, text)
    src_tokens = lr.tokens(word)
    src = lr.encode(word)
    src_len = torch.tensor([src.shape[1]])
    phonemes, beams = _g2p_decode(lr, src, src_len, beam)
    target = phonemes if ref is None else ref
    hyp_ids = lr.tgt_vocab.encode(target)
    tgt_in = torch.tensor([[BOS, *hyp_ids]])
    tgt_out = torch.tensor([[*hyp_ids, EOS]])
    dec_tokens = ["<bos>", *target]

    def outputs(result):
        logits = result[0][0]
        logp = -F.cross_entropy(logits, tgt_out[0], reduction="sum")
        return logp, -logp

    probe, result, sal, grads = _probe_run(lr, lambda: model(src, src_len, tgt_in), outputs)
    alpha = result[1]
    join = _joiner(lr)
    if lr.kind == "g2p":
        summary = [f"input word {word!r}: greedy transcription {join(phonemes) or '(empty)'}"]
        what, unit, out_unit = "log p(transcription)", "letters", "phoneme"
        forced = "its own transcription"
    else:
        summary = [f"source {word!r}: greedy translation {join(phonemes) or '(empty)'!r}"]
        unk = [t for t, i in zip(src_tokens, src[0].tolist(), strict=True)
               if i == lr.vocab.stoi["<unk>"]]  # fmt: skip
        if unk:
            summary.append(f"source tokens unknown to the model (read as <unk>): {unk}")
        if ref is not None:
            from seqlab.tasks.translate import scores

            unk_ref = [t for t in ref if t not in lr.tgt_vocab.stoi]
            if unk_ref:
                summary.append(f"reference tokens unknown to the model (read as <unk>): {unk_ref}")

            sc = scores([phonemes], [[ref]])
            summary.append(f"reference {join(ref)!r}: exact match {'yes' if sc['exact'] else 'no'}"
                           f", token error rate {sc['token_error_rate']:.3f}, sentence BLEU-4 "
                           f"{sc['bleu']:.3f}")  # fmt: skip
        forced = "the reference" if ref is not None else "its own greedy translation"
        what = f"log p({'reference' if ref is not None else 'greedy translation'})"
        unit, out_unit = "source tokens", "target token"
    sections = [_saliency_section(sal, "encoder", src_tokens, stem, what)]
    if alpha is not None:
        s = Section("attention")
        s.paragraphs.append(
            f"Row t: the weights α_t over the {unit} when the decoder, having read the token "
            f"on the left, predicts the next {out_unit} (teacher-forced on {forced}); each "
            "row sums to 1."
        )
        s.figures.append((f"{stem}-attention", plots.attention_map(
            alpha[0].detach(), src_tokens, dec_tokens, f"attention for {word!r}"),
            f"attention weights α (output step × input {unit})"))  # fmt: skip
        a = alpha[0].detach()
        peak = a.argmax(-1).tolist()
        s.tables.append((["output step", "decoder reads", "predicts", "peak input", "weight"],
                         [[t, shown(dec_tokens[t]), shown([*dec_tokens[1:], "<eos>"][t]),
                           shown(src_tokens[j]), float(a[t, j])]
                          for t, j in enumerate(peak)]))  # fmt: skip
        sections.append(s)
    if beams is not None:
        sections.append(beams)
    tokens_of = {"encoder": src_tokens, "decoder": dec_tokens}
    sections += _part_sections(probe, probe.traces(), grads, tokens_of, stem)
    return summary, sections


def _sunspots_forecast(lr: LoadedRun, stem: str = "inspect"):
    """(the forecast-vs-actual section, first test window (1, W), its actual value, labels)."""
    from seqlab.tasks.sunspots import fit_ar, load_series, split_points, windows

    cfg = lr.config
    times, values = load_series(cfg)
    y = torch.tensor(values, dtype=torch.float32)
    n = len(y)
    val_start, test_start = split_points(n)
    z = (y - lr.mean) / lr.std
    targets = [t for t in range(test_start, n) if t >= cfg.window]
    xte, _ = windows(z, cfg.window, targets)
    with torch.no_grad():
        forecast = lr.model(xte) * lr.std + lr.mean
    actual = y[targets]
    coef = fit_ar(y, cfg.ar_order, val_start)
    xa, _ = windows(y, cfg.ar_order, targets)
    base = {
        f"seasonal naive (y[t−{cfg.season}])": torch.stack([y[t - cfg.season] for t in targets]),
        f"AR({cfg.ar_order})": xa @ coef[:-1] + coef[-1],
    }

    def rmse(p):
        return math.sqrt(float(((p - actual) ** 2).mean()))

    sec = Section("forecast vs actual (test period)")
    sec.figures.append((f"{stem}-forecast", plots.forecast_plot(
        [times[t] for t in targets], actual, forecast, base,
        f"one-step-ahead forecasts from {times[targets[0]]}", "value"),
        "model forecast, actual values and the baselines"))  # fmt: skip
    sec.tables.append((["forecaster", "RMSE"], [["model", rmse(forecast)]]
                       + [[k, rmse(v)] for k, v in base.items()]))  # fmt: skip
    labels = [str(times[t]) for t in range(targets[0] - cfg.window, targets[0])]
    return sec, xte[:1], float(actual[0]), labels


def _sunspots_window(lr: LoadedRun, text: str | None):
    """(window (1, W) standardised, actual next value or None, step labels)."""
    cfg = lr.config
    if not text:
        _, x, actual, labels = _sunspots_forecast(lr)
        return x, actual, labels
    hist = [float(v) for v in text.replace(",", " ").split()]
    if len(hist) < cfg.window:
        raise ValueError(f"text: need at least window={cfg.window} numbers, got {len(hist)}")
    x = lr.encode(" ".join(str(v) for v in hist[-cfg.window :]))
    return x, None, [f"{v:g}" for v in hist[-cfg.window :]]


def _sunspots(lr: LoadedRun, text: str | None, stem: str) -> tuple[list[str], list[Section]]:
    sec = _sunspots_forecast(lr, stem)[0]
    x, actual, labels = _sunspots_window(lr, text)
    true = None if actual is None else (actual - lr.mean) / lr.std

    def outputs(pred):
        p = pred[0]
        return p, 0.5 * (p - true) ** 2 if true is not None else 0.5 * p**2

    probe, pred, sal, grads = _probe_run(lr, lambda: lr.model(x), outputs)
    value = float(pred[0].detach()) * lr.std + lr.mean
    summary = [f"window of {lr.config.window} values → forecast {value:.2f}"
               + (f" (actual {actual:.2f})" if actual is not None else "")]  # fmt: skip
    part = probe.order[0]
    sections = [sec, _saliency_section(sal, part, labels, stem, "the forecast")]
    sections += _part_sections(probe, probe.traces(), grads, {part: labels}, stem)
    return summary, sections


def _transformer(lr: LoadedRun, text: str | None, stem: str, beam: int):
    """Transformer runs: every attention layer's weights (per head and head-averaged) for the
    input, plus the g2p beams and the sunspots forecasts as for recurrent runs."""
    from seqlab.inspection.probe import AttentionProbe

    model, cfg = lr.model, lr.config
    summary: list[str] = []
    sections: list[Section] = []
    if lr.kind in ("g2p", "translate"):
        from seqlab.data import BOS

        word, ref = _seq2seq_input(lr, text)
        src_tokens = lr.tokens(word)
        src = lr.encode(word)
        src_len = torch.tensor([src.shape[1]])
        phonemes, beams = _g2p_decode(lr, src, src_len, beam)
        target = phonemes if ref is None else ref
        tgt_in = torch.tensor([[BOS, *lr.tgt_vocab.encode(target)]])
        dec_tokens = ["<bos>", *target]
        call = lambda: model(src, src_len, tgt_in)  # noqa: E731
        what = "transcription" if lr.kind == "g2p" else "translation"
        summary.append(f"input {word!r}: greedy {what} {_joiner(lr)(phonemes)!r}"
                       + (f"; attention read on the reference {_joiner(lr)(ref)!r}"
                          if ref is not None else ""))  # fmt: skip
        if beams is not None:
            sections.append(beams)
    elif lr.kind == "vowels":
        from seqlab.inspection.vowels import overview

        summary, sections, x, _k = overview(lr, text, stem)
        src_tokens = dec_tokens = [str(t) for t in range(x.shape[1])]
        call = lambda: model(x, torch.tensor([x.shape[1]]))  # noqa: E731
    elif lr.kind == "sunspots":
        sections.append(_sunspots_forecast(lr, stem)[0])
        x, _actual, src_tokens = _sunspots_window(lr, text)
        dec_tokens = src_tokens
        call = lambda: model(x)  # noqa: E731
    else:
        src_tokens = lr.tokens(text or DEFAULT_TEXT[lr.kind])
        if lr.kind == "shakespeare":
            src_tokens = src_tokens[-cfg.context :]
        ids = lr.encode("".join(src_tokens) if lr.kind == "shakespeare" else text
                        or DEFAULT_TEXT[lr.kind])  # fmt: skip
        dec_tokens = src_tokens
        call = (lambda: model(ids)) if lr.kind == "shakespeare" else (
            lambda: model(ids, torch.tensor([ids.shape[1]])))  # fmt: skip
    with torch.no_grad(), AttentionProbe(model) as probe:
        call()
    for name, calls in probe.weights.items():
        w = calls[0][0]  # first call, batch row 0: (heads, T, S)
        decoder = "decoder" in name.split(".")[0]
        rows = dec_tokens if decoder else src_tokens
        cols = src_tokens if "multihead_attn" in name or not decoder else dec_tokens
        if tuple(w.shape[-2:]) != (len(rows), len(cols)):
            continue  # e.g. a cached call whose keys span more than this input
        sec = Section(f"attention: {name}")
        sec.figures.append((f"{stem}-{name}-mean", plots.attention_map(
            w.mean(0), cols, rows, f"{name}: mean over {w.shape[0]} heads"),
            f"{name}: attention weights averaged over the heads"))  # fmt: skip
        sec.figures.append((f"{stem}-{name}-heads", plots.attention_heads(
            w, cols, rows, f"{name}: each head"), f"{name}: each head's weights"))  # fmt: skip
        sections.append(sec)
    return summary, sections


def inspect_run(
    run_dir: str | Path, text: str | None = None, beam: int = 4
) -> tuple[Path, list[Path]]:
    """Write ``RUN/inspect.html`` and ``RUN/inspect/*.png`` for ``text`` (each task has a
    default example); returns (page path, PNG paths)."""
    lr = load(run_dir)
    if lr.kind not in PAGES and lr.kind not in TAGGED:
        raise ValueError(f"run: no inspect page for task {lr.task!r} yet")
    if lr.model.training:
        lr.model.eval()
    stem = "inspect"
    if lr.kind in TAGGED:
        summary, sections = inspect_tagged(
            lr, text, stem, _part_sections, _probe_run, _saliency_section
        )
    elif not lr.recurrent:
        summary, sections = _transformer(lr, text, stem, beam)
    elif lr.kind == "shakespeare":
        summary, sections = _shakespeare(lr, text or DEFAULT_TEXT["shakespeare"], stem)
    elif lr.kind == "sentiment":
        summary, sections = _sentiment(lr, text or DEFAULT_TEXT["sentiment"], stem)
    elif lr.kind in ("g2p", "translate"):
        summary, sections = _g2p(lr, text, stem, beam)
    elif lr.kind == "vowels":
        from seqlab.inspection.vowels import inspect_vowels

        summary, sections = inspect_vowels(lr, text, stem)
    else:
        summary, sections = _sunspots(lr, text, stem)
    meta = [f"run {lr.path} — task {lr.task}, model {lr.config.model}", *summary]
    page = lr.path / "inspect.html"
    pngs = render(f"seqlab inspect: {lr.path.name}", meta, sections, page, lr.path / "inspect")
    return page, pngs
