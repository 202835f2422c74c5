"""Quality of the cell kinds at an equal CPU budget (issue 13, acceptance 3).

Two measurements, each cell kind given the same budget of **CPU time of its own process**
(one intra-op thread, so the budget is fair on a shared machine) and the same seed:

``adding``  the adding problem (:mod:`seqlab.examples.adding`) at T = 200: recurrent layer →
            last h → linear head, hidden 32, batch 64, Adam lr 1e-2 for every kind (no
            per-kind search: the example's rate), gradient-norm clip 1, the same training
            stream (seed 0); after the budget, held-out MSE and the fraction of answers within
            0.04 on 2,000 fresh sequences (seed 10,000). Always answering 1 gives MSE 0.167.
``charlm``  the Shakespeare character-LM recipe (``seqlab train charlm``, its default sizes:
            hidden 384, TBPTT 100) at ``--minutes`` CPU-minutes each (clock = cpu, one
            thread, baseline off), as ``docs/results.md``'s memory-span sweep; held-out
            nats/char of the best checkpoint and optimiser steps done.

Kinds not registered in this checkout are reported as missing, and each row says which
backend ran the kind (``seqlab.engine.kind_backends``): a kind on the reference loop does
far fewer steps in the same budget, which is part of what this measures.

Run::

    python benchmarks/cell_quality.py adding --out runs/cellq   # ~1.5 CPU-min per kind
    python benchmarks/cell_quality.py charlm --out runs/cellq --jobs 2
    python benchmarks/cell_quality.py table --out runs/cellq    # markdown tables
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CELLS = ("lstm", "gru", "lnlstm", "mingru", "minlstm")
T_ADDING = 200


def _backend(cell: str) -> str:
    from seqlab.engine import kind_backends
    from seqlab.functional.spec import spec_for_choice

    return kind_backends()[spec_for_choice(cell).name]["runs_on"]


def _registered(cell: str) -> bool:
    from seqlab.functional import cell_choices

    return cell in cell_choices()


def adding_one(cell: str, cpu_seconds: float, hidden: int = 32, lr: float = 1e-2) -> dict:
    """Train ``cell`` on the adding problem for ``cpu_seconds`` of process CPU time."""
    import torch
    from torch import nn

    from seqlab.examples.adding import AddingModel, adding_batch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = AddingModel(cell, hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps, start, wall = 0, time.process_time(), time.perf_counter()
    while time.process_time() - start < cpu_seconds:
        x, y = adding_batch(64, T_ADDING, gen)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
    cpu = time.process_time() - start
    x, y = adding_batch(2000, T_ADDING, torch.Generator().manual_seed(10_000))
    with torch.no_grad():
        pred = model(x)
    return {
        "cell": cell,
        "backend": _backend(cell),
        "mse": nn.functional.mse_loss(pred, y).item(),
        "within_0.04": ((pred - y).abs() < 0.04).float().mean().item(),
        "steps": steps,
        "cpu_s": round(cpu, 1),
        "wall_s": round(time.perf_counter() - wall, 1),
        "params": sum(p.numel() for p in model.parameters()),
        "hidden": hidden,
        "lr": lr,
    }


def charlm_one(cell: str, minutes: float, out: Path, tag: str = "", collect: bool = False) -> dict:
    """One ``seqlab train charlm`` run of ``cell`` at ``minutes`` CPU-minutes (``collect``:
    only read the summary of that run, already made by the same command)."""
    name = f"charlm-{cell}{tag}"
    cmd = [sys.executable, "-m", "seqlab.cli", "train", "charlm", "--model", cell,
           "--minutes", str(minutes), "--set", "clock=cpu", "--set", "baseline_order=0",
           "--threads", "1", "-q", "--runs-dir", str(out / "charlm"), "--name", name]  # fmt: skip
    log = out / f"{name}.log"
    rc = 0
    backend_file = out / f"{name}.backend"  # what ran it then (later merges may add kernels)
    if not collect:
        backend_file.write_text(_backend(cell))
        with open(log, "w") as f:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    summary_file = out / "charlm" / name / "summary.json"
    if rc != 0 or not summary_file.is_file():
        return {"cell": cell + tag, "error": f"exit {rc}, see {log}"}
    s = json.loads(summary_file.read_text())
    return {
        "cell": cell + tag,
        "backend": backend_file.read_text() if backend_file.is_file() else _backend(cell),
        "val_nats": s["val_nats"],
        "steps": s["steps"],
        "cpu_s": s.get("train_cpu_seconds"),
        "wall_s": s.get("train_seconds"),
        "params": s.get("parameters"),
        "command": " ".join(["seqlab"] + cmd[3:]),
    }


def _machine() -> dict:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
        "load": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
    }


def _save(out: Path, part: str, rows: list[dict]) -> None:
    """Merge ``rows`` into ``out/part.json`` by cell (a rerun of one kind replaces it)."""
    path = out / f"{part}.json"
    old = json.loads(path.read_text()) if path.is_file() else {"rows": []}
    keep = [r for r in old["rows"] if r["cell"] not in {n["cell"] for n in rows}]
    data = {"rows": keep + rows, "machine": _machine()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)  # never a half-written file


def table(out: Path) -> str:
    lines = []
    adding = out / "adding.json"
    if adding.is_file():
        lines += [f"Adding problem, T = {T_ADDING}:", "",
                  "| cell | backend | held-out MSE | within 0.04 | steps | CPU-s |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in json.loads(adding.read_text())["rows"]:
            ok = r["within_0.04"]
            lines.append(f"| {r['cell']} | {r['backend']} | {r['mse']:.4f} | {ok:.1%} | "
                         f"{r['steps']:,} | {r['cpu_s']:.0f} |")  # fmt: skip
        lines.append("")
    charlm = out / "charlm.json"
    if charlm.is_file():
        lines += ["Shakespeare charlm:", "",
                  "| cell | backend | params | steps | held-out nats/char | CPU-s |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in json.loads(charlm.read_text())["rows"]:
            if "error" in r:
                lines.append(f"| {r['cell']} | {r['error']} | | | | |")
                continue
            lines.append(f"| {r['cell']} | {r['backend']} | {r['params']:,} | {r['steps']:,} | "
                         f"{r['val_nats']:.3f} | {r['cpu_s']:.0f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=("adding", "charlm", "table"))
    ap.add_argument("--cells", default=",".join(CELLS), help="comma-separated cell= names")
    ap.add_argument("--out", type=Path, default=Path("runs/cell_quality"))
    ap.add_argument("--cpu-seconds", type=float, default=90.0, help="adding: budget per kind")
    ap.add_argument("--minutes", type=float, default=3.0, help="charlm: CPU-minutes per kind")
    ap.add_argument("--jobs", type=int, default=1, help="charlm: runs at a time")
    ap.add_argument("--tag", default="", help="suffix of the row and run names (a rerun)")
    ap.add_argument("--collect", action="store_true", help="charlm: read finished runs only")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part == "table":
        print(table(args.out))
        return
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    missing = [c for c in cells if not _registered(c)]
    if missing:
        print(f"not registered in this checkout (skipped): {', '.join(missing)}")
    cells = [c for c in cells if c not in missing]
    if args.part == "adding":
        for cell in cells:
            row = adding_one(cell, args.cpu_seconds)
            row["cell"] += args.tag
            print(json.dumps(row), flush=True)
            _save(args.out, "adding", [row])
    else:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            jobs = pool.map(
                lambda c: charlm_one(c, args.minutes, args.out, args.tag, args.collect), cells
            )
            for row in jobs:
                print(json.dumps(row), flush=True)
                _save(args.out, "charlm", [row])
    print(table(args.out))


if __name__ == "__main__":
    main()
