"""Task ``vowels``: JapaneseVowels speaker classification (many-to-one, multivariate series of
variable length).

Data: aeon's copy of the UCI set (Kudo et al. 1999): 9 male speakers saying /ae/, each
utterance a series of 7-29 frames × 12 LPC cepstrum coefficients. The official split: 270
training series (30 per speaker), 370 test series. Validation (checkpoint choice, by
cross-entropy since accuracy saturates on so few series): a seeded, per-speaker share
``valid_fraction`` of the training series; the test series are only read for the final score.
Features are standardised per coefficient with the training series' mean and deviation.
Model: :class:`seqlab.models.SequenceClassifier` on the dense frames (bidirectional LSTM,
max pooling over valid frames, chosen over mean pooling, a GRU and a wider layer by validation
loss on the seed-0 split; then dropout 0.5 and input noise 0.2 over 0.3 / 0.1, a weight EMA
and a shorter run, then two layers over one and attention pooling, then three layers over
two and a wider layer, by the chosen checkpoint's validation loss on the validation splits of
seeds 100-102). Baseline: 1-nearest-neighbour DTW on the raw series (:mod:`seqlab.tasks.dtw`),
trained on all 270 series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from seqlab.data.series import japanese_vowels, read_ts
from seqlab.models import ClassifierConfig, SequenceClassifier
from seqlab.tasks.base import (
    Task,
    TaskConfig,
    config_dict,
    count_parameters,
    fit,
    init_forget_bias,
    load_config,
)
from seqlab.tasks.batches import ShuffledBatches
from seqlab.tasks.dtw import _pad, nn1_dtw
from seqlab.tasks.memspan import (
    memory_span_callback,
    plot_memory_span,
    plot_probe_grads,
    record_memory_span,
)
from seqlab.tasks.phases import baseline, native_build, phase
from seqlab.tasks.plots import plot_losses
from seqlab.tasks.rundir import RunDir
from seqlab.training import hidden_grad_norms


@dataclass
class VowelsConfig(TaskConfig):
    hidden: int = 64  # recurrent units per direction (Transformer: model width)
    layers: int = 3  # stacked recurrent (or Transformer) layers
    bidirectional: bool = True  # read each series both ways (recurrent models)
    pool: str = "max"  # per-frame outputs to one vector: last | mean | max | attention
    dropout: float = 0.5  # dropout before the classifier head and between layers
    heads: int = 4  # attention heads (model=transformer only)
    noise: float = 0.2  # std of Gaussian noise added to the standardised training frames
    valid_fraction: float = 0.15  # share of each speaker's training series held out
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    epochs: int = 0  # passes over the training series (0: until max_steps or minutes)
    max_steps: int = 2000
    minutes: float = 10.0
    clock: str = "cpu"
    threads: int = 1
    eval_every: int = 25
    lr_final: float = 0.1
    baseline: bool = True  # 1-NN DTW on the same split
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: off)


def split_train(labels: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, valid): ``round(fraction · n_c)`` of each class ``c`` go to validation."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"valid_fraction: expected a value in [0, 1), got {fraction}")
    g = torch.Generator().manual_seed(seed)
    train, valid = [], []
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        idx = [idx[k] for k in torch.randperm(len(idx), generator=g).tolist()]
        k = round(fraction * len(idx))
        valid += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(valid)


def _ema(model: torch.nn.Module, decay: float):
    """torch's AveragedModel keeping the exponential moving average of ``model``'s weights
    (always in eval mode: it is only scored and saved), or None for ``decay = 0``."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"ema: expected a decay in [0, 1), got {decay}")
    if decay == 0.0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay)).eval()


