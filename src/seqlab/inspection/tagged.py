"""``seqlab inspect`` pages of the caption, errordetect and frames tasks (see :mod:`.report`).

============  ======================================  =======================================
task          output y (saliency)                     loss L (gradient through time)
============  ======================================  =======================================
caption       log p(greedy caption) = Σ_t log p(ŷ_t)  −log p(greedy caption)
errordetect   z_err − z_ok of the most suspect word   Σ_t −log p(predicted tag of word t)
frames        predicted activity's logit, last step   Σ_t −log p(predicted activity at step t)
============  ======================================  =======================================

caption: the input is a string of digits (``--text 7294``); the strip is composed from held-out
test images of those digits (as ``seqlab predict`` does), captioned greedily, then read again
teacher-forced with its own caption to get the attention α (words × columns) and the traces.
errordetect: the input is a sentence; the page lists every word with its P(error) and whether
it is flagged (P(error) above the threshold chosen on validation).
frames: the input names activities (``--text "walking running"``); the stream is made of the
next unused held-out test recording of each, end to end. The page shows the per-step predicted
against the true activity over the whole stream (labelled window by window, as ``seqlab
predict`` does) and a table per recording; saliency, gates and gradients are those of the
first window the tagger reads.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from seqlab import plots
from seqlab.data import Vocab, word_tokens
from seqlab.inspection.page import Section
from seqlab.runs import LoadedRun

DEFAULT_TEXT = {
    "caption": "7294",
    "errordetect": "the the film are a moving story , but its plot drags in the middle .",
    "frames": "Standing Walking Running Badminton",
}


def _caption(lr: LoadedRun, text: str, stem: str, part_sections, probe_run, saliency_section):
    from seqlab.tasks.caption import (
        CaptionTask,
        batch_strips,
        caption,
        caption_attention_figure,
    )

    model, cfg = lr.model, lr.config
    vocab = Vocab.from_list(lr.meta["vocab"])
    strip, idx = CaptionTask.held_out_strip(text.strip(), cfg)
    (words,) = caption(model, vocab, [strip])
    x, w = batch_strips([strip])
    tgt = torch.tensor([vocab.encode(words, bos=True, eos=True)])
    tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]
    got: dict[str, Any] = {}

    def outputs(result):
        logits, alpha = result
        got["alpha"] = alpha[0].detach()
        logp = F.log_softmax(logits[0], -1).gather(1, tgt_out[0].unsqueeze(1)).sum()
        got["logp"] = float(logp.detach())
        return logp, -logp

    probe, _, sal, grads = probe_run(lr, lambda: model(x, w, tgt_in), outputs)
    columns = [str(text.strip()[j // 8]) for j in range(strip.shape[1])]
    out_words = [*words, "<eos>"]
    summary = [
        f"input digits {text.strip()!r}: held-out test images {', '.join(map(str, idx))}; "
        f"greedy caption '{' '.join(words)}' (log p = {got['logp']:.3f})"
    ]
    att = Section("attention over the strip")
    att.paragraphs.append(
        "α_tj: the weight of column j while writing word t (each row sums to 1); the digit "
        "each column belongs to is its label."
    )
    att.figures.append((
        f"{stem}-attention",
        caption_attention_figure(strip, out_words, got["alpha"],
                                 f"attention while writing '{' '.join(words)}'"),
        "the strip, and the attention over its columns for each output word",
    ))  # fmt: skip
    peak = got["alpha"].argmax(-1).tolist()
    att.tables.append((
        ["word", "peak column", "digit there", "weight"],
        [[wd, j, columns[j], float(got["alpha"][t, j])]
         for t, (wd, j) in enumerate(zip(out_words, peak, strict=True))],
    ))  # fmt: skip
    sections = [att, saliency_section(sal, "encoder", columns, stem, "log p(greedy caption)")]
    sections += part_sections(
        probe, probe.traces(), grads, {"encoder": columns, "decoder": ["<bos>", *words]}, stem
    )
    return summary, sections


def _errordetect(lr: LoadedRun, text: str, stem: str, part_sections, probe_run, saliency_section):
    model = lr.model
    vocab = Vocab.from_list(lr.meta["vocab"])
    threshold = float(lr.meta["threshold"])
    words = word_tokens(text)
    if not words:
        raise ValueError(f"text: no words in {text!r}")
    ids = torch.tensor([vocab.encode(words)])
    lengths = torch.tensor([len(words)])
    got: dict[str, Any] = {}

    def outputs(logits):
        p = torch.softmax(logits[0].detach(), -1)[:, 1]
        got["p"] = p
        k = int(p.argmax())
        got["top"] = k
        tags = logits[0].detach().argmax(-1)
        loss = F.cross_entropy(logits[0], tags, reduction="sum")
        return logits[0, k, 1] - logits[0, k, 0], loss

    probe, _, sal, grads = probe_run(lr, lambda: model(ids, lengths), outputs)
    p = got["p"].tolist()
    unk = vocab.stoi.get("<unk>")
    flagged = [w for w, s in zip(words, p, strict=True) if s > threshold]
    marked = " ".join(f"[[{w}]]" if s > threshold else w for w, s in zip(words, p, strict=True))
    summary = [
        f"input: {len(words)} words; flagged {len(flagged)} (P(error) > {threshold:.3f}, the "
        f"threshold chosen on validation): {marked}"
    ]
    tagged = Section("tagged words")
    tagged.paragraphs.append(
        "[[word]]: flagged as an error; <unk>: a word not in the training vocabulary."
    )
    tagged.figures.append((
        f"{stem}-p-error",
        plots.saliency_bar(
            p, words, f"P(error) per word (threshold {threshold:.3f})", ylabel="P(error)"
        ),
        "P(error) of every word",
    ))  # fmt: skip
    tagged.tables.append((
        ["position", "word", "P(error)", "flagged", "read as"],
        [[t, w, s, "error" if s > threshold else "", "<unk>" if i == unk else w]
         for t, (w, s, i) in enumerate(zip(words, p, ids[0].tolist(), strict=True))],
    ))  # fmt: skip
    what = f"z_err − z_ok of the most suspect word ({words[got['top']]!r})"
    sections = [tagged, saliency_section(sal, "encoder", words, stem, what)]
    sections += part_sections(probe, probe.traces(), grads, {"encoder": words}, stem)
    return summary, sections


def _frames(lr: LoadedRun, text: str, stem: str, part_sections, probe_run, saliency_section):
    from seqlab.tasks.frames import STEPS, FramesTask, frames_figure, held_out_stream

    model, cfg, classes = lr.model, lr.config, lr.meta["classes"]
    mean, std = torch.tensor(lr.meta["mean"]), torch.tensor(lr.meta["std"])
    stream, picked = held_out_stream(text, classes, mean, std)
    probs = torch.softmax(FramesTask.stream_logits(model, cfg, stream.x), -1)
    pred = probs.argmax(-1)
    acc = float((pred == stream.y).double().mean())
    names = [classes[int(stream.y[i * STEPS])] for i in range(len(picked))]
    summary = [
        f"input: {' '.join(names)}: held-out test recordings {', '.join(map(str, picked))} end "
        f"to end, {len(stream.y)} steps; per-step accuracy {acc:.3f}"
    ]
    kind = "offline (bidirectional)" if cfg.bidirectional else "causal"
    labels = Section("per-step labels")
    labels.paragraphs.append(
        f"The {kind} tagger labels the stream through windows of {cfg.window} steps every "
        f"{cfg.hop} steps; each step keeps the label of the window that gives it the most "
        "context. White line: the true activity; black dots: the predicted one."
    )
    labels.figures.append((
        f"{stem}-frames",
        frames_figure(probs, stream.y, classes, f"{kind} tagger on {' '.join(names)}"),
        "P(activity) per step, the true and the predicted activity",
    ))  # fmt: skip
    rows, start = [], 0
    for name, i in zip(names, picked, strict=True):
        n = STEPS
        seg = pred[start : start + n]
        top = int(torch.bincount(seg, minlength=len(classes)).argmax())
        right = float((seg == classes.index(name)).double().mean())
        rows.append([i, name, f"{start}-{start + n - 1}", right, classes[top]])
        start += n
    labels.tables.append(
        (["test recording", "true activity", "steps", "labelled correctly", "most predicted"], rows)
    )
    w = min(cfg.window, len(stream.y))
    x = stream.x[None, :w]
    tokens = [str(t) for t in range(w)]
    got: dict[str, Any] = {}

    def outputs(logits):
        k = int(logits[0, -1].argmax())
        got["k"] = k
        tags = logits[0].detach().argmax(-1)
        return logits[0, -1, k], F.cross_entropy(logits[0], tags, reduction="sum")

    probe, _, sal, grads = probe_run(lr, lambda: model(x), outputs)
    what = f"the logit of {classes[got['k']]!r} at step {w - 1} (first window)"
    sections = [labels, saliency_section(sal, "encoder", tokens, stem, what)]
    sections += part_sections(probe, probe.traces(), grads, {"encoder": tokens}, stem)
    return summary, sections


def inspect_tagged(lr: LoadedRun, text: str | None, stem: str, part_sections, probe_run,
                   saliency_section):  # fmt: skip
    """(summary lines, sections) of a caption, errordetect or frames run; the report's helpers
    are passed in so this module does not import :mod:`.report` (which imports this one)."""
    fn = {"caption": _caption, "frames": _frames}.get(lr.task, _errordetect)
    return fn(lr, text or DEFAULT_TEXT[lr.task], stem, part_sections, probe_run, saliency_section)
