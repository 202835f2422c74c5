"""What every task shares: its configuration dataclass, config resolution, the Task interface.

Configuration precedence (later wins): the task's dataclass defaults (the documented default
recipe, mirrored in ``configs/<task>.toml``) < a TOML file (``--config``) < ``--set key=value``
overrides < typed command-line options. Keys are flat; an unknown key or a value of the wrong
type is an error that lists what is valid.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch

from seqlab.tasks.loop import LoopConfig
from seqlab.tasks.rundir import RunDir


@dataclass
class TaskConfig(LoopConfig):
    """Fields every task has (plus the loop's: lr, clip, minutes, max_steps, eval_every...)."""

    model: str = "lstm"  # lstm | gru | rnn | transformer
    data: str = ""  # path to the user's own file; empty = the task's real dataset
    encoding: str = "utf-8"  # text encoding of ``data``
    limit: int = 0  # read only the first N items/plays of the dataset (0: all; for smoke tests)
    seed: int = 0
    threads: int = 2  # torch intra-op threads
    batch_size: int = 64
    impl: str = "seqlab"  # recurrent layers: seqlab (our engine) | torch (torch.nn, to compare)


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` with a TOML literal value (``lr=3e-4``, ``model="gru"``); a value that is
    not valid TOML is taken as a bare string (``model=gru``)."""
    if "=" not in item:
        raise ValueError(f"--set: expected key=value, got {item!r}")
    key, raw = (s.strip() for s in item.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def _coerce(cls: type, key: str, value: Any, where: str) -> Any:
    types = {f.name: f.type for f in fields(cls)}
    if key not in types:
        raise ValueError(
            f"{where}: unknown setting {key!r}; valid settings: {', '.join(sorted(types))}"
        )
    default = getattr(cls(), key)
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(
            f"{where}: setting {key!r} expects {kind.__name__}, got {type(value).__name__} "
            f"{value!r}"
        )
    return value


def resolve_config(
    cls: type,
    toml_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    options: dict[str, Any] | None = None,
) -> Any:
    """Defaults < TOML file < ``key=value`` overrides < options (None values ignored)."""
    values: dict[str, Any] = {}
    if toml_file:
        path = Path(toml_file)
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: invalid TOML: {e}") from None
        for k, v in table.items():
            values[k] = _coerce(cls, k, v, str(path))
    for item in overrides:
        k, v = parse_override(item)
        values[k] = _coerce(cls, k, v, "--set")
    for k, v in (options or {}).items():
        if v is not None:
            values[k] = _coerce(cls, k, v, f"--{k.replace('_', '-')}")
    return cls(**values)


class Task:
    """Interface of a task. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    description: ClassVar[str]
    Config: ClassVar[type[TaskConfig]]
    metric: ClassVar[str]  # the validation metric the best checkpoint is chosen by
    higher_is_better: ClassVar[bool] = False
    models: ClassVar[tuple[str, ...]] = ("lstm", "gru", "rnn", "transformer")

    def setup(self, cfg: TaskConfig) -> None:
        torch.set_num_threads(max(1, cfg.threads))
        torch.manual_seed(cfg.seed)
        if cfg.model not in self.models:
            raise ValueError(
                f"model: unknown {cfg.model!r} for task {self.name}; "
                f"expected one of: {', '.join(self.models)}"
            )

    def train(self, cfg: TaskConfig, run: RunDir, progress=None) -> dict[str, Any]:
        """Train with ``cfg``, write checkpoints/metrics/plots into ``run``; return the summary."""
        raise NotImplementedError

    def evaluate(self, run: RunDir, progress=None) -> dict[str, Any]:
        """Recompute the held-out metrics of a finished run's best checkpoint."""
        raise NotImplementedError

    def predict(self, run: RunDir, inputs: list[str], **options: Any) -> list[str]:
        raise ValueError(f"task {self.name} has no predict; use seqlab generate")

    def generate(self, run: RunDir, prompt: str, **options: Any) -> str:
        raise ValueError(f"task {self.name} does not generate text; use seqlab predict")


def config_dict(cfg: TaskConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def load_config(cls: type, run: RunDir) -> Any:
    """The resolved configuration stored in a run folder."""
    return resolve_config(cls, run.path / "config.toml")