class VowelsTask(Task):
    name = "vowels"
    description = "multivariate series classification, official split (accuracy)"
    dataset = "japanese_vowels"
    Config = VowelsConfig
    metric = "val_loss"
    higher_is_better = False

    def build(self, cfg: VowelsConfig, classes: int) -> SequenceClassifier:
        transformer = cfg.model == "transformer"
        model = SequenceClassifier(
            ClassifierConfig(
                classes,
                input_size=12,
                hidden_size=cfg.hidden,
                num_layers=cfg.layers,
                cell=cfg.model,
                bidirectional=cfg.bidirectional and not transformer,
                pooling=cfg.pool,
                dropout=cfg.dropout,
                impl=cfg.impl,
                nhead=cfg.heads,
            )
        )
        init_forget_bias(model)
        return model

    @staticmethod
    @torch.no_grad()
    def _logits(model, xs: list[Tensor], batch: int = 512) -> Tensor:
        out = []
        for i in range(0, len(xs), batch):
            x, lengths = _pad(xs[i : i + batch])
            out.append(model(x, lengths))
        return torch.cat(out)

    def _score(self, model, xs, ys) -> dict[str, float]:
        logits = self._logits(model, xs)
        y = torch.tensor(ys)
        return {
            "loss": float(F.cross_entropy(logits, y)),
            "acc": float((logits.argmax(-1) == y).double().mean()),
        }

    def train(self, cfg: VowelsConfig, run: RunDir, progress=None) -> dict[str, Any]:
        self.setup(cfg)
        with phase(progress, "data", self.data_name(cfg)) as info:
            series, labels = japanese_vowels("train")
            test_x, test_y = japanese_vowels("test")
            info.detail = f"{len(series)} training series, {len(test_x)} test series"
        native_build(progress, cfg.impl, cfg.model)
        classes = sorted(set(labels), key=int)
        tr, va = split_train(labels, cfg.valid_fraction, cfg.seed)
        frames = torch.cat([series[i] for i in tr])
        mean, std = frames.mean(0), frames.std(0)

        def norm(xs):
            return [(x - mean) / std for x in xs]

        xtr, ytr = norm([series[i] for i in tr]), [classes.index(labels[i]) for i in tr]
        xva, yva = norm([series[i] for i in va]), [classes.index(labels[i]) for i in va]
        xte, yte = norm(test_x), [classes.index(y) for y in test_y]
        val_base = self._valid_baselines(series, labels, tr, va, cfg, progress)
        model = self.build(cfg, len(classes))
        meta = {
            "task": self.name,
            "classes": classes,
            "mean": mean.tolist(),
            "std": std.tolist(),
            "config": config_dict(cfg),
        }
        run.log(
            kind="info",
            train=len(xtr),
            valid=len(xva),
            test=len(xte),
            parameters=count_parameters(model),
        )
        g = torch.Generator().manual_seed(cfg.seed)

        def collate(idx):
            x, lengths = _pad([xtr[i] for i in idx])
            if cfg.noise > 0:  # noise on valid frames only: padding stays exactly 0
                mask = (torch.arange(x.shape[1])[None, :] < lengths[:, None]).unsqueeze(-1)
                x = x + cfg.noise * torch.randn(x.shape, generator=g) * mask
            return x, lengths, torch.tensor([ytr[i] for i in idx])

        def loss_fn(model, batch):
            x, lengths, y = batch
            return F.cross_entropy(model(x, lengths), y)

        # With ema > 0 the weights evaluated and saved are θ̄ ← ema·θ̄ + (1 − ema)·θ after
        # every step (θ̄ = θ at the first), one model whose noise is averaged over ~1/(1 − ema)
        # steps; a resumed run restarts θ̄ from the resumed weights.
        averaged = _ema(model, cfg.ema)
        scored = averaged.module if averaged is not None else model

        def evaluate():
            return {f"val_{k}": v for k, v in self._score(scored, xva or xtr, yva or ytr).items()}

        probe = _span_norms(xva, yva) if cfg.model != "transformer" else None
        span = memory_span_callback(cfg, run, progress, probe)
        result = fit(
            model,
            cfg,
            ShuffledBatches(len(xtr), cfg.batch_size, cfg.seed, collate),
            loss_fn,
            evaluate,
            self.metric,
            False,
            run,
            on_best=lambda: run.save_model(scored, meta),
            progress=progress,
            epochs=cfg.epochs,
            callbacks=[
                *([lambda _t, _r: averaged.update_parameters(model)] if averaged else []),
                *([span] if span is not None else []),
            ],
        )
        with phase(progress, "evaluation", f"{len(xte)} test series"):
            model.load_state_dict(run.load_model_files()[0])
            model.eval()
            test = self._score(model, xte, yte)
        summary = {
            "task": self.name,
            "model": cfg.model,
            "test_acc": test["acc"],
            "test_size": len(xte),
            "val_acc": result.best.get("val_acc"),
            "val_loss": result.best.get("val_loss"),
            "steps": result.steps,
            "train_seconds": round(result.seconds, 1),
            "train_cpu_seconds": round(result.cpu_seconds, 1),
            "clock": cfg.clock,
            "stopped_by": result.stopped_by,
            "parameters": count_parameters(model),
        }
        if cfg.baseline:
            with phase(progress, "baseline", "1-NN DTW on the test series"):
                pred = nn1_dtw(series, labels, test_x)
                summary["baseline_1nn_dtw_acc"] = sum(
                    p == y for p, y in zip(pred, test_y, strict=True)
                ) / len(test_y)
        summary |= {f"val_{k}": v for k, v in val_base.items()}
        record_memory_span(span, summary)
        run.write_summary(summary)
        with phase(progress, "plots"):
            plot_memory_span(span, run, cfg.model)
            dtw = val_base.get("1nn_dtw_acc")
            plot_losses(
                run.events(),
                "val_acc",
                run.path / "loss.png",
                f"{self.name} ({cfg.model}): training loss and validation accuracy",
                baselines={"1-NN DTW": dtw} if dtw is not None else {},
                metric_label="validation accuracy",
                loss_label="training cross-entropy (nats/series)",
                higher_is_better=True,
                best_step=result.best.get("step"),  # kept by validation loss, not accuracy
            )
            plot_probe_grads(
                probe,
                model,
                run,
                f"{cfg.model}: ‖∂ℓ/∂h_t‖ of the class loss at each frame\nlongest validation "
                "series, top layer" + (" (both directions)" if cfg.bidirectional else ""),
                by_position=True,
            )
        return summary

    @staticmethod
    def _valid_baselines(series, labels, tr, va, cfg: VowelsConfig, progress) -> dict[str, float]:
        """Same-split baselines on the validation series: ``class_prior_loss``, the class
        prior's cross-entropy −mean log q(y) (q: training class shares; the live line compares
        the validation loss with it) and, with ``baseline``, ``1nn_dtw_acc`` (the loss plot's
        dashed line). Both go to the summary with a ``val_`` prefix."""
        if not va:
            return {}
        counts = {c: sum(labels[i] == c for i in tr) for c in set(labels)}
        prior = -sum(math.log(counts[labels[i]] / len(tr)) for i in va) / len(va)
        baseline(progress, "class prior", prior)
        out = {"class_prior_loss": prior}
        if cfg.baseline:
            with phase(progress, "baseline", f"1-NN DTW on the {len(va)} validation series"):
                pred = nn1_dtw([series[i] for i in tr], [labels[i] for i in tr],
                               [series[i] for i in va])  # fmt: skip
            right = sum(p == labels[i] for p, i in zip(pred, va, strict=True))
            out["1nn_dtw_acc"] = right / len(va)
        return out

    def load(self, run: RunDir):
        weights, meta = run.load_model_files()
        cfg = load_config(VowelsConfig, run)
        model = self.build(cfg, len(meta["classes"]))
        model.load_state_dict(weights)
        model.eval()
        return model, meta, cfg

    def evaluate(self, run: RunDir, progress=None) -> dict[str, Any]:
        model, meta, cfg = self.load(run)
        mean, std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
        xs, ys = japanese_vowels("test")
        score = self._score(
            model, [(x - mean) / std for x in xs], [meta["classes"].index(y) for y in ys]
        )
        return {"test_acc": score["acc"], "test_loss": score["loss"], "test_size": len(xs)}

    def predict(self, run: RunDir, inputs: list[str], **_: Any) -> list[str]:
        """Each input is a ``.ts`` file of 12-dimensional series; one line per series:
        ``file:index<TAB>predicted speaker<TAB>probability<TAB>label in the file``."""
        if not inputs:
            raise ValueError("inputs: give at least one .ts file of 12-dimensional series")
        model, meta, _cfg = self.load(run)
        mean, std = torch.tensor(meta["mean"]), torch.tensor(meta["std"])
        out = []
        for name in inputs:
            if not Path(name).is_file():
                raise ValueError(f"inputs: expected a .ts file, got {name!r} (no such file)")
            xs, ys, _ = read_ts(name)
            if xs[0].shape[1] != 12:
                raise ValueError(
                    f"{name}: expected 12 dimensions per frame (LPC coefficients), "
                    f"got {xs[0].shape[1]}"
                )
            p = torch.softmax(self._logits(model, [(x - mean) / std for x in xs]), -1)
            for i, (row, y) in enumerate(zip(p, ys, strict=True)):
                k = int(row.argmax())
                out.append(f"{name}:{i}\t{meta['classes'][k]}\t{float(row[k]):.3f}\t{y}")
        return out


