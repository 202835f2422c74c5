"""What ``seqlab train`` shows while it works: phases with durations and a training status.

The display consumes the task's ``progress`` events (see :mod:`seqlab.tasks.phases` and
:func:`seqlab.tasks.base.fit`): ``phase`` start/end, ``start`` (budget: ``max_steps``,
``budget_s``, the ``metric`` and its direction), ``baseline`` (a same-split baseline's value
of that metric), ``train`` (step, loss, cumulative ``tokens``, ``elapsed``) and ``eval``.

On a terminal it draws a rich progress bar and a spinner per phase; otherwise (a pipe, a
log file, CI) it prints plain lines: one per phase start and end, one per evaluation, and a
status line at most every ``every_s`` seconds. Lines are never hard-wrapped
(:func:`make_console`), so paths and commands can be copied from a log.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import IO, Any

from rich.console import Console


def make_console(
    file: IO[str] | None = None, force_terminal: bool | None = None, width: int | None = None
) -> Console:
    """A console that soft-wraps: a terminal wraps long lines itself, and a pipe gets them
    whole (rich would otherwise break them at 80 columns, splitting paths and commands)."""
    console = Console(
        file=file, force_terminal=force_terminal, width=width, highlight=False, soft_wrap=True
    )
    if not console.is_terminal and width is None:
        console.width = 10_000  # tables and rules: as wide as their content, never folded
    return console


def clock_str(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for a duration."""
    s = max(0, int(round(seconds)))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def rate_str(per_s: float) -> str:
    if per_s >= 1e6:
        return f"{per_s / 1e6:.1f}M"
    if per_s >= 1e4:
        return f"{per_s / 1e3:.0f}k"
    if per_s >= 1e3:
        return f"{per_s / 1e3:.1f}k"
    return f"{per_s:.0f}" if per_s >= 10 else f"{per_s:.1f}"


