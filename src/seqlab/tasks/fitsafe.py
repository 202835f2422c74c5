"""The crash-safe part of :func:`seqlab.tasks.base.fit`: resume, last checkpoints, signals,
divergence.

Order of events in a fresh run: evaluate the untrained model (step 0), save it as the best
model and as ``last.safetensors``; train, writing ``last.safetensors`` after every evaluation
(so at most ``eval_every`` steps are lost to a kill); write it again at the end. A resumed run
(``run.resuming``) loads ``last.safetensors`` instead of the step-0 evaluation and puts the
batch source at the checkpoint's epoch, so it continues as the unbroken run would have.
"""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Callable, Iterable
from typing import Any

from seqlab.tasks import interrupt
from seqlab.tasks.rundir import RunDir
from seqlab.training import Trainer
from seqlab.training.config import NonFiniteLossError, TrainResult

log = logging.getLogger(__name__)


def _set_epoch(data: Iterable, epoch: int) -> None:
    if hasattr(data, "set_epoch"):
        data.set_epoch(epoch)
    elif epoch:
        raise ValueError(
            f"resume: the batch source {type(data).__name__} cannot restart at epoch {epoch}"
        )


def _best(trainer: Trainer, metric: str) -> str:
    sign = 1.0 if trainer.cfg.mode == "min" else -1.0
    evals = [e for e in trainer.evals if math.isfinite(e.get(metric, math.nan))]
    if not evals:
        return "no finite evaluation"
    b = min(evals, key=lambda e: sign * e[metric])
    return f"best {metric} {b[metric]:.4g} at step {b['step']}"


def run(
    trainer: Trainer,
    run_dir: RunDir,
    train_data: Iterable,
    metric: str,
    emit: Callable[[dict[str, Any]], None],
    on_best: Callable[[], None],
    eval_at_start: bool,
) -> TrainResult:
    """``trainer.fit()`` with the run folder's safety net (see the module doc)."""
    last = run_dir.last_checkpoint
    run_dir.outcome = None

    def poll(tr: Trainer, *_: Any) -> None:
        if interrupt.requested() is not None:
            tr.request_stop("interrupted")

    def save_last(tr: Trainer, *_: Any) -> None:
        tr.save(last)

    trainer.callbacks.append(poll)
    trainer.on_eval += [save_last, poll]

    if run_dir.resuming and last.exists():
        trainer.load(last)  # CheckpointError names the file when it is damaged
        _set_epoch(train_data, trainer.epoch)
        emit({"kind": "resume", "step": trainer.step, "epoch": trainer.epoch})
    elif eval_at_start:
        m0 = trainer.evaluate()
        if metric not in m0:
            raise ValueError(f"monitor: {metric!r} not among the metrics {sorted(m0)}")
        rec = {"step": 0, **m0}
        trainer.evals.append(rec)
        if math.isfinite(m0[metric]):
            trainer.best = m0[metric]  # later evaluations must beat the untrained model
        emit({"kind": "eval", **rec})
        on_best()
        trainer.save(last)

    try:
        with interrupt.graceful():
            out = trainer.fit()
    except NonFiniteLossError as err:
        why = str(err).split(";")[0]
        run_dir.outcome = ("diverged", f"{why}; kept {_best(trainer, metric)}")
        emit({"kind": "diverged", "step": trainer.step, "reason": why})
        return TrainResult(trainer.step, "diverged", trainer.history, trainer.evals,
                           trainer.best, None, str(last))  # fmt: skip

    if out.stopped == "interrupted":
        trainer.save(last)
        signum = interrupt.requested() or signal.SIGINT
        name = signal.Signals(signum).name
        where = f"step {trainer.step} (epoch {trainer.epoch})"
        emit({"kind": "interrupted", "step": trainer.step, "signal": name})
        run_dir.write_summary(
            {"stopped_by": "interrupted", "signal": name, "steps": trainer.step,
             "evals": trainer.evals, "resume": f"seqlab train --resume {run_dir.path}"}
        )  # fmt: skip
        raise interrupt.Interrupted(
            signum,
            f"{name}: stopped at {where}, {_best(trainer, metric)}; saved {last}; "
            f"continue with: seqlab train --resume {run_dir.path}",
        )
    trainer.save(last)
    why = interrupt.divergence(
        [h["loss"] for h in trainer.history], [e[metric] for e in trainer.evals if metric in e]
    )
    if why:
        out.stopped = "diverged"
        run_dir.outcome = ("diverged", f"{why}; kept {_best(trainer, metric)}")
        emit({"kind": "diverged", "step": trainer.step, "reason": why})
    return out
