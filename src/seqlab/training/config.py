"""Training configuration, the result of a run, seeding and the loss-function convention."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn


@dataclass
class TrainConfig:
    """Everything :class:`~seqlab.training.Trainer` needs besides the model and data.

    Stopping: after ``max_steps`` optimiser steps, after ``epochs`` passes over the data,
    after ``time_budget_s`` seconds, or when the monitored metric has not improved for
    ``patience`` evaluations — whichever comes first (``None`` disables one). ``epochs``
    left at ``None`` means one pass only when neither ``max_steps`` nor ``time_budget_s`` is
    set: ``TrainConfig(max_steps=150)`` runs 150 steps, however many passes that takes
    (:meth:`epoch_limit`).
    ``time_budget_s`` counts from the start of each ``fit()`` call (a resumed run gets a
    fresh budget), on the ``clock`` chosen: ``"wall"`` time, or ``"cpu"``, this process's
    CPU time (reproducible on a shared machine). ``patience`` counts evaluations, so it
    needs ``eval_every``. ``schedule="linear"`` anneals the learning rate linearly to
    ``min_lr_ratio · lr`` over whichever budget (``max_steps`` or ``time_budget_s``) runs out
    first; ``lr_decay_on_stall`` multiplies the learning rate (and a schedule's base rates)
    after each evaluation that does not improve the monitored metric. ``eval_at_end`` adds a
    final evaluation of the last weights when the last step was not an evaluation step.
    """

    # length of training
    epochs: int | None = None  # None: 1 if no max_steps/time_budget_s, else unlimited
    max_steps: int | None = None
    time_budget_s: float | None = None
    clock: str = "wall"  # what time_budget_s counts: wall | cpu (this process's CPU time)
    # optimiser (ignored when an optimizer instance is given to the Trainer)
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    # learning-rate schedule: None | "cosine" (warm-up + cosine) | "plateau" | "linear"
    schedule: str | None = None
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    lr_decay_on_stall: float = 1.0
    # gradients
    clip_norm: float | None = None  # clip by global L2 norm
    clip_value: float | None = None  # clip each element to [-v, v]
    grad_accum: int = 1  # micro-batches per optimiser step
    # numerics and reproducibility
    bf16: bool = False  # torch.autocast on CPU with bfloat16
    seed: int | None = 0
    deterministic: bool = False
    # truncated BPTT (None = full BPTT on each batch)
    tbptt_k1: int | None = None
    tbptt_k2: int | None = None
    time_dim: int = 1
    stateful: bool = False  # carry the state from batch to batch (streams)
    # evaluation, early stopping, checkpoints
    eval_every: int | None = None
    monitor: str = "val_loss"
    mode: str = "min"
    patience: int | None = None
    eval_at_end: bool = False
    checkpoint_dir: str | None = None
    save_every: int | None = None
    # logging
    log_every: int = 1
    metrics_file: str | None = None  # default <checkpoint_dir>/metrics.jsonl
    progress: bool = False
    tensorboard_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def epoch_limit(self) -> int | None:
        """Passes over the data before stopping: ``epochs``, else 1 when no other budget is
        set, else None (the step or time budget decides)."""
        if self.epochs is not None:
            return self.epochs
        return 1 if self.max_steps is None and self.time_budget_s is None else None

    def validate(self) -> None:
        def positive(name: str, allow_none: bool = True) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")

        for name in ("epochs", "max_steps", "tbptt_k1", "tbptt_k2", "eval_every", "patience"):
            positive(name)
        for name in ("grad_accum", "log_every"):
            positive(name, allow_none=False)
        if self.save_every is not None:
            positive("save_every")
        if self.patience is not None and self.eval_every is None:
            raise ValueError("patience: early stopping counts evaluations; set eval_every too")
        if self.tbptt_k2 is not None and self.tbptt_k1 is None:
            raise ValueError("tbptt_k2: needs tbptt_k1 as well")
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', got {self.mode!r}")
        if self.schedule not in (None, "cosine", "plateau", "linear"):
            raise ValueError(
                f"schedule: expected None, 'cosine', 'plateau' or 'linear', got {self.schedule!r}"
            )
        if self.clock not in ("wall", "cpu"):
            raise ValueError(f"clock: expected 'wall' or 'cpu', got {self.clock!r}")
        if not 0 < self.lr_decay_on_stall <= 1:
            raise ValueError(
                f"lr_decay_on_stall: expected 0 < factor <= 1, got {self.lr_decay_on_stall}"
            )
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer: expected adam, adamw or sgd, got {self.optimizer!r}")
        for name in ("clip_norm", "clip_value", "time_budget_s"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"{name}: expected a positive number, got {v!r}")


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` returns. ``history`` has one record per logged step."""

    steps: int
    stopped: str  # max_steps | epochs | time_budget | early_stopping
    history: list[dict[str, Any]]
    evals: list[dict[str, Any]]
    best_metric: float | None
    best_path: str | None
    last_path: str | None


class NonFiniteLossError(FloatingPointError):
    """The loss or the gradient norm became NaN/Inf; training stopped before the update."""


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python ``random``, NumPy and torch; optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


def default_loss(model: nn.Module, batch: Any, state: Any = None, tbptt: bool = False) -> Any:
    """The loss convention used when no ``loss_fn`` is given.

    Without TBPTT: ``model.loss(batch)`` if the model has a ``loss`` method, else
    ``model(**batch)`` for a dict batch, ``model(*batch)`` for a tuple/list, ``model(batch)``
    otherwise; the result is the loss tensor, a tuple whose first item is the loss, or a
    dict with a ``"loss"`` entry. With TBPTT: ``model.loss(batch, state)`` or
    ``model(**batch, state=state)`` and the result must be ``(loss, new_state)``.
    """
    if tbptt:
        out = model.loss(batch, state) if hasattr(model, "loss") else model(**batch, state=state)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(
                "loss_fn: with TBPTT the model must return (loss, new_state), "
                f"got {type(out).__name__}"
            )
        return out
    if hasattr(model, "loss"):
        out = model.loss(batch)
    elif isinstance(batch, Mapping):
        out = model(**batch)
    elif isinstance(batch, (tuple, list)):
        out = model(*batch)
    else:
        out = model(batch)
    return as_loss(out)


def as_loss(out: Any) -> Tensor:
    """The loss tensor inside a model output (tensor, tuple with loss first, dict['loss'])."""
    if isinstance(out, Mapping):
        out = out["loss"]
    elif isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, Tensor) or out.numel() != 1:
        raise TypeError(
            f"loss_fn: expected a scalar loss tensor, got "
            f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}"
        )
    return out.reshape(())


