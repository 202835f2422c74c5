"""How many torch threads a run gets when the user did not say (``threads = 0``).

Why: the recipes use 2 intra-op threads, but on a machine whose cores are already busy the
threads of one op wait for each other at every barrier; a 2-thread run measured 8x slower
than a 1-thread run there (issue 19). The 1-minute load average says how many runnable
processes compete for the cores: when ``cores − load`` is less than the wanted threads
(less half a core) we use the free cores, rounded, at least 1, and say so in one line. An
explicit ``--threads`` (or ``threads = N``) wins.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

DEFAULT_THREADS = 2


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on this platform
        return None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def auto_threads(
    requested: int = 0,
    load: Callable[[], float | None] | None = None,
    cores: Callable[[], int] | None = None,
    preferred: int = DEFAULT_THREADS,
) -> tuple[int, str]:
    """(threads to use, a one-line notice or ""). ``requested`` > 0 is used as given.
    ``load`` and ``cores`` default to the 1-minute load average and the usable cores."""
    if requested > 0:
        return requested, ""
    n_cores = max(1, (cores or _cores)())
    want = min(preferred, n_cores)
    busy = (load or _load)()
    if busy is None:
        return want, ""
    free = n_cores - busy  # cores nobody else is running on (on average over a minute)
    if free >= want - 0.5:
        return want, ""
    use = max(1, math.floor(free + 0.5))
    return use, (
        f"threads: the machine is busy (load {busy:.1f} on {n_cores} cores), so using {use} "
        f"instead of {want}; pass --threads N to choose"
    )
