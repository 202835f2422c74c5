"""The training loop every seqlab model uses (any ``nn.Module`` whose loss we can compute).

Example — a many-to-one classifier, evaluated every 50 steps, best checkpoint by accuracy::

    from seqlab.training import Trainer, TrainConfig

    def loss_fn(model, batch):                     # batch: {"x": (B, T, I), "y": (B,)}
        return F.cross_entropy(model(batch["x"]), batch["y"])

    def metric_fn(model, val_data):                # called under torch.no_grad, eval mode
        return {"val_acc": accuracy(...), "val_loss": ...}

    cfg = TrainConfig(max_steps=500, lr=3e-3, schedule="cosine", warmup_steps=50,
                      clip_norm=1.0, eval_every=50, monitor="val_acc", mode="max",
                      checkpoint_dir="runs/cls", time_budget_s=300)
    result = Trainer(model, train_loader, cfg, loss_fn, val_data=val_loader,
                     metric_fn=metric_fn).fit()
    result.history            # [{"step", "loss", "grad_norm", "lr", "samples_per_s", ...}]

Language model with truncated BPTT over streams (``TrainConfig(tbptt_k1=..., stateful=True)``):
``loss_fn(model, batch, state) -> (loss, new_state)``; the trainer cuts each batch into
``k1``-step windows (see :mod:`seqlab.training.tbptt`), carries and detaches the state, and
makes one optimiser step per window (per ``grad_accum`` windows).

Without ``loss_fn`` the model's own loss is used (:func:`~seqlab.training.config.default_loss`).

One optimiser step: ``loss/grad_accum`` back-propagated per micro-batch; after
``grad_accum`` of them, clip by value (``clip_value``), measure the global gradient norm
``‖g‖ = sqrt(Σ_p ‖∇_p L‖²)`` and clip it to ``clip_norm``, refuse NaN/Inf (raise
:class:`NonFiniteLossError` without updating or saving), ``optimizer.step()``, schedule.

Resume (``fit(resume=path)``) restores weights, optimiser, schedule, counters, history,
RNG states and the carried state, re-creates the data iterator with the RNG of the epoch
start and skips the batches already used, so the losses continue exactly as in an
uninterrupted run with the same seed (single process, CPU, ``num_workers=0`` loaders).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqlab.training import checkpoint as ckpt
from seqlab.training import ddp
from seqlab.training.config import (
    LossModule,
    NonFiniteLossError,
    TrainConfig,
    TrainResult,
    batch_rows,
    seed_everything,
)
from seqlab.training.config import model_config as _model_config
from seqlab.training.logs import MetricsFile, Progress, TensorBoard
from seqlab.training.schedules import LinearToFinal, ReduceOnPlateau, WarmupCosine
from seqlab.training.tbptt import TBPTT, detach_state, window_forward_state

log = logging.getLogger("seqlab.training")


class Trainer:
    """Train ``model`` on ``train_data`` (any re-iterable of batches) — see module doc."""

    def __init__(
        self,
        model: nn.Module,
        train_data: Iterable,
        config: TrainConfig | None = None,
        loss_fn: Callable | None = None,
        val_data: Iterable | None = None,
        metric_fn: Callable[[nn.Module, Iterable], dict[str, float]] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        model_config: dict | None = None,
        callbacks: list[Callable[[Trainer, dict], None]] | None = None,
        on_eval: list[Callable[[Trainer, dict, bool], None]] | None = None,
    ) -> None:
        """``callbacks`` run after every optimiser step with its record; ``on_eval`` after
        every evaluation with ``(trainer, {"step", metrics...}, improved)`` — e.g. to save
        a checkpoint in one's own format when the monitored metric improves."""
        self.cfg = cfg = config or TrainConfig()
        cfg.validate()
        if hasattr(train_data, "__len__") and len(train_data) == 0:
            raise ValueError("train_data: zero-length dataset (no batches)")
        self.model, self.train_data, self.val_data = model, train_data, val_data
        self.metric_fn, self.callbacks = metric_fn, list(callbacks or [])
        self.on_eval = list(on_eval or [])
        self.tbptt = (
            TBPTT(cfg.tbptt_k1, cfg.tbptt_k2, cfg.time_dim) if cfg.tbptt_k1 is not None else None
        )
        self.model_config = _model_config(model, model_config)
        self._loss = LossModule(model, loss_fn, self.tbptt is not None)
        self._net = ddp.wrap_model(self._loss)
        self.optimizer = optimizer or self._make_optimizer()
        self.scheduler = scheduler if scheduler is not None else self._make_scheduler()
        self.main = ddp.is_main_process()
        d = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        self.last_path = d / "last.safetensors" if d else None
        self.best_path = d / "best.safetensors" if d else None
        mf = cfg.metrics_file or (str(d / "metrics.jsonl") if d else None)
        self.metrics = MetricsFile(mf) if mf and self.main else None
        # progress counters: the next unit to run is (epoch, batch_idx, window_idx)
        self.step = self.epoch = self.batch_idx = self.window_idx = 0
        self.history: list[dict] = []
        self.evals: list[dict] = []
        self.best: float | None = None
        self.bad_evals = 0
        self.carry: Any = None
        self._epoch_rng: tuple[dict, dict] | None = None
        self._resume_rng: tuple[dict, dict] | None = None
        self._pending: list[float] = []
        self._rows = 0
        self._stop: str | None = None
        self._final_eval = True

    # --- construction helpers -------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        c, params = self.cfg, self.model.parameters()
        if c.optimizer == "sgd":
            return torch.optim.SGD(params, c.lr, momentum=c.momentum, weight_decay=c.weight_decay)
        cls = torch.optim.AdamW if c.optimizer == "adamw" else torch.optim.Adam
        return cls(params, c.lr, betas=c.betas, weight_decay=c.weight_decay)

    def _make_scheduler(self) -> Any:
        c = self.cfg
        if c.schedule == "plateau":
            return ReduceOnPlateau(self.optimizer, c.mode, c.plateau_factor, c.plateau_patience)
        if c.schedule == "linear":
            if c.max_steps is None and c.time_budget_s is None:
                raise ValueError("schedule: 'linear' needs max_steps or time_budget_s")
            return LinearToFinal(self.optimizer, c.min_lr_ratio)
        if c.schedule == "cosine":
            total = c.max_steps
            known = hasattr(self.train_data, "__len__") and self.tbptt is None
            if total is None and c.epoch_limit() and known:
                total = c.epoch_limit() * len(self.train_data) // c.grad_accum
            if total is None:
                raise ValueError("schedule: 'cosine' needs max_steps (total steps unknown)")
            return WarmupCosine(self.optimizer, c.warmup_steps, max(total, 1), c.min_lr_ratio)
        return None

    # --- the loop -------------------------------------------------------------------
    def fit(self, resume: str | Path | bool | None = None) -> TrainResult:
        """Train until a stopping rule fires. ``resume``: a checkpoint file to continue from,
        or True for ``<checkpoint_dir>/last.safetensors`` when it exists (else start fresh)."""
        c = self.cfg
        if resume is True:
            resume = self.last_path if self.last_path and self.last_path.exists() else None
        if resume is not None and resume is not False:
            self.load(resume)
        elif c.seed is not None:
            seed_everything(c.seed, c.deterministic)
        elif c.deterministic:
            torch.use_deterministic_algorithms(True)
        self._t0, self._tlast = time.monotonic(), time.monotonic()
        self._clock = time.process_time if c.clock == "cpu" else time.monotonic
        self._budget0 = self._clock()
        self._bar = Progress(c.max_steps, enabled=c.progress and self.main, initial=self.step)
        self._tb = TensorBoard(c.tensorboard_dir if self.main else None)
        self.tensorboard = self._tb  # callbacks may log their own scalars next to the trainer's
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        try:
            while self._stop is None:
                if c.max_steps is not None and self.step >= c.max_steps:
                    self._stop = "max_steps"  # e.g. resumed from the final checkpoint
                    break
                if c.epoch_limit() is not None and self.epoch >= c.epoch_limit():
                    self._stop = "epochs"
                    break
                self._run_epoch()
            last_eval = self.evals[-1]["step"] if self.evals else None
            if (
                c.eval_at_end
                and self._final_eval
                and self.val_data is not None
                and last_eval != self.step
            ):
                self._evaluate_and_track()  # always finish with the last weights' metrics
        finally:
            self._bar.close()
            self._tb.close()
        if self.last_path is not None and self.main:
            self.save(self.last_path)
        return TrainResult(
            self.step,
            self._stop or "epochs",
            self.history,
            self.evals,
            self.best,
            str(self.best_path) if self.best_path and self.best_path.exists() else None,
            str(self.last_path) if self.last_path else None,
        )

    def request_stop(self, reason: str) -> None:
        """Stop after the current optimiser step, without the final evaluation (e.g. a
        callback reacting to Ctrl-C); ``fit()`` returns with ``stopped == reason``."""
        self._stop, self._final_eval = reason, False

    def _restore_resume_rng(self) -> None:
        if self._resume_rng is not None:
            ckpt.restore_rng(*self._resume_rng)  # back to the RNG of the checkpoint
            self._resume_rng = None

    def _run_epoch(self) -> None:
        skip = self.batch_idx
        if skip == 0 and self.window_idx == 0:
            self._restore_resume_rng()
            self._epoch_rng = ckpt.capture_rng()
            self.carry = None
        elif self._resume_rng is not None and self._epoch_rng is not None:
            ckpt.restore_rng(*self._epoch_rng)  # replay this epoch's data order, then skip
        sampler = getattr(self.train_data, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        seen = 0
        for i, batch in enumerate(self.train_data):
            seen += 1
            if i < skip:
                continue
            self._restore_resume_rng()
            self._run_batch(batch)
            if self._stop is not None:
                return
        self._restore_resume_rng()
        if seen == 0:
            raise ValueError("train_data: zero-length dataset (the iterator yielded no batches)")
        self.epoch, self.batch_idx, self.window_idx = self.epoch + 1, 0, 0

    def _run_batch(self, batch: Any) -> None:
        if self.tbptt is None:
            self._unit(batch, None, last_window=True)
            return
        if self.window_idx == 0 and not self.cfg.stateful:
            self.carry = None
        windows = self.tbptt.windows(self.tbptt.length(batch))
        for j in range(self.window_idx, len(windows)):
            start, grad_start, end = windows[j]
            state = window_forward_state(
                lambda m, b, s: self._net(b, s), None, batch, self.carry, self.tbptt, start,
                grad_start,
            )  # fmt: skip
            self._unit(self.tbptt.slice(batch, grad_start, end), state, j == len(windows) - 1)
            if self._stop is not None:
                return

    def _unit(self, batch: Any, state: Any, last_window: bool) -> None:
        """One micro-batch: forward, backward, position update, maybe an optimiser step."""
        c = self.cfg
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=c.bf16):
            loss, state = self._net(batch, state)
        if not ddp.is_distributed() and not torch.isfinite(loss):
            self._nonfinite(f"loss is {loss.item()}")
        (loss.float() / c.grad_accum).backward()
        self.carry = detach_state(state)
        self._pending.append(float(loss.detach()))
        self._rows += batch_rows(batch)
        if last_window:
            self.batch_idx, self.window_idx = self.batch_idx + 1, 0
        else:
            self.window_idx += 1
        if len(self._pending) == c.grad_accum:
            self._optimizer_step()

    def _nonfinite(self, what: str) -> None:
        good = self.last_path if self.last_path and self.last_path.exists() else None
        raise NonFiniteLossError(
            f"non-finite training value: {what} at step {self.step + 1} (epoch {self.epoch}, "
            f"batch {self.batch_idx}); stopped before the update. Last good checkpoint: "
            f"{good or 'none written'}. Lower the learning rate or set clip_norm."
        )

    def budget_used(self) -> float:
        """Share of the training budget spent: max(step / max_steps, time / time_budget_s)."""
        c, used = self.cfg, 0.0
        if c.max_steps is not None:
            used = self.step / c.max_steps
        if c.time_budget_s is not None:
            used = max(used, (self._clock() - self._budget0) / c.time_budget_s)
        return used

    def _optimizer_step(self) -> None:
        c, params = self.cfg, [p for p in self.model.parameters() if p.grad is not None]
        if getattr(self.scheduler, "on_progress", False):
            self.scheduler.update(self.budget_used())
        if c.clip_value is not None:
            nn.utils.clip_grad_value_(params, c.clip_value)
        norm = nn.utils.clip_grad_norm_(params, c.clip_norm if c.clip_norm else math.inf)
        if not torch.isfinite(norm):
            self._nonfinite(f"global gradient norm is {norm.item()}")
        lr = self.optimizer.param_groups[0]["lr"]  # the rate this update uses
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.scheduler is not None and not getattr(self.scheduler, "on_metric", False):
            self.scheduler.step()
        now = time.monotonic()
        rec = {
            "step": self.step,
            "epoch": self.epoch,
            "loss": ddp.all_reduce_mean(sum(self._pending) / len(self._pending)),
            "grad_norm": float(norm),
            "lr": lr,
            "samples_per_s": self._rows * ddp.world_size() / max(now - self._tlast, 1e-9),
            "time_s": now - self._t0,
        }
        self._pending, self._rows, self._tlast = [], 0, now
        self.history.append(rec)
        if self.main and self.step % c.log_every == 0:
            if self.metrics is not None:
                self.metrics.write(rec)
            self._tb.scalars(self.step, rec)
        self._bar.update(self.step, rec["loss"], rec["samples_per_s"])
        if c.eval_every and self.step % c.eval_every == 0:
            self._evaluate_and_track()
        if c.max_steps is not None and self.step >= c.max_steps:
            self._stop = "max_steps"
        if c.time_budget_s is not None and self._clock() - self._budget0 >= c.time_budget_s:
            self._stop = self._stop or "time_budget"
        if c.save_every and self.step % c.save_every == 0 and self.last_path and self.main:
            self.save(self.last_path)
        for cb in self.callbacks:
            cb(self, rec)

    # --- evaluation -----------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """``metric_fn(model, val_data)``, or the mean loss as ``{"val_loss": …}``."""
        if self.val_data is None:
            raise ValueError("val_data: evaluation needs validation data")
        self.model.eval()
        try:
            if self.metric_fn is not None:
                return {k: float(v) for k, v in self.metric_fn(self.model, self.val_data).items()}
            total, n = 0.0, 0
            for batch in self.val_data:
                if self.tbptt is None:
                    total, n = total + float(self._loss(batch)[0]), n + 1
                    continue
                state = None
                for start, _, end in self.tbptt.windows(self.tbptt.length(batch)):
                    loss, state = self._loss(self.tbptt.slice(batch, start, end), state)
                    total, n = total + float(loss), n + 1
            if n == 0:
                raise ValueError("val_data: zero-length dataset (no batches)")
            return {"val_loss": total / n}
        finally:
            self.model.train()

    def _evaluate_and_track(self) -> None:
        c = self.cfg
        metrics = self.evaluate()
        if c.monitor not in metrics:
            raise ValueError(f"monitor: {c.monitor!r} not among the metrics {sorted(metrics)}")
        m = metrics[c.monitor]
        rec = {"step": self.step, **metrics}
        self.evals.append(rec)
        if self.metrics is not None:
            self.metrics.write({"kind": "eval", **rec})
        self._tb.scalars(self.step, metrics)
        if getattr(self.scheduler, "on_metric", False):
            self.scheduler.step(m)
        better = self.best is None or (m < self.best if c.mode == "min" else m > self.best)
        if better:
            self.best, self.bad_evals = m, 0
            if self.best_path is not None and self.main:
                self.save(self.best_path)
        else:
            self.bad_evals += 1
            if c.patience is not None and self.bad_evals >= c.patience:
                self._stop = "early_stopping"
            if c.lr_decay_on_stall != 1.0:
                for g in self.optimizer.param_groups:
                    g["lr"] *= c.lr_decay_on_stall
                bases = getattr(self.scheduler, "base_lrs", None)
                if bases is not None:
                    self.scheduler.base_lrs = [b * c.lr_decay_on_stall for b in bases]
        for cb in self.on_eval:
            cb(self, rec, better)

    # --- checkpoints ------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write a full training checkpoint (see :mod:`seqlab.training.checkpoint`)."""
        from seqlab.training.resume import pack_trainer

        tensors, meta = pack_trainer(self)
        return ckpt.save_checkpoint(path, tensors, meta)

    def load(self, path: str | Path) -> None:
        """Restore everything :meth:`save` wrote; the model configuration must match."""
        from seqlab.training.resume import unpack_trainer

        unpack_trainer(self, *ckpt.load_checkpoint(path), path=Path(path))