class TrainingStatus:
    """The numbers of the live training line, updated from events (no output)."""

    def __init__(self) -> None:
        self.max_steps: int | None = None
        self.budget_s: float | None = None
        self.metric = ""
        self.higher_is_better = False
        self.baseline: tuple[str, float] | None = None
        self.step = 0
        self.elapsed = 0.0
        self.loss: float | None = None
        self.tokens: int | None = None
        self.rate: float | None = None  # tokens/s (or steps/s without token counts)
        self.rate_unit = "tok/s"
        self.last: float | None = None  # last evaluation's metric
        self.best: tuple[float, int] | None = None  # (value, step)
        self._prev: tuple[float, float] | None = None  # (elapsed, tokens or steps)
        self.span: tuple[int, str | None] | None = None  # (memory span in steps, warning)

    def update(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "start":
            self.max_steps = event.get("max_steps") or None
            self.budget_s = event.get("budget_s") or None
            self.metric = event.get("metric", "")
            self.higher_is_better = bool(event.get("higher_is_better", False))
        elif kind == "baseline":
            self.baseline = (event["name"], float(event["value"]))
        elif kind == "train":
            self.step, self.elapsed = event["step"], float(event.get("elapsed", self.elapsed))
            self.loss = float(event["loss"])
            self.tokens = event.get("tokens")
            count = float(self.tokens if self.tokens is not None else self.step)
            self.rate_unit = "tok/s" if self.tokens is not None else "steps/s"
            if self._prev is not None and self.elapsed > self._prev[0]:
                self.rate = (count - self._prev[1]) / (self.elapsed - self._prev[0])
            elif self.elapsed > 0:
                self.rate = count / self.elapsed
            self._prev = (self.elapsed, count)
        elif kind == "memory":
            self.span = (int(event["memory_span"]), event.get("warning"))
        elif kind == "eval" and self.metric in event:
            self.step = event.get("step", self.step)
            self.elapsed = float(event.get("elapsed", self.elapsed))
            value = float(event[self.metric])
            self.last = value
            sign = 1.0 if self.higher_is_better else -1.0
            if self.best is None or sign * (value - self.best[0]) > 0:
                self.best = (value, self.step)

    def fraction(self) -> float | None:
        """Share of the budget spent: the larger of steps and time, as the Trainer stops."""
        parts = []
        if self.max_steps:
            parts.append(self.step / self.max_steps)
        if self.budget_s:
            parts.append(self.elapsed / self.budget_s)
        return min(1.0, max(parts)) if parts else None

    def eta(self) -> float | None:
        """Seconds left: the sooner of the step limit (at the recent step rate) and the time."""
        left = []
        if self.budget_s:
            left.append(self.budget_s - self.elapsed)
        if self.max_steps and self.step > 0 and self.elapsed > 0:
            left.append((self.max_steps - self.step) * self.elapsed / self.step)
        return max(0.0, min(left)) if left else None

    def line(self) -> str:
        parts = [f"step {self.step}" + (f"/{self.max_steps}" if self.max_steps else "")]
        time_part = clock_str(self.elapsed)
        if self.budget_s:
            time_part += f"/{clock_str(self.budget_s)}"
        parts.append(time_part)
        frac = self.fraction()
        if frac is not None:
            parts.append(f"{100 * frac:.0f}%")
        eta = self.eta()
        if eta is not None:
            parts.append(f"eta {clock_str(eta)}")
        if self.rate is not None and math.isfinite(self.rate):
            parts.append(f"{rate_str(self.rate)} {self.rate_unit}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.last is not None:
            parts.append(f"{self.metric} {self.last:.4g}")
        if self.best is not None:
            parts.append(f"best {self.best[0]:.4g} @{self.best[1]}")
        if self.span is not None:
            steps, warning = self.span
            parts.append(f"memory span {steps}" + (f" ({warning})" if warning else ""))
        if self.baseline is not None and self.best is not None:
            name, value = self.baseline
            delta = self.best[0] - value
            better = delta > 0 if self.higher_is_better else delta < 0
            word = "better" if better else "worse" if delta != 0 else "equal"
            parts.append(f"vs {name} {delta:+.4g} ({word})")
        return " · ".join(parts)


class RunDisplay:
    """``progress`` callback of ``seqlab train``: phases, the live status, evaluations.

    ``every_s``: in plain mode, the least time between two status lines (evaluations and
    phases always print). ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        console: Console,
        quiet: bool = False,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.quiet = quiet
        self.every_s = every_s
        self.clock = clock
        self.status = TrainingStatus()
        self.phases: list[tuple[str, float]] = []  # finished phases and their seconds
        self.started: set[str] = set()
        self._spinner: Any = None
        self._bar: Any = None
        self._bar_task: Any = None
        self._last_line = -math.inf

    @property
    def live(self) -> bool:
        return self.console.is_terminal and not self.quiet

    def print(self, text: str, **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.console.print(text, **kwargs)  # above the bar
        else:
            self.console.print(text, **kwargs)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "phase":
            self._phase(event)
            return
        self.status.update(event)
        if self.quiet:
            return
        if kind == "start" and self.live:
            self._start_bar()
        elif kind == "baseline":
            self.print(f"  same-split baseline {event['name']}: {event['value']:.4g}", markup=False)
        elif kind == "train":
            if self._bar is not None:
                self._refresh_bar()
            elif self.clock() - self._last_line >= self.every_s:
                self._last_line = self.clock()
                self.print(f"  {self.status.line()}", markup=False)
        elif kind == "memory" and event.get("warning"):
            self.print(
                f"  warning: gradients {event['warning']} through time at step "
                f"{event.get('step')} (‖∂L/∂h_0‖ / ‖∂L/∂h_last‖ = {event['grad_ratio']:.3g})",
                markup=False,
            )
        elif kind == "eval":
            vals = "  ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in event.items()
                if k not in ("kind", "step", "elapsed", "time")
            )
            self.print(f"  eval step {event.get('step')}: {vals}", markup=False)
            if self._bar is not None:
                self._refresh_bar()
            else:
                self._last_line = self.clock()
                self.print(f"  {self.status.line()}", markup=False)

    def _phase(self, event: dict[str, Any]) -> None:
        name, detail = event["name"], event.get("detail", "")
        if event["state"] == "start":
            self.started.add(name)
            if self.quiet:
                return
            if self.live and name != "training":
                self._spinner = self.console.status(f"{name}…" + (f" {detail}" if detail else ""))
                self._spinner.start()
            elif not self.live:
                self.print(f"[bold]{name}[/] …" + (f" {detail}" if detail else ""))
            return
        seconds = float(event.get("seconds", 0.0))
        self.phases.append((name, seconds))
        self._stop_live()
        if not self.quiet:
            tail = f"  ({detail})" if detail else ""
            mark = "✓ " if self.console.is_terminal else ""
            self.print(f"{mark}[bold]{name}[/] done in {seconds:.1f} s{tail}")

    def _start_bar(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn
        from rich.table import Column

        self._stop_live()
        self._bar = Progress(
            TextColumn("[bold]training"),
            BarColumn(bar_width=20),
            # a narrow terminal folds the numbers onto more lines instead of cutting them off
            TextColumn("{task.fields[stats]}", table_column=Column(overflow="fold", ratio=1)),
            console=self.console,
            transient=True,
            auto_refresh=False,  # redrawn on each event: the numbers change only then
        )
        total = 1000 if self.status.fraction() is not None else None
        self._bar_task = self._bar.add_task("training", total=total, stats=self.status.line())
        self._bar.start()
        self._bar.refresh()

    def _refresh_bar(self) -> None:
        frac = self.status.fraction()
        done = None if frac is None else round(1000 * frac)
        self._bar.update(self._bar_task, completed=done, stats=self.status.line(), refresh=True)

    def _stop_live(self) -> None:
        if self._spinner is not None:
            self._spinner.stop()
            self._spinner = None
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
            # the bar was transient: leave its last state as a plain line
            self.console.print(f"  {self.status.line()}", markup=False)

    def close(self) -> None:
        """Stop whatever is live (also on errors, so the terminal is left clean)."""
        self._stop_live()
