"""A/B of the native engine against an earlier commit's, interleaved in one process.

The earlier commit's C++ sources (``git show BASE:src/seqlab/engine/csrc/...``) are compiled
with the current build flags under another op namespace (``torch.ops.seqlab_engine_base``),
so both libraries are loaded side by side and timed on the same inputs. Each round calls A
(base) and B (this tree) alternately, ``--calls`` times each (which goes first alternates by
round), and keeps each side's fastest call (the calls another process preempted drop out); the
reported number is the median of the per-round ratios B/A (below 1: this tree is faster) with
the 25th-75th percentile of those ratios as the spread. The ops are called directly (no
autograd), on shared/BENCHMARKS.md's configurations C1-C4 and P0, float32,
``torch.set_num_threads(2)``: ``fwd`` is forward(save=False) (inference), ``train``
forward(save=True) plus backward.

``--check`` first compares both libraries bit for bit (outputs and all gradients, every mode,
float32/float64, with and without lengths, both directions, one and two threads).

    python benchmarks/native_ab.py --check                # bitwise check, then the tables
    python benchmarks/native_ab.py --rounds 9 --configs C1,C4 --cells LSTM
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from seqlab.engine import native  # noqa: E402

CONFIGS = {  # name: (T, B, I, H)
    "C1": (100, 32, 64, 128),
    "C2": (100, 64, 256, 256),
    "C3": (50, 128, 512, 512),
    "C4": (500, 16, 32, 64),
    "P0": (1000, 1, 8, 8),
}
# name: (mode id, gate count); GRU_RB is the reset-before GRU
CELLS = {"LSTM": (2, 4), "GRU": (3, 3), "GRU_RB": (4, 3), "RNN": (0, 1), "RNN_RELU": (1, 1)}
CSRC = "src/seqlab/engine/csrc"


def build_base(base: str) -> object:
    """Compile BASE's engine as torch.ops.seqlab_engine_base (cached per commit)."""
    from torch.utils import cpp_extension

    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", base], check=True,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    out = ROOT / "build" / "native_ab" / sha
    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{sha}:{CSRC}"],
                           check=True, capture_output=True, text=True).stdout.split()  # fmt: skip
    for name in names:
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{sha}:{CSRC}/{name}"],
                              check=True, capture_output=True, text=True).stdout  # fmt: skip
        if name == "recurrence.cpp":
            text = text.replace("TORCH_LIBRARY(seqlab_engine,", "TORCH_LIBRARY(seqlab_engine_base,")
        (src / name).write_text(text)
    name = f"seqlab_engine_base_{sha}"
    library = out / f"{name}.so"
    if library.exists():
        torch.ops.load_library(str(library))
    else:
        print(f"building the base engine ({sha}) ...", file=sys.stderr, flush=True)
        cpp_extension.load(name=name, sources=[str(src / "recurrence.cpp")],
                           extra_cflags=native.CFLAGS, extra_ldflags=native.LDFLAGS,
                           build_directory=str(out), is_python_module=False)  # fmt: skip
    return torch.ops.seqlab_engine_base


def inputs(mode: int, G: int, T: int, B: int, I: int, H: int, dtype, seed=0, lengths=False):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.5):
        return torch.randn(*shape, generator=g, dtype=dtype) * scale

    lens = None
    if lengths:
        lens = torch.randint(0, T + 1, (B,), generator=g, dtype=torch.int64)
        lens[0] = T
    c0 = r(B, H) if mode == 2 else None
    return [mode, r(T, B, I, scale=1.0), r(B, H), c0, r(G * H, I), r(G * H, H), r(G * H),
            r(G * H), lens]  # fmt: skip


def train(ops, args, reverse, gy):
    mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lens = args
    y, h_n, c_n, hbuf, cbuf, gates = ops.forward(*args, reverse, True)
    gcn = torch.ones_like(c_n) if mode == 2 else None
    grads = ops.backward(mode, x, w_ih, w_hh, True, True, lens, reverse, hbuf, cbuf, gates,
                         gy, torch.ones_like(h_n), gcn)  # fmt: skip
    return [y, h_n, c_n, *grads]


def check(base, new) -> int:
    """Bitwise comparison of both libraries; returns the number of mismatching cases."""
    bad = 0
    cases = 0
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for cell, (mode, G) in CELLS.items():
            for dtype in (torch.float32, torch.float64):
                # small (one thread, plain loops) and team-sized (B·G·H² ≥ 64 Ki, H ≥ 16)
                for T, B, I, H in [(5, 3, 4, 6), (7, 8, 12, 64), (3, 40, 70, 96)]:
                    for lengths in (False, True):
                        for reverse in (False, True):
                            args = inputs(mode, G, T, B, I, H, dtype, lengths=lengths)
                            gy = torch.randn(T, B, H, dtype=dtype)
                            got = train(new, args, reverse, gy)
                            want = train(base, args, reverse, gy)
                            fwd_new = new.forward(*args, reverse, False)[:3]
                            fwd_base = base.forward(*args, reverse, False)[:3]
                            cases += 1
                            same = all(
                                torch.equal(a, b)
                                for a, b in zip(got + fwd_new, want + fwd_base, strict=True)
                            )
                            if not same:
                                bad += 1
                                print(f"MISMATCH {cell} {dtype} {(T, B, I, H)} lengths={lengths}"
                                      f" reverse={reverse} threads={threads}")  # fmt: skip
    print(f"bitwise check: {cases - bad}/{cases} cases identical")
    return bad


