"""``seqlab compare``: several runs on one page — loss curves, held-out metric, baselines,
gradient through time — and a table.

The gradient-through-time curve of each run is measured now, on its trained model and one
shared input (the task's inspect example), with the model-level
:func:`seqlab.training.hidden_grad_norms`: ‖∂L/∂h_t‖ of the top recurrent layer of the
part nearest the output, L as in :mod:`seqlab.inspection.report`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from seqlab import plots
from seqlab.inspection.page import Section, render
from seqlab.runs import HEADLINE, LoadedRun, load, run_info
from seqlab.training import hidden_grad_norms

# Summary keys that hold a baseline's score on the same held-out split as the headline.
_BASELINE_SUFFIX = {"val_nats": "_nats", "test_acc": "_acc", "test_per": "", "test_rmse": "_rmse",
                    "test_bleu": "_bleu", "test_f05": "_f05"}  # fmt: skip


def baselines(summary: dict[str, Any], metric: str) -> dict[str, float]:
    """The baselines a run reports for ``metric`` (n-gram, naive Bayes, seasonal naive, AR)."""
    suffix = _BASELINE_SUFFIX.get(metric)
    if not suffix:
        return {}
    return {
        k: float(v)
        for k, v in summary.items()
        if k.endswith(suffix)
        and isinstance(v, int | float)
        and (k.startswith(("baseline_", "seasonal_", "ar_", "majority_")))
    }


def grad_curve(lr: LoadedRun, text: str | None = None) -> list[float] | None:
    """‖∂L/∂h_t‖ over the task's example input (None for Transformer, caption and errordetect
    runs). vowels: the class loss of the series ``text`` names; translate: the pair
    ``source<TAB>reference`` or the source and its greedy translation."""
    from seqlab.inspection.report import DEFAULT_TEXT

    if not lr.recurrent:
        return None
    model = lr.model.eval()
    if lr.kind in ("shakespeare", "sentiment"):
        ids = lr.encode(text or DEFAULT_TEXT[lr.kind])
        if lr.kind == "shakespeare":
            inputs: Any = ids
        else:
            inputs = (ids, torch.tensor([ids.shape[1]]))

        def loss(out, _second):
            logits = out[0, -1] if out.dim() == 3 else out[0]
            return -F.log_softmax(logits, -1)[int(logits.argmax())]

    elif lr.kind in ("g2p", "translate"):
        from seqlab.data import BOS, EOS
        from seqlab.inspection.report import _seq2seq_input

        word, ref = _seq2seq_input(lr, text)
        src = lr.encode(word)
        src_len = torch.tensor([src.shape[1]])
        if ref is None:
            with torch.no_grad():
                found = model.generate(src, src_len, max_len=lr.config.max_len)
            hyp = found.tokens[0, : int(found.lengths[0])].tolist()
            hyp = hyp[:-1] if hyp and hyp[-1] == EOS else hyp
        else:
            hyp = lr.tgt_vocab.encode(ref)
        inputs = (src, src_len, torch.tensor([[BOS, *hyp]]))
        target = torch.tensor([*hyp, EOS])

        def loss(logits, _attn):
            return F.cross_entropy(logits[0], target, reduction="sum")

    elif lr.kind == "vowels":
        x = lr.encode(text or DEFAULT_TEXT["vowels"])
        inputs = (x, torch.tensor([x.shape[1]]))

        def loss(logits, _none):
            return -F.log_softmax(logits[0], -1)[int(logits[0].argmax())]

    elif lr.kind == "sunspots":
        from seqlab.tasks.sunspots import load_series, split_points

        cfg = lr.config
        values = torch.tensor(load_series(cfg)[1], dtype=torch.float32)
        z = (values - lr.mean) / lr.std
        t = max(split_points(len(z))[1], cfg.window)
        inputs = z[t - cfg.window : t][None]

        def loss(pred, _none):
            return 0.5 * (pred[0] - z[t]) ** 2

        return hidden_grad_norms(model, inputs, loss, part="net.encoder").h.tolist()
    else:  # caption, errordetect: no shared example curve yet
        return None

    return hidden_grad_norms(model, inputs, loss).h.tolist()


def _label(path: Path, model: str, used: set[str]) -> str:
    label = model
    if label in used:
        label = f"{model} ({path.name})"
    used.add(label)
    return label


def compare_runs(
    run_dirs: list[str | Path], out_dir: str | Path | None = None, text: str | None = None
) -> tuple[Path, list[Path], list[list[Any]]]:
    """Write ``compare.html`` and ``compare.png`` into ``out_dir`` (default: a new
    ``compare-<time>`` folder next to the first run); returns (page, PNGs, table rows)."""
    if not run_dirs:
        raise ValueError("runs: expected at least one run folder, got none")
    infos = []
    for d in run_dirs:
        info = run_info(d)
        if info is None:
            raise ValueError(f"runs: {d} is not a run folder (no config.toml)")
        infos.append(info)
    kinds = {HEADLINE.get(i.task, ("", False))[0] for i in infos}
    if len(kinds) != 1:
        raise ValueError(
            "runs: expected runs of one task (the same held-out metric), got tasks "
            f"{sorted({i.task for i in infos})}"
        )
    metric = kinds.pop()
    curves, grads, base, rows = {}, {}, {}, []
    used: set[str] = set()
    for info in infos:
        from seqlab.tasks.rundir import RunDir

        run = RunDir(info.path)
        events = run.events()
        summary = run.summary() if (info.path / "summary.json").is_file() else {}
        label = _label(info.path, info.model, used)
        val_key = "val_nats" if metric == "val_nats" else "val_" + metric.removeprefix("test_")
        curves[label] = {
            "loss": [(e["step"], e["loss"]) for e in events if e.get("kind") == "train"],
            "metric": [
                (e["step"], e[val_key]) for e in events if e.get("kind") == "eval" and val_key in e
            ],  # fmt: skip
        }
        for k, v in baselines(summary, metric).items():
            base.setdefault(k, v)
        curve = None
        if (info.path / "model.safetensors").is_file():
            curve = grad_curve(load(info.path), text)
        if curve:
            grads[label] = curve
        span = memory_span(curve) if curve else None
        rows.append([label, info.task, info.value if info.value is not None else "",
                     info.steps or "", info.seconds or "", summary.get("parameters", ""),
                     span if span is not None else "", info.status, str(info.path)])  # fmt: skip
    if out_dir is None:
        out_dir = infos[0].path.parent / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig = plots.curves_overlay(curves, f"validation {metric.split('_', 1)[1]}", base, grads,
                               f"{infos[0].task}: {', '.join(curves)}")  # fmt: skip
    sec = Section("runs")
    sec.paragraphs.append(
        f"held-out metric: {metric}; memory span: steps back from the output over which "
        "‖∂L/∂h_t‖ stays above 1 % of its value at the last step (on the shared example)."
    )
    header = ["run", "task", metric, "steps", "seconds", "parameters", "memory span", "status",
              "folder"]  # fmt: skip
    sec.tables.append((header, rows))
    if base:
        sec.tables.append((["baseline", metric], [[k, v] for k, v in base.items()]))
    sec.figures.append(("compare", fig, "training loss, held-out metric with baselines, "
                        "and ‖∂L/∂h_t‖ through time"))  # fmt: skip
    page = out / "compare.html"
    pngs = render(f"seqlab compare: {len(infos)} runs", [str(i.path) for i in infos], [sec],
                  page, out)  # fmt: skip
    return page, pngs, [header, *rows]


def memory_span(norms: list[float], fraction: float = 0.01) -> int:
    """How many steps back from the last step ‖∂L/∂h_t‖ stays ≥ ``fraction`` × its value at
    the last step that carries gradient (the furthest t counting back without a drop below)."""
    vals = list(norms)
    while vals and vals[-1] == 0.0:
        vals.pop()
    if not vals:
        return 0
    ref = vals[-1] * fraction
    span = 0
    for v in reversed(vals[:-1]):
        if v < ref:
            break
        span += 1
    return span