def pick_series(text: str | None) -> tuple[Tensor, str | None, str]:
    """The series ``text`` names (the inspect page's input): ``N`` is the official test series N
    (from 0; empty or None: 0), ``FILE.ts`` or ``FILE.ts:N`` series N (default 0) of a ``.ts``
    file. Returns (the raw series (T, 12), its label in the file or None, a description)."""
    spec = (text or "").strip() or "0"
    if spec.isdigit():
        xs, ys = japanese_vowels("test")
        name, k = "official test series", int(spec)
    else:
        path, idx = (spec, "0") if Path(spec).is_file() else spec.rpartition(":")[::2]
        if not idx.isdigit() or not Path(path).is_file():
            raise ValueError(
                "text: expected a test series number (0-369) or FILE.ts[:N], got "
                + (repr(spec) if len(spec) <= 60 else f"{spec[:60]!r}… ({len(spec)} characters)")
            )
        xs, labels, _ = read_ts(path)
        ys = [y or None for y in labels]
        name, k = f"series of {path}", int(idx)
    if k >= len(xs):
        raise ValueError(f"text: series number expected in 0-{len(xs) - 1}, got {k}")
    if xs[k].shape[1] != 12:
        raise ValueError(
            f"text: expected 12 dimensions per frame (LPC coefficients), got {xs[k].shape[1]}"
        )
    return xs[k], ys[k], f"{name} {k} ({xs[k].shape[0]} frames)"


def _span_norms(xva: list[Tensor], yva: list[int]):
    """``norms(model)`` for the memory span: ‖∂ℓ/∂h_t‖ of the class loss ℓ over the frames
    of the longest validation series (top layer, both directions summed)."""
    if not xva:
        return None
    k = max(range(len(xva)), key=lambda i: len(xva[i]))
    x, y = xva[k][None], torch.tensor([yva[k]])

    def norms(model):
        loss = lambda logits, _none: F.cross_entropy(logits, y)  # noqa: E731
        return hidden_grad_norms(model, (x,), loss).h.tolist()

    return norms
