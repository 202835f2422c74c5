"""Task ``frames``: an activity label for every step of a real sensor stream (synchronised
many-to-many).

Data: BasicMotions from aeon (official split: 40 training and 40 test recordings, 10 per
activity: Standing, Running, Walking, Badminton; each 100 steps at 10 Hz × 6 channels, a
smartwatch's 3-axis accelerometer then gyroscope). ``valid_per_class`` training recordings of
each activity are held out for checkpoint choice. What is synthetic: the streams. A stream
is whole recordings of one split end to end (:mod:`seqlab.tasks.framedata`), each step
labelled with its recording's activity; the order and so the joins are drawn at random,
every sample is real. Training windows are cut at random offsets from fresh random streams of
the training recordings; validation and test streams are ``eval_streams`` seeded orders of
the held-out training recordings and of the 40 test recordings (each recording once per
stream). No recording is in two splits. Channels are standardised with the training
recordings' mean and deviation.

Model: :class:`seqlab.models.SequenceTagger` on the 6 channels, ``y_t = W o_t + b``;
``bidirectional=false`` is the causal tagger (o_t reads steps ≤ t of its window), ``true``
the offline one. Streams are labelled through windows of ``window`` steps every ``hop``
steps (each step from its most-context window); the checkpoint kept is the one with the
best validation macro F1 (by validation cross-entropy, seed 0 kept the step-200 checkpoint
while validation accuracy rose from 97.8 to 98.5 % by step 1,300: the loss is dominated by
confident errors at the joins). Metrics: per-step accuracy, macro F1 (mean
of the 4 activities' F1) and each activity's F1. Baselines on the same streams: the majority
class of the training frames; logistic regression on one step's 6 channels; logistic
regression on a window of ``baseline_window`` steps, past (causal) and centred (offline);
their L2 weights chosen on the validation streams.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from seqlab.data.series import basic_motions, read_ts
from seqlab.models import SequenceTagger, TaggerConfig
from seqlab.tasks.base import (
    Task,
    TaskConfig,
    config_dict,
    count_parameters,
    fit,
    init_forget_bias,
    load_config,
)
from seqlab.tasks.framedata import (
    LogisticRegression,
    RandomWindows,
    Stream,
    compose,
    label_stream,
    permutations,
    scores,
    split_by_recording,
    window_features,
)
from seqlab.tasks.memspan import memory_span_callback, plot_memory_span, record_memory_span
from seqlab.tasks.phases import baseline, native_build, phase
from seqlab.tasks.plots import plot_losses
from seqlab.tasks.rundir import RunDir
from seqlab.training import hidden_grad_norms

CHANNELS = 6
STEPS = 100  # per BasicMotions recording
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


@dataclass
class FramesConfig(TaskConfig):
    hidden: int = 64  # recurrent units per direction
    layers: int = 2  # stacked recurrent layers
    bidirectional: bool = True  # false: the causal tagger (each step reads only the past)
    dropout: float = 0.2  # dropout on the inputs, between layers and before the tag layer
    noise: float = 0.1  # std of Gaussian noise added to the standardised training frames
    window: int = 200  # steps per window the tagger reads (training and labelling)
    hop: int = 100  # steps between the starts of the labelling windows (<= window)
    valid_per_class: int = 2  # training recordings of each activity held out for validation
    eval_streams: int = 5  # validation / test streams, each a seeded order of its recordings
    batches_per_epoch: int = 50  # training batches of random windows per epoch
    batch_size: int = 32
    lr: float = 3e-3
    max_steps: int = 1500
    minutes: float = 10.0
    clock: str = "cpu"
    threads: int = 1
    eval_every: int = 100
    lr_final: float = 0.1
    baseline_window: int = 21  # steps seen by the window logistic regression (odd)
    baseline: bool = True  # fit and score the baselines on the same split


@dataclass
class FramesData:
    classes: list[str]
    train: list[Tensor]  # standardised training recordings (validation ones removed)
    train_y: list[int]
    valid: list[Stream]
    test: list[Stream]
    mean: Tensor
    std: Tensor


def load_frames(
    cfg: FramesConfig, mean: Tensor | None = None, std: Tensor | None = None
) -> tuple[FramesData, tuple[list[int], list[int]]]:
    """(the split and the streams of the module doc, (training, validation) recording
    indices); ``mean``/``std``: a trained run's standardisation (default: the training
    recordings')."""
    for key in ("window", "hop", "eval_streams", "batches_per_epoch", "valid_per_class"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"{key}: expected an integer >= 1, got {getattr(cfg, key)}")
    if cfg.hop > cfg.window:
        raise ValueError(f"hop: expected at most window={cfg.window}, got {cfg.hop}")
    if cfg.data:
        raise ValueError(
            "data: the frames task reads BasicMotions from aeon only; label your own stream "
            f"with `seqlab predict RUN file.csv`, got data={cfg.data!r}"
        )
    xs, names = basic_motions("train")
    test_x, test_names = basic_motions("test")
    classes = sorted(set(names))
    ys, test_y = [classes.index(n) for n in names], [classes.index(n) for n in test_names]
    tr, va = split_by_recording(ys, cfg.valid_per_class, cfg.seed)
    if mean is None or std is None:
        frames = torch.cat([xs[i] for i in tr])
        mean, std = frames.mean(0), frames.std(0)

    def norm(rs):
        return [(r - mean) / std for r in rs]

    xs, test_x = norm(xs), norm(test_x)
    valid = [compose(xs, ys, o) for o in permutations(va, cfg.eval_streams, cfg.seed + 1)]
    n_test = list(range(len(test_x)))
    test = [compose(test_x, test_y, o) for o in permutations(n_test, cfg.eval_streams, cfg.seed)]
    return FramesData(classes, [xs[i] for i in tr], [ys[i] for i in tr], valid, test, mean, std), (
        tr,
        va,
    )


