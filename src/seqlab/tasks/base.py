"""What every task shares: its configuration dataclass, config resolution, the Task interface.

Configuration precedence (later wins): the task's dataclass defaults (the documented default
recipe, mirrored in ``configs/<task>.toml``) < a TOML file (``--config``) < ``--set key=value``
overrides < typed command-line options. Keys are flat; an unknown key or a value of the wrong
type is an error that lists what is valid.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from seqlab.functional.spec import cell_choices
from seqlab.tasks import (
    MODEL_KINDS,  # noqa: F401  (re-exported here; defined without torch)
    fitsafe,
)
from seqlab.tasks.checks import BadSetting, check_config
from seqlab.tasks.phases import phase
from seqlab.tasks.rundir import RunDir
from seqlab.tasks.threads import auto_threads
from seqlab.training import TrainConfig, Trainer

log = logging.getLogger(__name__)


@dataclass
class TaskConfig:
    """Fields every task has. The training ones map onto :class:`seqlab.training.TrainConfig`
    in :func:`fit`."""

    lr: float = 1e-3  # Adam learning rate (the peak rate when lr_final < 1)
    weight_decay: float = 0.0  # L2 weight decay of the optimiser
    clip: float = 1.0  # max global gradient norm (0: off)
    minutes: float = 10.0  # training budget, evaluations included
    max_steps: int = 0  # stop after this many optimiser steps (0: no step limit)
    eval_every: int = 200  # steps between evaluations
    patience: int = 0  # evaluations without improvement before stopping (0: never)
    log_every: int = 10  # steps averaged into one training-loss record of metrics.jsonl
    lr_decay: float = 1.0  # multiply lr by this after an evaluation that did not improve
    lr_final: float = 1.0  # anneal lr linearly to lr·lr_final over the budget (1.0: constant)
    clock: str = "wall"  # what `minutes` counts: wall time, or this process's CPU time ("cpu")
    model: str = "lstm"  # a recurrent cell kind (see `cell`) or transformer
    cell: str = ""  # recurrent cell kind, overrides model: rnn | lstm | gru | lnlstm | lngru | ...
    data: str = ""  # path to the user's own file; empty = the task's real dataset
    encoding: str = "utf-8"  # text encoding of ``data``
    limit: int = 0  # read only the first N items/plays of the dataset (0: all; for smoke tests)
    seed: int = 0  # random seed of the weights, the shuffles and the splits
    threads: int = 0  # torch intra-op threads; 0: 2, or fewer when the machine is busy
    batch_size: int = 64  # sequences per optimiser step
    impl: str = "seqlab"  # recurrent layers: seqlab (our engine) | torch (torch.nn, to compare)
    memory_span: bool = True  # at each evaluation, how far back ‖∂ℓ/∂h_t‖ reaches (recurrent)
    tensorboard: bool = False  # also log scalars to <run>/tensorboard (needs tensorboard)


@dataclass
class FitResult:
    steps: int = 0
    seconds: float = 0.0  # wall time
    cpu_seconds: float = 0.0  # CPU time of this process (all its threads)
    best: dict[str, Any] = field(default_factory=dict)
    stopped_by: str = ""


def fit(
    model: nn.Module,
    cfg: TaskConfig,
    train_data: Iterable,
    loss_fn: Callable,
    evaluate: Callable[[], dict[str, float]],
    metric: str,
    higher_is_better: bool,
    run: RunDir,
    on_best: Callable[[], None],
    progress: Callable[[dict[str, Any]], None] | None = None,
    epochs: int = 0,
    tbptt: int | None = None,
    tokens: Callable[[Any], int] | None = None,
    eval_at_start: bool = True,
    callbacks: list[Callable] | None = None,
) -> FitResult:
    """Train ``model`` with :class:`seqlab.training.Trainer` under the task settings ``cfg``.

    This is only the translation a run folder needs: task settings -> ``TrainConfig``
    (``minutes``/``clock`` -> time budget, ``lr_final`` -> the ``linear`` schedule, 0 ->
    off), and callbacks that write the run's ``metrics.jsonl`` events (training loss
    averaged over ``log_every`` steps, evaluations), report them to ``progress`` and call
    ``on_best`` (the task saves its checkpoint with its vocabularies) when ``metric``
    improves. ``loss_fn(model, batch)``, or ``loss_fn(model, batch, state) -> (loss,
    state)`` with ``tbptt`` (a stream read in chunks, state carried across batches).

    Crash safety (:mod:`seqlab.tasks.fitsafe`): the untrained model is evaluated and saved
    first (``eval_at_start``), so a diverged run never replaces it as the best; the full
    training state goes to ``run.last_checkpoint`` at every evaluation, at the end and on
    SIGINT/SIGTERM; with ``run.resuming`` training continues from it exactly.
    """
    train_cfg = TrainConfig(
        epochs=epochs or None,
        max_steps=cfg.max_steps or None,
        time_budget_s=cfg.minutes * 60,
        clock=cfg.clock,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        schedule="linear" if cfg.lr_final != 1.0 else None,
        min_lr_ratio=cfg.lr_final,
        lr_decay_on_stall=cfg.lr_decay,
        clip_norm=cfg.clip if cfg.clip > 0 else None,
        seed=None,  # setup() seeded torch before the model was built; keep that stream
        tbptt_k1=tbptt,
        stateful=tbptt is not None,
        eval_every=cfg.eval_every,
        eval_at_end=True,
        monitor=metric,
        mode="max" if higher_is_better else "min",
        patience=cfg.patience or None,
        tensorboard_dir=str(run.path / "tensorboard") if cfg.tensorboard else None,
    )
    start = cpu_start = 0.0  # set once the Trainer is built (its one-time imports excluded)
    window: list[float] = []
    seen = [0]  # tokens read so far
    if tokens is not None:
        inner = loss_fn

        def loss_fn(model, batch, *state):  # noqa: F811  (counts, then delegates)
            seen[0] += int(tokens(batch))
            return inner(model, batch, *state)

    def emit(event: dict[str, Any]) -> None:
        event = {**event, "elapsed": round(time.perf_counter() - start, 2)}
        run.log(**event)
        if progress is not None:
            progress(event)

    def on_step(trainer: Trainer, rec: dict) -> None:
        window.append(rec["loss"])
        if rec["step"] % cfg.log_every == 0:
            mean = sum(window) / len(window)
            window.clear()
            emit({"kind": "train", "step": rec["step"], "loss": mean,
                  "grad_norm": rec["grad_norm"], "lr": rec["lr"],
                  **({"tokens": seen[0]} if tokens is not None else {})})  # fmt: skip

    def on_eval(trainer: Trainer, rec: dict, improved: bool) -> None:
        emit({"kind": "eval", **rec})
        if improved:
            on_best()

    trainer = Trainer(
        model,
        train_data,
        train_cfg,
        loss_fn,
        val_data=(),
        metric_fn=lambda _model, _data: evaluate(),
        callbacks=[on_step, *(callbacks or ())],
        on_eval=[on_eval],
    )
    if progress is not None:
        progress({"kind": "start", "max_steps": cfg.max_steps, "budget_s": cfg.minutes * 60,
                  "metric": metric, "higher_is_better": higher_is_better})  # fmt: skip
    with phase(progress, "training"):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = fitsafe.run(trainer, run, train_data, metric, emit, on_best, eval_at_start)
    res = FitResult(out.steps, time.perf_counter() - start, time.process_time() - cpu_start)
    res.stopped_by = out.stopped
    sign = -1.0 if higher_is_better else 1.0
    res.best = min(out.evals, key=lambda e: sign * e[metric]) if out.evals else {}
    log.info("stopped after %d steps (%s), best %s", res.steps, res.stopped_by, res.best)
    return res


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` with a TOML literal value (``lr=3e-4``, ``model="gru"``); a value that is
    not valid TOML is taken as a bare string (``model=gru``)."""
    if "=" not in item:
        raise BadSetting(f"--set: expected key=value, got {item!r}")
    key, raw = (s.strip() for s in item.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def _coerce(cls: type, key: str, value: Any, where: str) -> Any:
    types = {f.name: f.type for f in fields(cls)}
    if key not in types:
        raise BadSetting(
            f"{where}: unknown setting {key!r}; valid settings: {', '.join(sorted(types))}"
        )
    default = getattr(cls(), key)
    kind = type(default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadSetting(
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
            raise BadSetting(f"{path}: invalid TOML: {e}") from None
        for k, v in table.items():
            values[k] = _coerce(cls, k, v, str(path))
    for item in overrides:
        k, v = parse_override(item)
        values[k] = _coerce(cls, k, v, "--set")
    for k, v in (options or {}).items():
        if v is not None:
            values[k] = _coerce(cls, k, v, f"--{k.replace('_', '-')}")
    cfg = cls(**values)
    check_config(cfg)  # ranges (batch_size >= 1, 0 < valid_fraction < 1, ...)
    _apply_cell(cfg)
    return cfg


def _apply_cell(cfg: Any) -> None:
    """``cell=KIND`` names the recurrent cell: checked against the registered kinds (read now,
    so kinds registered later are valid) and copied into ``model``, which the tasks read."""
    cell = getattr(cfg, "cell", "")
    if not cell:
        return
    choices = cell_choices()
    if cell not in choices:
        raise BadSetting(
            f"setting 'cell': expected one of {', '.join(repr(c) for c in choices)}, got {cell!r}"
        )
    cfg.model = cell


class Task:
    """Interface of a task. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]
    description: ClassVar[str]  # the job, without the data ("character-level language model")
    dataset: ClassVar[str]  # the bundled dataset used when ``data`` is empty (catalogue name)
    Config: ClassVar[type[TaskConfig]]
    metric: ClassVar[str]  # the validation metric the best checkpoint is chosen by
    higher_is_better: ClassVar[bool] = False
    #: model kinds besides the recurrent cells (``models`` adds the registered cell kinds)
    other_models: ClassVar[tuple[str, ...]] = ("transformer",)

    @property
    def models(self) -> tuple[str, ...]:
        """The ``model`` settings this task accepts: every registered cell kind's ``cell=``
        name (:func:`seqlab.functional.cell_choices`, read now, so kinds registered later
        count) and ``other_models``."""
        return cell_choices() + tuple(m for m in self.other_models if m not in cell_choices())

    def setup(self, cfg: TaskConfig) -> None:
        torch.set_num_threads(auto_threads(cfg.threads)[0])
        torch.manual_seed(cfg.seed)
        if cfg.model not in self.models:
            raise ValueError(
                f"model: unknown {cfg.model!r} for task {self.name}; "
                f"expected one of: {', '.join(self.models)}"
            )

    def data_name(self, cfg: TaskConfig) -> str:
        """The data a run reads: the user's file name, else the bundled dataset's name."""
        return Path(cfg.data).stem if cfg.data else self.dataset

    def describe(self, cfg: TaskConfig) -> str:
        data = f"your file {cfg.data}" if cfg.data else f"the bundled {self.dataset} dataset"
        return f"{self.description} on {data}"

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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def init_forget_bias(model: nn.Module, value: float = 1.0) -> None:
    """Start every forget gate at bias ``value`` (Jozefowicz et al. 2015): torch.nn's LSTM and
    every seqlab recurrent layer whose kind has a gate ``f`` (LSTM, LayerNorm LSTM, ...; the
    slice is read from the cell description). Cells (decoder stacks) keep their init, as before.

    The forget slice of ``b_ih`` is set to ``value`` and that of ``b_hh`` to 0, so the total is
    ``value`` for torch.nn's and seqlab's layers alike (same parameter names).
    """
    from seqlab.functional.spec import SPECS
    from seqlab.layers import RecurrentLayer

    for m in model.modules():
        if isinstance(m, nn.LSTM):
            gates: tuple[str, ...] = ("i", "f", "g", "o")
        elif isinstance(m, RecurrentLayer) and "f" in SPECS[m.mode].gates:
            gates = SPECS[m.mode].gates
        else:
            continue
        for name, p in m.named_parameters(recurse=False):
            if name.startswith(("bias_ih", "bias_hh")) and p.numel() % len(gates) == 0:
                H = p.numel() // len(gates)
                k = gates.index("f")
                with torch.no_grad():
                    p[k * H : (k + 1) * H].fill_(value if name.startswith("bias_ih") else 0.0)
