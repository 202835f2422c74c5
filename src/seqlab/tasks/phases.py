"""Announced phases of a task run, as events for the ``progress`` callback.

A task's ``train`` wraps each slow part in ``with phase(progress, "data"):`` so the user sees
what is happening and how long it took: ``{"kind": "phase", "name", "state": "start",
"detail"}`` before and ``{"kind": "phase", "name", "state": "end", "seconds", "detail"}``
after. ``baseline(progress, name, value)`` reports a same-split baseline on the task's
validation metric, for the live "vs baseline" column. No torch here: the CLI imports this
module before the heavy ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

Progress = Callable[[dict[str, Any]], None] | None


class PhaseInfo:
    """What a phase may add to its end line (``info.detail = "cached"``)."""

    def __init__(self) -> None:
        self.detail = ""


@contextmanager
def phase(progress: Progress, name: str, detail: str = "") -> Iterator[PhaseInfo]:
    """Announce phase ``name`` to ``progress`` (None: silent) and report its duration."""
    info = PhaseInfo()
    t0 = time.perf_counter()
    if progress is not None:
        progress({"kind": "phase", "name": name, "state": "start", "detail": detail})
    yield info
    if progress is not None:
        progress(
            {
                "kind": "phase",
                "name": name,
                "state": "end",
                "seconds": time.perf_counter() - t0,
                "detail": info.detail,
            }
        )


def baseline(progress: Progress, name: str, value: float) -> None:
    """Report a same-split baseline's value of the task's validation metric."""
    if progress is not None:
        progress({"kind": "baseline", "name": name, "value": float(value)})


def native_build(progress: Progress, impl: str, model: str) -> None:
    """Build (or find cached) the native engine before training, as its own phase.

    Only for our recurrent layers (``impl="seqlab"``, not the Transformer): otherwise the
    first training step would silently include a compile of a minute or more.
    """
    if impl != "seqlab" or model == "transformer":
        return
    with phase(progress, "native build") as info:
        from seqlab.engine import native

        native.ensure_built()  # builds (announced) or waits for another process's build
        usable = native.status()["available"]
        info.detail = "ready" if usable else "not available, using fused torch ops"
