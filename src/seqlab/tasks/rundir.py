"""A run folder: ``runs/<task>-<data>-<YYYYmmdd-HHMMSS>/`` (or ``runs/<name>/``, ``--name``).

=====================  ===============================================================
file                   content
=====================  ===============================================================
``config.toml``        the resolved configuration (defaults < TOML file < overrides)
``metrics.jsonl``      one JSON object per logged event (train steps, evaluations)
``model.safetensors``  the best checkpoint's weights (by the task's validation metric), with
                       a SHA-256 in its metadata checked on load
``last.safetensors``   full training state (optimiser, RNG, counters) for ``--resume``
``model.json``         what is needed to rebuild the model: task, config, vocabularies
``summary.json``       the final metrics on the held-out split and the baselines
``*.png``              loss curves and the gradient-norm-through-time curve
=====================  ===============================================================

Every file is replaced atomically (:mod:`seqlab.tasks.atomic`): a kill leaves the old or the
new version, never half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from seqlab.tasks.atomic import atomic_write_text, clean_temp_files, load_weights, save_weights
from seqlab.training.checkpoint import pid_alive


def toml_value(v: Any) -> str:
    """A TOML literal for a str/bool/int/float/list value (enough for flat configs)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # JSON string escapes are valid TOML basic strings
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"config value: expected str/bool/int/float/list, got {type(v).__name__}")


def dump_toml(cfg: dict[str, Any]) -> str:
    return "".join(f"{k} = {toml_value(v)}\n" for k, v in cfg.items())


def _clean_temp_dirs(root: Path) -> None:
    """Remove the hidden ``.<run>.tmp-<pid>`` folders of processes killed while creating."""
    for d in root.glob(".*.tmp-*"):
        pid = d.name.rsplit("-", 1)[-1]
        if d.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


class RunDir:
    """Owns one run folder. ``RunDir.create`` makes a new one; ``RunDir(path)`` opens one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.resuming = False  # set by `seqlab train --resume`: fit() continues last.safetensors
        self.outcome: tuple[str, str] | None = None  # ("diverged", why) after a failed fit()
        clean_temp_files(self.path)  # half-written files of killed processes

    @property
    def last_checkpoint(self) -> Path:
        """The full training checkpoint (weights, optimiser, RNG, counters) to resume from."""
        return self.path / "last.safetensors"

    @classmethod
    def create(
        cls, root: str | Path, task: str, config: dict[str, Any] | None = None, stamp: bool = True
    ) -> RunDir:
        """A new folder ``root/<task>-<time>``, or ``root/<task>`` exactly with ``stamp=False``
        (a name the user chose: an existing folder is an error, never reused). With ``config``
        the folder appears with its ``config.toml`` already in it (built as a hidden temp
        folder, then renamed), so a kill never leaves a run folder without its configuration."""
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        _clean_temp_dirs(root)
        if stamp:
            base = root / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"
            path, n = base, 1
            while path.exists():  # two runs in the same second
                n += 1
                path = base.with_name(f"{base.name}-{n}")
        else:
            path = root / task
            if path.exists():
                raise ValueError(f"--name: {path} exists already; choose another name")
        if config is None:
            path.mkdir()
            return cls(path)
        tmp = root / f".{path.name}.tmp-{os.getpid()}"
        tmp.mkdir()
        try:
            atomic_write_text(tmp / "config.toml", dump_toml(config))
            os.rename(tmp, path)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return cls(path)

    def write_config(self, cfg: dict[str, Any]) -> None:
        atomic_write_text(self.path / "config.toml", dump_toml(cfg))

    def log(self, **event: Any) -> None:
        event.setdefault("time", round(time.time(), 3))
        # One write() of one line in append mode: a kill loses at most this line's tail,
        # which events() skips.
        fd = os.open(self.path / "metrics.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(event) + "\n").encode())
        finally:
            os.close(fd)

    def events(self) -> list[dict[str, Any]]:
        f = self.path / "metrics.jsonl"
        if not f.exists():
            return []
        out = []
        for line in f.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill (or blank)
        return out

    def save_model(self, model: torch.nn.Module, meta: dict[str, Any]) -> None:
        atomic_write_text(self.path / "model.json", json.dumps(meta, indent=1))
        save_weights(self.path / "model.safetensors", model.state_dict())

    def load_model_files(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        weights = self.path / "model.safetensors"
        if not weights.exists():
            raise FileNotFoundError(f"{self.path}: no model.safetensors (did training finish?)")
        meta = json.loads((self.path / "model.json").read_text())
        return load_weights(weights), meta

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path / "summary.json", json.dumps(summary, indent=1))

    def write_text(self, name: str, text: str) -> None:
        """Any other text file of the run folder, written atomically."""
        atomic_write_text(self.path / name, text)

    def summary(self) -> dict[str, Any]:
        return json.loads((self.path / "summary.json").read_text())
