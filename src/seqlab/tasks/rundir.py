"""A run folder: ``runs/<task>-<data>-<YYYYmmdd-HHMMSS>/`` (or ``runs/<name>/``, ``--name``).

=====================  ===============================================================
file                   content
=====================  ===============================================================
``config.toml``        the resolved configuration (defaults < TOML file < overrides)
``metrics.jsonl``      one JSON object per logged event (train steps, evaluations)
``model.safetensors``  the best checkpoint's weights (by the task's validation metric)
``model.json``         what is needed to rebuild the model: task, config, vocabularies
``summary.json``       the final metrics on the held-out split and the baselines
``*.png``              loss curves and the gradient-norm-through-time curve
=====================  ===============================================================
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


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


class RunDir:
    """Owns one run folder. ``RunDir.create`` makes a new one; ``RunDir(path)`` opens one."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, root: str | Path, task: str, stamp: bool = True) -> RunDir:
        """A new folder ``root/<task>-<time>``, or ``root/<task>`` exactly with ``stamp=False``
        (a name the user chose: an existing folder is an error, never reused)."""
        if not stamp:
            path = Path(root) / task
            if path.exists():
                raise ValueError(f"--name: {path} exists already; choose another name")
            path.mkdir(parents=True)
            return cls(path)
        base = Path(root) / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = base, 1
        while path.exists():  # two runs in the same second
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        path.mkdir(parents=True)
        return cls(path)

    def write_config(self, cfg: dict[str, Any]) -> None:
        (self.path / "config.toml").write_text(dump_toml(cfg))

    def log(self, **event: Any) -> None:
        event.setdefault("time", round(time.time(), 3))
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(event) + "\n")

    def events(self) -> list[dict[str, Any]]:
        f = self.path / "metrics.jsonl"
        if not f.exists():
            return []
        return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]

    def save_model(self, model: torch.nn.Module, meta: dict[str, Any]) -> None:
        tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(self.path / "model.safetensors"))
        (self.path / "model.json").write_text(json.dumps(meta, indent=1))

    def load_model_files(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        weights = self.path / "model.safetensors"
        if not weights.exists():
            raise FileNotFoundError(f"{self.path}: no model.safetensors (did training finish?)")
        meta = json.loads((self.path / "model.json").read_text())
        return load_file(str(weights)), meta

    def write_summary(self, summary: dict[str, Any]) -> None:
        (self.path / "summary.json").write_text(json.dumps(summary, indent=1))

    def summary(self) -> dict[str, Any]:
        return json.loads((self.path / "summary.json").read_text())
