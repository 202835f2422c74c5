"""Trained runs as Python objects: ``seqlab.load(run_dir)`` and the run-folder listing.

``load`` rebuilds a finished run's best checkpoint through the task's own ``load`` (so it is
the same model ``seqlab evaluate``/``predict`` use) and bundles it with the preprocessing
the task applies to raw input:

==================  ===========================================================
task                ``encode(text)`` -> model input          ``tokens(text)``
==================  ===========================================================
shakespeare         character ids (1, T)                      the characters
sentiment           word ids (1, T) (unknown words: <unk>)    the words
g2p                 letter ids (1, S)                         the letters
sunspots            standardised values (1, T) from numbers   the numbers
translate           source token ids (1, S) (unknown: <unk>)  the source words or characters
vowels              standardised series (1, T, 12)            the frame numbers 0 … T−1
==================  ===========================================================

vowels' ``text`` names a series: ``N`` (the official test series N, counted from 0; empty: 0)
or ``FILE.ts[:N]`` (series N of a ``.ts`` file of 12-dimensional series, default 0).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


@dataclass
class LoadedRun:
    """A trained run: ``model`` (eval mode), its ``task`` name, resolved ``config``, the
    vocabularies it was trained with and the run folder ``path``."""

    path: Path
    task: str  # the task's name as it wrote the run
    kind: str  # shakespeare | sentiment | g2p | sunspots | translate | vowels (stable names)
    config: Any
    model: nn.Module
    vocab: Any = None  # input vocabulary (source letters for g2p); None for sunspots
    tgt_vocab: Any = None  # g2p: the phoneme vocabulary; translate: the target vocabulary
    labels: list[str] | None = None  # sentiment, vowels: class names in logit order
    mean: float = 0.0  # sunspots: the training mean and standard deviation
    std: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- preprocessing
    def tokens(self, text: str) -> list[str]:
        """The input units the model reads, as strings (axis labels of the inspect page)."""
        if self.kind not in _KINDS.values():
            raise ValueError(f"text: seqlab.load has no preprocessing for task {self.task!r}")
        if self.kind == "sentiment":
            from seqlab.data import word_tokens

            return word_tokens(text)
        if self.kind == "sunspots":
            return [f"{v:g}" for v in self._numbers(text)]
        if self.kind == "g2p":
            return list(text.lower() if not self.config.data else text)
        if self.kind == "translate":
            from seqlab.tasks.g2p import _tokens

            return _tokens(text, self.config.src_tokens)
        if self.kind == "vowels":
            return [str(t) for t in range(len(self.series(text)[0]))]
        return list(text)

    def series(self, text: str | None) -> tuple[Tensor, str | None, str]:
        """vowels: (the raw series (T, 12) named by ``text``, its label in the file or None,
        where it came from)."""
        if self.kind != "vowels":
            raise ValueError(f"text: task {self.task!r} reads no series")
        from seqlab.tasks.vowels import pick_series

        return pick_series(text)

    def _numbers(self, text: str) -> list[float]:
        try:
            values = [float(v) for v in text.replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"text: expected numbers separated by spaces, got {text!r}") from None
        if not values:
            raise ValueError("text: expected at least one number, got nothing")
        return values

    def encode(self, text: str) -> Tensor:
        """Model input for one raw example: ids (1, T) long, or (1, T) floats for sunspots."""
        if self.kind not in _KINDS.values():
            raise ValueError(f"text: seqlab.load has no preprocessing for task {self.task!r}")
        if self.kind == "sunspots":
            return torch.tensor([[(v - self.mean) / self.std for v in self._numbers(text)]])
        if self.kind == "vowels":
            x = self.series(text)[0]
            return ((x - torch.tensor(self.meta["mean"])) / torch.tensor(self.meta["std"]))[None]
        toks = self.tokens(text)
        if not toks:
            raise ValueError(f"text: nothing to read in {text!r}")
        if self.kind == "shakespeare":
            unknown = sorted({c for c in toks if c not in self.vocab})
            if unknown:
                raise ValueError(f"text: characters never seen in training: {unknown}")
        return torch.tensor([self.vocab.encode(toks)])

    def decode(self, ids: list[int] | Tensor) -> list[str]:
        """Output ids -> tokens (phonemes for g2p, characters for shakespeare)."""
        if isinstance(ids, Tensor):
            ids = ids.tolist()
        vocab = self.tgt_vocab if self.kind in ("g2p", "translate") else self.vocab
        if vocab is None:
            raise ValueError(f"decode: task {self.task} has no output vocabulary")
        return vocab.decode(ids)

    @property
    def recurrent(self) -> bool:
        """Whether the model has a recurrent core (False for the Transformer kinds)."""
        return self.config.model != "transformer"


def load(run_dir: str | Path) -> LoadedRun:
    """The trained model of a run folder and its preprocessing (see the module docstring).

    ``run_dir`` must be a finished run (``model.json`` and ``model.safetensors``).
    """
    from seqlab.tasks import RunDir, task_of_run  # lazily: `import seqlab` stays light

    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise FileNotFoundError(f"run_dir: no such folder {str(run.path)!r}")
    task = task_of_run(run)
    loaded = task.load(run)
    meta = json.loads((run.path / "model.json").read_text())
    model, cfg = loaded[0], loaded[-1]
    # A task without an entry still loads (model, config, meta); its preprocessing is the
    # task's own business until it is added to _KINDS.
    kind = _KINDS.get(type(task).__name__, task.name)
    out = LoadedRun(run.path, task.name, kind, cfg, model, meta=meta)
    if kind not in _KINDS.values():
        return out
    if kind == "shakespeare":
        out.vocab = loaded[1]
    elif kind == "sentiment":
        out.vocab, out.labels = loaded[1], list(loaded[2])
    elif kind in ("g2p", "translate"):
        out.vocab, out.tgt_vocab = loaded[1], loaded[2]
    elif kind == "vowels":
        out.labels = list(meta["classes"])
    else:
        out.mean, out.std = float(meta["mean"]), float(meta["std"])
    return out


# Task classes -> the kind of model and preprocessing (task names may change; classes stay).
_KINDS = {
    "ShakespeareTask": "shakespeare",
    "SentimentTask": "sentiment",
    "G2PTask": "g2p",
    "SunspotsTask": "sunspots",
    "TranslateTask": "translate",
    "VowelsTask": "vowels",
}


# -------------------------------------------------------------------- the runs listing
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _read_config(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


# The held-out number each task reports, with its direction (True: higher is better).
HEADLINE = {
    "shakespeare": ("val_nats", False),
    "charlm": ("val_nats", False),
    "sentiment": ("test_acc", True),
    "classify": ("test_acc", True),
    "g2p": ("test_per", False),
    "seq2seq": ("test_per", False),
    "sunspots": ("test_rmse", False),
    "forecast": ("test_rmse", False),
    "translate": ("test_bleu", True),
    "vowels": ("test_acc", True),
    "caption": ("test_exact", True),
    "errordetect": ("test_f05", True),
    "frames": ("test_macro_f1", True),
}


@dataclass
class RunInfo:
    """One row of ``seqlab runs``."""

    path: Path
    task: str
    model: str
    metric: str
    value: float | None
    steps: int | None
    seconds: float | None
    status: str  # finished | no checkpoint | running or stopped

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "task": self.task,
            "model": self.model,
            "metric": self.metric,
            "value": self.value,
            "steps": self.steps,
            "seconds": self.seconds,
            "status": self.status,
        }


def run_info(path: str | Path) -> RunInfo | None:
    """What a run folder holds, or None when ``path`` is not a run folder (no config.toml)."""
    path = Path(path)
    if not (path / "config.toml").is_file():
        return None
    cfg = _read_config(path / "config.toml")
    summary = _read_json(path / "summary.json")
    task = summary.get("task") or _read_json(path / "model.json").get("task") or ""
    if not task:  # a run that never saved a checkpoint: the folder name starts with the task
        task = path.name.rsplit("-", 2)[0]
    metric = HEADLINE.get(task, ("", False))[0]
    value = summary.get(metric)
    steps = summary.get("steps")
    seconds = summary.get("wall_seconds", summary.get("train_seconds"))
    if summary:
        status = "finished" + (f" ({summary['stopped_by']})" if summary.get("stopped_by") else "")
    elif (path / "model.safetensors").is_file():
        status = "checkpoint, no summary"
    else:
        status = "no checkpoint"
    if steps is None:  # unfinished: the last logged step
        events = path / "metrics.jsonl"
        if events.is_file():
            for line in reversed(events.read_text().splitlines()):
                try:
                    steps = json.loads(line).get("step")
                except json.JSONDecodeError:
                    continue
                if steps is not None:
                    break
    val = float(value) if isinstance(value, int | float) and math.isfinite(value) else None
    return RunInfo(
        path, task, str(cfg.get("model", summary.get("model", "?"))), metric, val, steps,
        seconds, status,
    )  # fmt: skip


def list_runs(root: str | Path = "runs") -> list[RunInfo]:
    """Every run folder directly under ``root`` (or ``root`` itself), oldest first."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"runs dir: no such folder {str(root)!r}")
    own = run_info(root)
    if own is not None:
        return [own]
    infos = [run_info(p) for p in sorted(root.iterdir()) if p.is_dir()]
    return sorted(
        (i for i in infos if i is not None), key=lambda i: (i.path / "config.toml").stat().st_mtime
    )
