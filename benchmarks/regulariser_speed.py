"""Cost of the recurrent regularisers on the native backend, interleaved in one process.

Per cell (LSTM, GRU, RNN tanh) and configuration (C1, C2 of shared/BENCHMARKS.md; 1 layer,
float32, time-major), two ratios, each the median of per-round ratios (A B A B ...) against
the same layer without regularisers, same weights and inputs:

* ``h_mask``: ``recurrent_dropout=0.25`` alone (the masked native team loop vs the plain one);
* ``all``: ``input_dropout=0.25, recurrent_dropout=0.25, weight_dropout=0.5`` (the masks are
  drawn every call, x and w_hh masked with autograd, plus the masked loop).

    python benchmarks/regulariser_speed.py                 # C1, C2; train and fwd
    python benchmarks/regulariser_speed.py --rounds 9 --budget 0.3 --clock cpu

"fwd" runs the layer in training mode under ``torch.no_grad()`` (so masks are drawn).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import recurrence_speed as rs  # noqa: E402
import seqlab  # noqa: E402
from seqlab import engine  # noqa: E402

LAYERS = {"LSTM": (seqlab.LSTM, {}), "GRU": (seqlab.GRU, {}), "RNN": (seqlab.RNN, {})}
SETTINGS = {
    "h_mask": {"recurrent_dropout": 0.25},
    "all": {"input_dropout": 0.25, "recurrent_dropout": 0.25, "weight_dropout": 0.5},
}


def bench(cell: str, cfg: str, setting: str, train: bool, rounds: int, budget: float) -> float:
    T, B, I, H = rs.CONFIGS[cfg]  # noqa: E741
    cls, kw = LAYERS[cell]
    torch.manual_seed(0)
    plain = cls(I, H, backend="native", **kw)
    reg = cls(I, H, backend="native", **kw, **SETTINGS[setting])
    reg.load_state_dict(plain.state_dict())
    x = torch.randn(T, B, I, requires_grad=train)
    steps = {
        "reg": rs.make_step(lambda v: reg(v)[0], x, train),
        "plain": rs.make_step(lambda v: plain(v)[0], x, train),
    }
    _, ratios = rs.interleaved(steps, rounds, budget)
    return statistics.median(ratios)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--budget", type=float, default=0.3, help="seconds per timed block")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument("--configs", default="C1,C2")
    ap.add_argument("--cells", default="LSTM,GRU,RNN")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        rs.CLOCK["clock"] = time.process_time
    if engine.resolve_backend(None) != "native":
        sys.exit("the native backend is unavailable: " + str(engine.backends()["why"]))
    print(f"threads={args.threads} rounds={args.rounds} budget={args.budget}s clock={args.clock}")
    print("ratio regularised / plain layer (native, median of interleaved rounds)")
    print(f"{'cell':5} {'cfg':4} {'mode':6} {'h_mask':>7} {'all':>7}")
    for cell in args.cells.split(","):
        for cfg in args.configs.split(","):
            for train in (True, False):
                row = [bench(cell, cfg, s, train, args.rounds, args.budget) for s in SETTINGS]
                mode = "train" if train else "fwd"
                print(f"{cell:5} {cfg:4} {mode:6} {row[0]:7.3f} {row[1]:7.3f}", flush=True)


if __name__ == "__main__":
    main()
