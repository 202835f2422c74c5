"""Ending a training run on purpose or by accident: signals, divergence, exit codes.

Signals: :func:`stop_signals` (the CLI wraps a whole ``seqlab train`` in it) turns SIGINT
(Ctrl-C) and SIGTERM into a *request*: while :func:`graceful` is active (the training loop,
:func:`seqlab.tasks.base.fit`) the run stops after the current optimiser step, writes its
``last.safetensors`` and a summary of where it stopped, and the process exits ``128 + signal``
(130 for SIGINT, 143 for SIGTERM). Outside the loop, or at a second signal, it stops at once
(:class:`Interrupted`); the files written so far are complete (atomic writes).

Divergence: a non-finite training loss or gradient norm (:class:`NonFiniteLossError`), a
non-finite evaluation metric, or a training loss that ends above ``DIVERGED_FACTOR`` times the
untrained model's loss. The run keeps its best model (which is never worse than the untrained
one: fit() evaluates before the first update) and exits with :data:`EXIT_DIVERGED`.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterator
from typing import Any

EXIT_BAD_INPUT = 2  # a bad argument, setting or input (one line, no traceback)
EXIT_DIVERGED = 3  # training diverged; the best (last good) model is kept
DIVERGED_FACTOR = 10.0


class Interrupted(BaseException):  # noqa: N818 (a request, not an error)
    """The run was stopped by a signal; ``exit_code`` is ``128 + signum``. A BaseException
    (like KeyboardInterrupt) so that no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class _Stop:
    def __init__(self) -> None:
        self.signum: int | None = None  # the pending request
        self.graceful = False
        self.installed = False


STOP = _Stop()


def _handler(signum: int, _frame: Any) -> None:
    if STOP.graceful and STOP.signum is None:
        STOP.signum = signum  # the training loop stops after this step
        return
    name = signal.Signals(signum).name
    raise Interrupted(signum, f"{name}: stopped at once (outside the training loop)")


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Route SIGINT and SIGTERM to :data:`STOP` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    STOP.signum, STOP.installed = None, True
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        STOP.signum, STOP.installed, STOP.graceful = None, False, False


@contextlib.contextmanager
def graceful() -> Iterator[None]:
    """Inside: the first signal is a request polled with :func:`requested`."""
    STOP.graceful = True
    try:
        yield
    finally:
        STOP.graceful = False


def requested() -> int | None:
    """The signal number of a pending stop request, or None."""
    return STOP.signum


def divergence(losses: list[float], metrics: list[float]) -> str:
    """Why a finished run counts as diverged ('' when it does not).

    ``losses``: training losses per optimiser step (the first one is the untrained model's);
    ``metrics``: the monitored metric of every evaluation.
    """
    bad = [m for m in metrics if not math.isfinite(m)]
    if bad:
        return f"the validation metric became {bad[0]}"
    if len(losses) >= 2 and losses[0] > 0:
        k = max(1, min(10, len(losses) // 4))
        tail = sum(losses[-k:]) / k
        if tail > DIVERGED_FACTOR * losses[0]:
            return (
                f"the training loss grew from {losses[0]:.4g} (untrained) to {tail:.4g} "
                f"(mean of the last {k} steps)"
            )
    return ""
