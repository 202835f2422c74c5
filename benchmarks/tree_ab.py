"""A/B the seqlab layers of two source trees, interleaved, on the same inputs.

Two worker processes, one per tree (each imports ``seqlab`` from its own ``src``), build the
same layers from the same seed; the driver asks them in turn (A B, then B A, ...) to time
one configuration and reports the median of the per-round ratios A/B (lower: A faster).
Because the requests alternate within seconds, load changes on a shared machine hit both
sides alike; the spread of the ratios is printed as the noise.

    python benchmarks/tree_ab.py /path/to/tree-A /path/to/tree-B [--rounds 9] [--quick]

Configurations and modes as ``recurrence_speed.py`` (shared/BENCHMARKS.md), plus ``O1``
(T=1, B=1, I=H=8): one step, so the time is the per-call Python overhead, and ``M1`` (T=1000,
B=16, I=H=256): the minGRU/minLSTM training size of ``recurrence_speed.py``. ``--cells`` takes
seqlab's layer classes (``LSTM``) and any registered cell kind (``lnlstm``, ``lngru``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r"""
import json, sys, time, torch
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(int(sys.argv[2]))
clock = time.process_time if sys.argv[3] == "cpu" else time.perf_counter
import seqlab
CONFIGS = {"C1": (100, 32, 64, 128), "C2": (100, 64, 256, 256), "C3": (50, 128, 512, 512),
           "C4": (500, 16, 32, 64), "P0": (1000, 1, 8, 8), "O1": (1, 1, 8, 8),
           "M1": (1000, 16, 256, 256)}
cache = {}
def step_for(cell, cfg, train):
    key = (cell, cfg, train)
    if key not in cache:
        T, B, I, H = CONFIGS[cfg]
        torch.manual_seed(0)
        make = getattr(seqlab, cell, None)  # a layer class, or a registered kind (lnlstm, ...)
        layer = make(I, H) if make else seqlab.RecurrentLayer(cell, I, H)
        x = torch.randn(T, B, I, requires_grad=train)
        def step():
            if train:
                x.grad = None
                layer(x)[0].sum().backward()
            else:
                with torch.no_grad():
                    layer(x)
        step()
        cache[key] = step
    return cache[key]
for line in sys.stdin:
    cell, cfg, train, reps = json.loads(line)
    step = step_for(cell, cfg, train)
    t0 = clock()
    for _ in range(reps):
        step()
    print(json.dumps((clock() - t0) / reps), flush=True)
"""


class Worker:
    def __init__(self, tree: str, threads: int, clock: str) -> None:
        src = os.path.join(os.path.abspath(tree), "src")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, src, str(threads), clock],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def time(self, cell: str, cfg: str, train: bool, reps: int) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps([cell, cfg, train, reps]) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree_a")
    parser.add_argument("tree_b")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--budget", type=float, default=0.2, help="seconds per timing")
    parser.add_argument("--cells", default="LSTM,GRU,RNN")
    parser.add_argument("--configs", default="C1,C2,C3,C4,P0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: the worker's CPU time (steadier than wall time on a crowded machine; "
        "use with --threads 1, where no thread waits on another)",
    )
    args = parser.parse_args()
    a, b = (Worker(t, args.threads, args.clock) for t in (args.tree_a, args.tree_b))
    print(f"A = {args.tree_a}, B = {args.tree_b}; ratio = A/B, median of {args.rounds} rounds; "
          f"{args.threads} thread(s), {args.clock} clock")  # fmt: skip
    print("| cell | cfg | mode | A ms | B ms | ratio A/B | ratio min..max |")
    print("|" + "---|" * 7)
    try:
        for cell in args.cells.split(","):
            for cfg in args.configs.split(","):
                for train in (False, True):
                    once = a.time(cell, cfg, train, 1)
                    b.time(cell, cfg, train, 1)  # warm both
                    reps = max(1, min(200, int(args.budget / max(once, 1e-6))))
                    ta, tb, ratios = [], [], []
                    for r in range(args.rounds):
                        pair = [(a, ta), (b, tb)] if r % 2 == 0 else [(b, tb), (a, ta)]
                        for worker, out in pair:
                            out.append(worker.time(cell, cfg, train, reps))
                        ratios.append(ta[-1] / tb[-1])
                    mode = "train" if train else "fwd"
                    print(f"| {cell} | {cfg} | {mode} | {1e3 * statistics.median(ta):.2f} | "
                          f"{1e3 * statistics.median(tb):.2f} | {statistics.median(ratios):.3f} | "
                          f"{min(ratios):.2f}..{max(ratios):.2f} |", flush=True)  # fmt: skip
    finally:
        a.close()
        b.close()


if __name__ == "__main__":
    main()
