"""Range checks of command-line options, and resuming a run folder (``train --resume``).

Every failure is a :class:`BadOption`: one line naming the option, what it accepts and what
it got, exit status 2 (click's own usage errors use 2 as well).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from seqlab.tasks.interrupt import EXIT_BAD_INPUT

MAX_GENERATE = 100_000  # characters per `seqlab generate` (a bound, so a typo cannot run for days)
MAX_BEAM = 256
MAX_STEPS = 10_000  # forecast horizon of `seqlab predict`
MAX_BENCH_SIZE = 65_536


class BadOption(click.ClickException):
    exit_code = EXIT_BAD_INPUT


def int_range(name: str, value: int, lo: int, hi: int | None = None) -> None:
    if value < lo or (hi is not None and value > hi):
        want = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
        raise BadOption(f"{name}: expected {want}, got {value}")


def check_generate(length: int, temperature: float) -> None:
    int_range("--length", length, 0, MAX_GENERATE)
    if not (math.isfinite(temperature) and temperature >= 0):  # 0: greedy
        raise BadOption(
            f"--temperature: expected a finite number >= 0 (0: greedy), got {temperature}"
        )


def check_predict(beam: int, steps: int) -> None:
    int_range("--beam", beam, 1, MAX_BEAM)
    int_range("--steps", steps, 1, MAX_STEPS)


def check_bench(hidden: int, batch: int, seq: int, repeats: int, threads: int) -> None:
    for name, v in (("--hidden", hidden), ("--batch", batch), ("--seq", seq)):
        int_range(name, v, 1, MAX_BENCH_SIZE)
    int_range("--repeats", repeats, 1, 10_000)
    int_range("--threads", threads, 1, 1024)


RESUMABLE_OPTIONS = ("minutes", "max_steps", "threads")


def task_of_folder(path: Path, names: tuple[str, ...]) -> str | None:
    """The task that made a run folder: model.json, else the folder name's prefix."""
    meta = path / "model.json"
    if meta.is_file():
        try:
            return json.loads(meta.read_text())["task"]
        except (ValueError, KeyError):
            pass
    for name in sorted(names, key=len, reverse=True):
        if path.name.startswith(name + "-"):
            return name
    return None


def check_resume(
    path: Path, task: str | None, names: tuple[str, ...], given: dict[str, Any]
) -> str:
    """The task of run folder ``path`` (``task`` must agree when given); only the budget
    options may be combined with ``--resume`` (the run keeps its own settings)."""
    if not (path / "config.toml").is_file():
        raise BadOption(f"--resume {path}: not a seqlab run folder (no config.toml)")
    from seqlab.tasks import canonical_name  # torch-free

    found = task_of_folder(path, names)
    found = canonical_name(found) if found in names else found
    task = canonical_name(task) if task else task
    if task and found and task != found:
        raise BadOption(f"--resume {path}: a {found} run, but TASK is {task}")
    found = found or task
    if found is None:
        raise BadOption(f"--resume {path}: cannot tell the task; use: seqlab train TASK --resume")
    extra = sorted(k for k, v in given.items() if v not in (None, (), False))
    extra = [k for k in extra if k not in RESUMABLE_OPTIONS]
    if extra:
        raise BadOption(
            f"--resume: the run keeps its own settings; cannot combine with "
            f"{', '.join('--' + k.replace('_', '-') for k in extra)} "
            f"(allowed: {', '.join('--' + k.replace('_', '-') for k in RESUMABLE_OPTIONS)})"
        )
    return found