def frames_figure(probs: Tensor, true: Tensor, classes: list[str], title: str):
    """P(activity) of every step as an image (activities × steps), the true activity as a
    white line and the predicted one as black dots."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(20, 4 + probs.shape[0] / 60), 3.2))
    ax = fig.subplots()
    im = ax.imshow(probs.T.tolist(), aspect="auto", cmap="viridis", vmin=0, vmax=1,
                   interpolation="nearest")  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01, label="P(activity)")
    steps = list(range(probs.shape[0]))
    ax.step(steps, true.tolist(), where="mid", color="white", lw=2.5, label="true")
    ax.plot(steps, probs.argmax(-1).tolist(), ".", color="black", ms=2, label="predicted")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("step (10 per second)")
    ax.legend(loc="upper right", fontsize=7, facecolor="lightgrey")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


class FramesTask(Task):
    name = "frames"
    description = "an activity label per step of a sensor stream (accuracy, macro F1)"
    dataset = "basic_motions"
    Config = FramesConfig
    metric = "val_macro_f1"  # chosen over val_loss (module doc)
    higher_is_better = True
    other_models = ()  # recurrent cells only

    def build(self, cfg: FramesConfig, classes: int) -> SequenceTagger:
        model = SequenceTagger(
            TaggerConfig(
                classes,
                input_size=CHANNELS,
                hidden_size=cfg.hidden,
                num_layers=cfg.layers,
                cell=cfg.model,
                bidirectional=cfg.bidirectional,
                causal=not cfg.bidirectional,
                dropout=cfg.dropout,
            )
        )
        init_forget_bias(model)
        return model

    @staticmethod
    def stream_logits(model, cfg: FramesConfig, x: Tensor) -> Tensor:
        """Per-step logits (N, C) of one standardised stream, window by window."""
        was = model.training
        model.eval()
        out = label_stream(lambda w: model(w), x, cfg.window, cfg.hop, not cfg.bidirectional)
        model.train(was)
        return out

    def _score(self, model, cfg, streams: list[Stream], classes) -> dict[str, float]:
        logits = torch.cat([self.stream_logits(model, cfg, s.x) for s in streams])
        y = torch.cat([s.y for s in streams])
        return {"loss": float(F.cross_entropy(logits, y))} | scores(logits.argmax(-1), y, classes)

    def train(self, cfg: FramesConfig, run: RunDir, progress=None) -> dict[str, Any]:
        self.setup(cfg)
        with phase(progress, "data", self.data_name(cfg)) as info:
            data, (tr, va) = load_frames(cfg)
            n_val, n_test = sum(len(s.y) for s in data.valid), sum(len(s.y) for s in data.test)
            info.detail = (f"{len(tr)}/{len(va)}/40 recordings; {n_val:,} validation and "
                           f"{n_test:,} test steps")  # fmt: skip
        native_build(progress, cfg.impl, cfg.model)
        model = self.build(cfg, len(data.classes))
        meta = {
            "task": self.name,
            "classes": data.classes,
            "mean": data.mean.tolist(),
            "std": data.std.tolist(),
            "config": config_dict(cfg),
        }
        run.log(kind="info", train_recordings=len(tr), valid_recordings=len(va),
                test_recordings=40, valid_steps=n_val, test_steps=n_test,
                parameters=count_parameters(model))  # fmt: skip
        batches = RandomWindows(data.train, data.train_y, cfg.window, cfg.batch_size,
                                cfg.batches_per_epoch, cfg.noise, cfg.seed)  # fmt: skip

        def loss_fn(model, batch):
            x, y = batch
            logits = model(x)
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

        def evaluate():
            return {f"val_{k}": v for k, v in self._score(model, cfg, data.valid,
                                                          data.classes).items()}  # fmt: skip

        span = memory_span_callback(cfg, run, progress, _span_norms(data.valid[0], cfg.window))
        result = fit(
            model,
            cfg,
            batches,
            loss_fn,
            evaluate,
            self.metric,
            self.higher_is_better,
            run,
            on_best=lambda: run.save_model(model, meta),
            progress=progress,
            callbacks=[span] if span is not None else None,
        )
        with phase(progress, "evaluation", f"{n_test:,} test steps"):
            model.load_state_dict(run.load_model_files()[0])
            model.eval()
            test = self._score(model, cfg, data.test, data.classes)
        summary = {
            "task": self.name,
            "model": cfg.model,
            "bidirectional": cfg.bidirectional,
            **{f"test_{k}": v for k, v in test.items()},
            "test_steps": n_test,
            "val_loss": result.best.get("val_loss"),
            "val_acc": result.best.get("val_acc"),
            "val_macro_f1": result.best.get("val_macro_f1"),
            "steps": result.steps,
            "train_seconds": round(result.seconds, 1),
            "train_cpu_seconds": round(result.cpu_seconds, 1),
            "clock": cfg.clock,
            "stopped_by": result.stopped_by,
            "parameters": count_parameters(model),
        }
        if cfg.baseline:
            with phase(progress, "baselines"):
                summary |= self.baselines(cfg, data, progress)
        record_memory_span(span, summary)
        run.write_summary(summary)
        with phase(progress, "plots"):
            plot_memory_span(span, run, cfg.model)
            plot_losses(
                run.events(),
                "val_macro_f1",
                run.path / "loss.png",
                f"{self.name} ({cfg.model}): training loss and validation macro F1",
            )
            s = data.test[0]
            probs = torch.softmax(self.stream_logits(model, cfg, s.x), -1)
            kind = "offline" if cfg.bidirectional else "causal"
            fig = frames_figure(
                probs[:1000],
                s.y[:1000],
                data.classes,
                f"{kind} {cfg.model} tagger, first 1,000 steps of test stream 1",
            )
            fig.savefig(run.path / "frames.png", dpi=100)  # fmt: skip
        return summary

    @staticmethod
    def baselines(cfg: FramesConfig, data: FramesData, progress=None) -> dict[str, float]:
        """Majority class and the logistic regressions (module doc) on the model's streams.
        Their training streams: ``eval_streams`` seeded orders of the training recordings."""
        k = len(data.classes)
        orders = permutations(list(range(len(data.train))), cfg.eval_streams, cfg.seed + 2)
        train = [compose(data.train, data.train_y, o) for o in orders]
        ytr = torch.cat([s.y for s in train])
        yva = torch.cat([s.y for s in data.valid])
        yte = torch.cat([s.y for s in data.test])
        majority = int(torch.bincount(ytr, minlength=k).argmax())
        out = {f"baseline_majority_{m}": v for m, v in
               scores(torch.full_like(yte, majority), yte, data.classes).items()}  # fmt: skip
        variants = {
            "frame": lambda x: x,
            "window_causal": lambda x: window_features(x, cfg.baseline_window, False),
            "window_centred": lambda x: window_features(x, cfg.baseline_window, True),
        }
        for name, feats in variants.items():
            ftr = torch.cat([feats(s.x) for s in train])
            fva = torch.cat([feats(s.x) for s in data.valid])
            fte = torch.cat([feats(s.x) for s in data.test])
            fits = [LogisticRegression(k, l2).fit(ftr, ytr) for l2 in L2_GRID]
            val = [float((m.logits(fva).argmax(-1) == yva).double().mean()) for m in fits]
            j = max(range(len(fits)), key=lambda i: (val[i], -i))
            baseline(progress, f"logistic regression ({name})", val[j])
            got = scores(fits[j].logits(fte).argmax(-1), yte, data.classes)
            out |= {f"baseline_{name}_{m}": v for m, v in got.items()}
            out[f"baseline_{name}_l2"] = L2_GRID[j]
        return out

    def load(self, run: RunDir):
        weights, meta = run.load_model_files()
        cfg = load_config(FramesConfig, run)
        model = self.build(cfg, len(meta["classes"]))
        model.load_state_dict(weights)
        model.eval()
        return model, meta, cfg

    def evaluate(self, run: RunDir, progress=None) -> dict[str, Any]:
        model, meta, cfg = self.load(run)
        torch.set_num_threads(max(1, cfg.threads))
        data, _ = load_frames(cfg, torch.tensor(meta["mean"]), torch.tensor(meta["std"]))
        test = self._score(model, cfg, data.test, data.classes)
        return {f"test_{k}": v for k, v in test.items()} | {
            "test_steps": sum(len(s.y) for s in data.test)
        }

    def predict(self, run: RunDir, inputs: list[str], **_: Any) -> list[str]:
        """Each input is a stream file: a ``.ts`` file of 6-channel recordings (read end to
        end in file order; its labels are the true activities) or a ``.csv`` of 6 numbers per
        row (one row per step, an optional header). One line per step:
        ``file<TAB>step<TAB>predicted activity<TAB>probability<TAB>true activity or -``."""
        if not inputs:
            raise ValueError("inputs: give at least one .ts or .csv stream file")
        model, meta, cfg = self.load(run)
        mean, std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
        out = []
        for name in inputs:
            x, true = read_stream(name)
            p = torch.softmax(self.stream_logits(model, cfg, (x - mean) / std), -1)
            for t, (row, y) in enumerate(zip(p, true, strict=True)):
                k = int(row.argmax())
                out.append(f"{name}\t{t}\t{meta['classes'][k]}\t{float(row[k]):.3f}\t{y}")
        return out


def held_out_stream(
    text: str, classes: list[str], mean: Tensor, std: Tensor
) -> tuple[Stream, list[int]]:
    """(standardised stream, test recording numbers) for activity names in ``text`` (spaces or
    commas, any case): the next unused official test recording of each, in order."""
    names = text.replace(",", " ").split()
    if not names:
        raise ValueError(f"text: expected activity names ({', '.join(classes)}), got {text!r}")
    xs, ys = basic_motions("test")
    lower = [c.lower() for c in classes]
    used: set[int] = set()
    picked = []
    for name in names:
        if name.lower() not in lower:
            raise ValueError(f"text: unknown activity {name!r}; expected one of "
                             f"{', '.join(classes)}")  # fmt: skip
        c = classes[lower.index(name.lower())]
        free = [i for i, y in enumerate(ys) if y == c and i not in used]
        if not free:
            count = sum(y == c for y in ys)
            raise ValueError(f"text: asked for more {c} recordings than the test split's "
                             f"{count}")  # fmt: skip
        used.add(free[0])
        picked.append(free[0])
    stream = compose([(x - mean) / std for x in xs], [classes.index(y) for y in ys], picked)
    return stream, picked


def read_stream(name: str) -> tuple[Tensor, list[str]]:
    """(frames (N, 6), true label per step or "-") of a ``.ts`` or ``.csv`` stream file."""
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"inputs: expected a .ts or .csv file, got {name!r} (no such file)")
    if path.suffix.lower() == ".ts":
        xs, ys, _ = read_ts(path)
        if xs[0].shape[1] != CHANNELS:
            raise ValueError(f"{name}: expected {CHANNELS} channels per step, got "
                             f"{xs[0].shape[1]}")  # fmt: skip
        return torch.cat(xs), [y for x, y in zip(xs, ys, strict=True) for _ in range(len(x))]
    if path.suffix.lower() != ".csv":
        raise ValueError(f"inputs: expected a .ts or .csv file, got {name!r}")
    rows = []
    with open(path, encoding="utf-8", newline="") as fh:
        for i, row in enumerate(csv.reader(fh), start=1):
            if not row or (i == 1 and not _numeric(row)):
                continue  # a blank line, or the header
            if len(row) != CHANNELS or not _numeric(row):
                raise ValueError(f"{name}:{i}: expected {CHANNELS} numbers, got {row!r}")
            rows.append([float(v) for v in row])
    if not rows:
        raise ValueError(f"{name}: expected rows of {CHANNELS} numbers, got none")
    return torch.tensor(rows), ["-"] * len(rows)


def _numeric(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
    except ValueError:
        return False
    return True


def _span_norms(stream: Stream, window: int):
    """``norms(model)`` for the memory span: ‖∂ℓ/∂h_t‖ over the first validation window,
    ℓ the loss of its last step's label."""
    x, y = stream.x[None, :window], stream.y[window - 1 : window]
    if x.shape[1] < window:
        y = stream.y[-1:]

    def norms(model):
        loss = lambda logits, _none: F.cross_entropy(logits[:, -1], y)  # noqa: E731
        return hidden_grad_norms(model, (x,), loss).h.tolist()

    return norms
