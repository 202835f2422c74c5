"""Learning-rate schedules with plain-number state (JSON checkpoints, exact resume).

Each schedule owns an optimiser and writes ``group["lr"]`` for every parameter group.
``base_lr`` is each group's learning rate when the schedule is created.

* :class:`WarmupCosine` — per optimiser step ``s`` (``s = 1`` after the first step):
  ``lr(s) = base_lr · s / W`` for ``s ≤ W`` (linear warm-up over ``W`` steps), then
  ``lr(s) = min_lr + (base_lr − min_lr) · ½ (1 + cos(π · p))`` with
  ``p = min(1, (s − W) / (S − W))`` for ``S`` total steps.
* :class:`LinearToFinal` — by training progress ``p ∈ [0, 1]`` (the share of the step or
  time budget used so far, whichever is larger): ``lr = base_lr · (1 − (1 − r) · p)``,
  a straight line from ``base_lr`` to ``r · base_lr`` (``r`` = ``min_lr_ratio``).
* :class:`ReduceOnPlateau` — per evaluation with a metric ``m``: if ``m`` has not improved
  on the best by more than ``threshold`` (relative) for more than ``patience`` evaluations,
  ``lr ← max(lr · factor, min_lr)``.

All expose ``step(metric=None)``, ``state_dict()`` and ``load_state_dict()``;
``on_metric`` tells the trainer whether to call ``step`` after every optimiser step
(False) or after every evaluation with the monitored metric (True); ``on_progress`` schedules
get ``update(p)`` from the trainer before every optimiser step instead.
"""

from __future__ import annotations

import math

import torch


class WarmupCosine:
    """Linear warm-up then cosine decay to ``min_lr_ratio · base_lr`` (see module doc)."""

    on_metric = False

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_steps: int,
        total_steps: int,
        min_lr_ratio: float = 0.0,
    ) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps: expected >= 0, got {warmup_steps}")
        if total_steps < 1 or total_steps < warmup_steps:
            raise ValueError(
                f"total_steps: expected >= max(1, warmup_steps={warmup_steps}), got {total_steps}"
            )
        self.optimizer = optimizer
        self.warmup, self.total, self.min_ratio = warmup_steps, total_steps, min_lr_ratio
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.steps = 0
        self._apply()

    def factor(self, s: int) -> float:
        """``lr(s) / base_lr``."""
        if self.warmup > 0 and s <= self.warmup:
            return s / self.warmup
        span = max(self.total - self.warmup, 1)
        p = min(1.0, (s - self.warmup) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))

    def _apply(self) -> None:
        # the lr used by the *next* optimiser step is lr(steps + 1)
        f = self.factor(self.steps + 1)
        for g, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            g["lr"] = base * f

    def step(self, metric: float | None = None) -> None:
        self.steps += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"steps": self.steps, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.base_lrs = int(state["steps"]), list(state["base_lrs"])
        self._apply()


class LinearToFinal:
    """Linear annealing by training progress (see module doc); the trainer calls
    ``update(p)`` before each optimiser step, so a time budget can drive it too."""

    on_metric = False
    on_progress = True

    def __init__(self, optimizer: torch.optim.Optimizer, final_ratio: float) -> None:
        if not final_ratio >= 0:
            raise ValueError(f"min_lr_ratio: expected >= 0, got {final_ratio}")
        self.optimizer, self.final_ratio = optimizer, final_ratio
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.progress = 0.0

    def update(self, progress: float) -> None:
        self.progress = min(1.0, max(0.0, progress))
        f = 1.0 - (1.0 - self.final_ratio) * self.progress
        for g, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            g["lr"] = base * f

    def step(self, metric: float | None = None) -> None:
        pass

    def state_dict(self) -> dict:
        return {"progress": self.progress, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        self.base_lrs = list(state["base_lrs"])
        self.update(float(state["progress"]))


class ReduceOnPlateau:
    """Multiply the learning rate by ``factor`` when the metric stalls (see module doc)."""

    on_metric = True

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        mode: str = "min",
        factor: float = 0.5,
        patience: int = 2,
        threshold: float = 1e-4,
        min_lr: float = 0.0,
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min' or 'max', got {mode!r}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor: expected 0 < factor < 1, got {factor}")
        self.optimizer, self.mode, self.factor = optimizer, mode, factor
        self.patience, self.threshold, self.min_lr = patience, threshold, min_lr
        self.best: float | None = None
        self.bad = 0

    def _improved(self, m: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return m < self.best - abs(self.best) * self.threshold
        return m > self.best + abs(self.best) * self.threshold

    def step(self, metric: float | None = None) -> None:
        if metric is None:
            raise ValueError("metric: ReduceOnPlateau.step needs the monitored metric value")
        if self._improved(metric):
            self.best, self.bad = metric, 0
            return
        self.bad += 1
        if self.bad > self.patience:
            for g in self.optimizer.param_groups:
                g["lr"] = max(g["lr"] * self.factor, self.min_lr)
            self.bad = 0

    def state_dict(self) -> dict:
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        return {"best": self.best, "bad": self.bad, "lrs": lrs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad = state["best"], int(state["bad"])
        for g, lr in zip(self.optimizer.param_groups, state["lrs"], strict=True):
            g["lr"] = lr
