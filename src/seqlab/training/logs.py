"""Training progress and logs: a rich progress bar, a metrics file, optional TensorBoard.

* :class:`MetricsFile` appends one record per call, as JSON lines (``.jsonl``) or CSV
  (``.csv``; the header is fixed by the first record, later new keys are dropped).
* :class:`Progress` shows a rich progress bar with loss, throughput and ETA; it is a no-op
  when disabled (tests, non-main DDP ranks).
* :class:`TensorBoard` writes scalars when ``tensorboard`` is importable, else warns once
  that it is not installed (``available`` says which).

The library never prints; the bar writes to the terminal through rich only when asked.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("seqlab.training")


class MetricsFile:
    """Append-only metrics log; format from the suffix: ``.csv`` or JSON lines otherwise."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.csv = self.path.suffix == ".csv"
        self._fields: list[str] | None = None
        if self.csv and self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, newline="") as f:
                self._fields = next(csv.reader(f), None)

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: _plain(v) for k, v in record.items()}
        with open(self.path, "a", newline="") as f:
            if not self.csv:
                f.write(json.dumps(clean) + "\n")
                return
            writer = csv.writer(f)
            if self._fields is None:
                self._fields = list(clean)
                writer.writerow(self._fields)
            writer.writerow([clean.get(k, "") for k in self._fields])

    @staticmethod
    def read(path: str | os.PathLike) -> list[dict[str, Any]]:
        """Read a metrics file back (JSON lines, or CSV with numbers parsed)."""
        path = Path(path)
        with open(path, newline="") as f:
            if path.suffix != ".csv":
                return [json.loads(line) for line in f if line.strip()]
            return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _number(s: str) -> Any:
    try:
        return int(s)
    except ValueError:
        try:
            return float(s)
        except ValueError:
            return s


class Progress:
    """A rich progress bar over ``total`` optimiser steps (``None`` = unknown)."""

    def __init__(self, total: int | None, enabled: bool = True, initial: int = 0) -> None:
        self._bar = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._bar = RichProgress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._bar.add_task("train", total=total, completed=initial, info="")
        self._bar.start()

    def update(self, step: int, loss: float, throughput: float, extra: str = "") -> None:
        if self._bar is not None:
            info = f"loss {loss:.4f} · {throughput:,.0f} samples/s {extra}"
            self._bar.update(self._task, completed=step, info=info)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class TensorBoard:
    """Scalars to TensorBoard via ``torch.utils.tensorboard`` when it can be imported."""

    def __init__(self, log_dir: str | os.PathLike | None) -> None:
        self.writer = None
        if log_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            # A warning, not info: the user asked for these logs and would otherwise find an
            # empty folder with no idea why (logging prints warnings even unconfigured).
            log.warning(
                "tensorboard_dir=%s: TensorBoard is not installed, so no TensorBoard logs are "
                "written (pip install tensorboard; metrics still go to the metrics file)",
                log_dir,
            )
            return
        self.writer = SummaryWriter(str(log_dir))

    @property
    def available(self) -> bool:
        return self.writer is not None

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and k != "step":
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
