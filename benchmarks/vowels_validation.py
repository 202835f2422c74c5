"""Compare ``vowels`` recipe variants on VALIDATION splits only (docs/results.md, issue 17).

Each seed gives another per-speaker validation split of the 270 training series (and another
initialisation); the test series are scored by the task as always but never printed here, so
the choice cannot look at them. Per run: the validation loss and accuracy of the checkpoint
the recipe keeps, and their means over the last ten evaluations.

    python benchmarks/vowels_validation.py NAME 100,101,102 [key=value ...]
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from seqlab.tasks import get_task
from seqlab.tasks.base import config_dict, resolve_config
from seqlab.tasks.rundir import RunDir


def _line(r: tuple[float, ...]) -> str:
    return (
        f"chosen val_loss {r[0]:.4f} val_acc {r[1]:.4f} | "
        f"last10 val_loss {r[2]:.4f} val_acc {r[3]:.4f}"
    )


def main(name: str, seeds: list[int], settings: list[str]) -> None:
    task = get_task("vowels")
    root = Path(tempfile.mkdtemp(prefix="vowels-validation-"))
    rows = []
    for seed in seeds:
        cfg = resolve_config(task.Config, None, [*settings, f"seed={seed}", "baseline=false"])
        run = RunDir.create(root, f"{name}-{seed}", config_dict(cfg), stamp=False)
        summary = task.train(cfg, run)
        text = (run.path / "metrics.jsonl").read_text()
        evals = [e for e in map(json.loads, text.splitlines()) if e["kind"] == "eval"]
        last = evals[-10:]
        row = (
            summary["val_loss"],
            summary["val_acc"],
            statistics.mean(e["val_loss"] for e in last),
            statistics.mean(e["val_acc"] for e in last),
        )
        rows.append(row)
        print(name, seed, _line(row), flush=True)
    means = tuple(statistics.mean(r[i] for r in rows) for i in range(4))
    print("MEAN", name, settings, _line(means))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1], [int(s) for s in sys.argv[2].split(",")], sys.argv[3:])