def timed(fn, reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def bench(
    base,
    new,
    min_rounds: int,
    max_calls: int,
    seconds: float,
    configs,
    cells,
    phases,
    threads: int = 2,
):
    torch.set_num_threads(threads)
    rows = []
    for cell in cells:
        mode, G = CELLS[cell]
        for phase in phases:
            row = {"cell": cell, "phase": phase}
            for cfg in configs:
                T, B, I, H = CONFIGS[cfg]
                args = inputs(mode, G, T, B, I, H, torch.float32)
                gy = torch.randn(T, B, H)
                fns = {}
                for name, ops in (("A", base), ("B", new)):
                    if phase == "fwd":
                        fns[name] = lambda ops=ops, args=args: ops.forward(*args, False, False)
                    else:
                        fns[name] = lambda ops=ops, args=args, gy=gy: train(ops, args, False, gy)
                for f in fns.values():
                    f()  # warm-up: scratch buffers, packed weights, thread pool
                one = min(timed(fns["A"], 1), timed(fns["B"], 1))
                # within the time budget: more calls and rounds where calls are short
                calls = max_calls if one < 0.05 else 1
                rounds = int(min(max(seconds / (2 * calls * one), min_rounds), 4 * min_rounds))
                ratios = []
                for r in range(rounds):
                    # `calls` calls per side, alternating A and B call by call (which goes
                    # first alternates by round); the fastest of each side counts, which
                    # drops the calls another process preempted
                    order = ("A", "B") if r % 2 == 0 else ("B", "A")
                    t = {"A": float("inf"), "B": float("inf")}
                    for _ in range(calls):
                        for name in order:
                            t[name] = min(t[name], timed(fns[name], 1))
                    ratios.append(t["B"] / t["A"])
                q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
                row[cfg] = (statistics.median(ratios), q[0], q[2])
                print(f"{cell:8s} {phase:5s} {cfg}: B/A {row[cfg][0]:.3f} "
                      f"[{q[0]:.3f}-{q[2]:.3f}] (min of {calls} x {rounds} rounds, "
                      f"{one * 1e3:.1f} ms/call)", flush=True)  # fmt: skip
            rows.append(row)
    return rows


def table(rows, configs) -> str:
    lines = ["| cell | phase | " + " | ".join(configs) + " |"]
    lines.append("|---|---|" + "---|" * len(configs))
    for row in rows:
        cells = [f"{row[c][0]:.3f} [{row[c][1]:.2f}-{row[c][2]:.2f}]" for c in configs]
        lines.append(f"| {row['cell']} | {row['phase']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="edae32e", help="commit to compare against")
    p.add_argument("--rounds", type=int, default=11, help="at least this many rounds")
    p.add_argument("--calls", type=int, default=3, help="calls per side per round (min)")
    p.add_argument("--seconds", type=float, default=20.0, help="time budget per table cell")
    p.add_argument("--configs", default="C1,C2,C3,C4,P0")
    p.add_argument("--cells", default="LSTM,GRU,GRU_RB,RNN")
    p.add_argument("--phases", default="fwd,train")
    p.add_argument("--threads", type=int, default=2, help="torch threads (BENCHMARKS.md: 2)")
    p.add_argument("--check", action="store_true", help="bitwise comparison first")
    p.add_argument("--check-only", action="store_true")
    a = p.parse_args()
    new = native.load()
    if new is None:
        raise SystemExit(f"native engine unavailable: {native.status()['reason']}")
    base = build_base(a.base)
    if a.check or a.check_only:
        bad = check(base, new)
        if a.check_only:
            raise SystemExit(1 if bad else 0)
    configs = a.configs.split(",")
    rows = bench(
        base,
        new,
        a.rounds,
        a.calls,
        a.seconds,
        configs,
        a.cells.split(","),
        a.phases.split(","),
        a.threads,
    )
    print(
        f"\nB/A = this tree / {a.base}, {a.threads} threads; median over >= {a.rounds} "
        f"interleaved rounds (fastest of up to {a.calls} calls per side) [25-75 %]:"
    )
    print(table(rows, configs))


if __name__ == "__main__":
    main()