class LossModule(nn.Module):
    """``forward(batch, state) -> (loss, state)``: one entry point, so DDP sees the forward."""

    def __init__(self, model: nn.Module, loss_fn: Callable | None, tbptt: bool) -> None:
        super().__init__()
        self.model, self.loss_fn, self.tbptt = model, loss_fn, tbptt

    def forward(self, batch: Any, state: Any = None) -> tuple[Tensor, Any]:
        if self.tbptt:
            fn = self.loss_fn or (lambda m, b, s: default_loss(m, b, s, tbptt=True))
            loss, state = fn(self.model, batch, state)
            return as_loss(loss), state
        if self.loss_fn is None:
            return default_loss(self.model, batch), None
        return as_loss(self.loss_fn(self.model, batch)), None


def model_config(model: nn.Module, given: dict | None) -> dict:
    """The model configuration stored in checkpoints and checked on resume: ``given``, else
    ``model.config`` (a dict or dataclass), else empty; as its JSON round trip."""
    cfg = given if given is not None else getattr(model, "config", None)
    if cfg is None:
        return {}
    if hasattr(cfg, "__dataclass_fields__"):
        cfg = asdict(cfg)
    return json.loads(json.dumps(cfg, default=str))  # the JSON view is what gets compared


def batch_rows(batch: Any) -> int:
    """Rows in a batch (first axis of its first non-scalar tensor), for throughput."""
    if isinstance(batch, Tensor):
        return batch.shape[0] if batch.dim() else 1
    items = batch.values() if isinstance(batch, dict) else batch
    for v in items if isinstance(items, Iterable) else ():
        if isinstance(v, Tensor) and v.dim():
            return v.shape[0]
    return 1
