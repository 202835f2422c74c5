"""A small training loop shared by the tasks: Adam, clipping, a wall-clock budget, periodic
evaluation, best-checkpoint keeping and early stopping.

The task supplies three closures — ``next_batch() -> batch | None`` (None: data exhausted),
``loss_fn(batch) -> scalar loss`` and ``evaluate() -> dict`` — so streaming LMs (TBPTT with a
carried state) and shuffled classification batches use the same loop.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from seqlab.tasks.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass
class LoopConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    clip: float = 1.0  # max global gradient norm (0: off)
    minutes: float = 10.0  # wall-clock training budget, evaluations included
    max_steps: int = 0  # 0: unlimited
    eval_every: int = 200  # steps between evaluations
    patience: int = 0  # evaluations without improvement before stopping (0: never)
    log_every: int = 10
    lr_decay: float = 1.0  # multiply lr by this after an evaluation that did not improve
    lr_final: float = 1.0  # anneal lr linearly to lr·lr_final over the budget (1.0: constant)
    clock: str = "wall"  # what `minutes` counts: wall time, or this process's CPU time ("cpu")


@dataclass
class LoopResult:
    steps: int = 0
    seconds: float = 0.0  # wall time
    cpu_seconds: float = 0.0  # CPU time of this process (all its threads)
    best: dict[str, Any] = field(default_factory=dict)
    stopped_by: str = ""


def train_loop(
    model: nn.Module,
    cfg: LoopConfig,
    next_batch: Callable[[], Any],
    loss_fn: Callable[[Any], Tensor],
    evaluate: Callable[[], dict[str, float]],
    metric: str,
    higher_is_better: bool,
    run: RunDir | None = None,
    on_best: Callable[[dict[str, float]], None] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> LoopResult:
    """Train until the budget, ``max_steps``, data exhaustion or patience runs out.

    Evaluates every ``eval_every`` steps and once at the end; ``on_best`` is called whenever
    ``metric`` improves (the task saves its checkpoint there).
    """
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for g in opt.param_groups:
        g["base_lr"] = g["lr"]
    res = LoopResult()
    if cfg.clock not in ("wall", "cpu"):
        raise ValueError(f"clock: expected 'wall' or 'cpu', got {cfg.clock!r}")
    # On a shared machine the CPU clock measures the work done, independent of other load.
    budget_clock = time.process_time if cfg.clock == "cpu" else time.perf_counter
    start, cpu_start, budget_start = time.perf_counter(), time.process_time(), budget_clock()
    best = -math.inf if higher_is_better else math.inf
    bad, running, n_running = 0, 0.0, 0

    last_eval = {"step": -1}

    def do_eval() -> None:
        nonlocal best, bad
        last_eval["step"] = res.steps
        model.eval()
        with torch.no_grad():
            m = evaluate()
        model.train()
        m = {k: float(v) for k, v in m.items()}
        event = {
            "kind": "eval",
            "step": res.steps,
            "elapsed": round(time.perf_counter() - start, 2),
            **m,
        }
        if run is not None:
            run.log(**event)
        if progress is not None:
            progress(event)
        better = m[metric] > best if higher_is_better else m[metric] < best
        if better:
            best, bad = m[metric], 0
            res.best = {"step": res.steps, **m}
            if on_best is not None:
                on_best(m)
        else:
            bad += 1
            for g in opt.param_groups:
                g["lr"] *= cfg.lr_decay
                g["base_lr"] *= cfg.lr_decay

    model.train()
    while True:
        elapsed = budget_clock() - budget_start
        if elapsed > cfg.minutes * 60:
            res.stopped_by = "time budget"
            break
        if cfg.max_steps and res.steps >= cfg.max_steps:
            res.stopped_by = "max_steps"
            break
        if cfg.patience and bad >= cfg.patience:
            res.stopped_by = "patience"
            break
        if cfg.lr_final != 1.0:
            # Linear annealing over whichever budget (time or steps) will run out first.
            done = elapsed / (cfg.minutes * 60)
            if cfg.max_steps:
                done = max(done, res.steps / cfg.max_steps)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * (1.0 - (1.0 - cfg.lr_final) * min(1.0, done))
        batch = next_batch()
        if batch is None:
            res.stopped_by = "data exhausted"
            break
        loss = loss_fn(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss)} at step {res.steps}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip if cfg.clip > 0 else 1e30)
        opt.step()
        res.steps += 1
        running += float(loss.detach())
        n_running += 1
        if res.steps % cfg.log_every == 0:
            event = {
                "kind": "train",
                "step": res.steps,
                "loss": running / n_running,
                "grad_norm": float(gnorm),
                "lr": opt.param_groups[0]["lr"],
                "elapsed": round(time.perf_counter() - start, 2),
            }
            running, n_running = 0.0, 0
            if run is not None:
                run.log(**event)
            if progress is not None:
                progress(event)
        if res.steps % cfg.eval_every == 0:
            do_eval()
    if last_eval["step"] != res.steps:  # always finish with an evaluation of the last weights
        do_eval()
    res.seconds = time.perf_counter() - start
    res.cpu_seconds = time.process_time() - cpu_start
    log.info("stopped after %d steps (%s), best %s", res.steps, res.stopped_by, res.best)
    return res


def input_grad_through_time(
    model: nn.Module, embedding: nn.Module, loss_of_last_step: Callable[[], Tensor]
) -> list[float]:
    """‖∂ℓ_T/∂x_t‖ for t = 0..T-1, averaged over the batch.

    ``x_t`` is the output of ``embedding`` at step t (caught by a forward hook) and ``ℓ_T`` the
    loss computed by ``loss_of_last_step`` (which runs the model). For a vanilla RNN this decays
    roughly geometrically with T - t — the vanishing gradient made visible; gated cells keep it
    flatter. Works for any model kind because it only needs the embedding's output.
    """
    caught: list[Tensor] = []

    def hook(_module, _inputs, out):
        out.retain_grad()
        caught.append(out)

    handle = embedding.register_forward_hook(hook)
    was_training = model.training
    model.eval()  # no dropout noise in the diagnostic
    try:
        with torch.enable_grad():
            loss = loss_of_last_step()
            loss.backward()
    finally:
        handle.remove()
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    g = caught[0].grad  # (B, T, E)
    return g.norm(dim=-1).mean(0).tolist()
