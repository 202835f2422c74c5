"""Projected LSTM (``proj_size``) speed: seqlab.LSTM vs torch.nn.LSTM, interleaved in one process.

Both layers get the same weights (torch.nn's ``weight_hr_l0`` included); seqlab runs on the
chosen backend (default: the engine's choice, native when built). Each round times the two
back to back (alternating which goes first) and the ratio reported is the median of the
per-round ratios seqlab/torch.nn (lower is better), per shared/BENCHMARKS.md. Note that
torch.nn.LSTM has no oneDNN path with a projection (torch warns "LSTM with projections is not
supported with oneDNN"): its peer here is ATen's default per-step implementation.

    python benchmarks/proj_speed.py --threads 1 --clock cpu --rounds 9
    python benchmarks/proj_speed.py --configs C1P,C2P --backend fused

Configurations (T, B, I, H, P): C1P = C1 with P = H/2 (100, 32, 64, 128, 64); C2P = C2 with
P = H/2 (100, 64, 256, 256, 128). Modes: fwd (``torch.no_grad()``) and train (forward +
``y.sum().backward()`` with ``x.requires_grad_(True)``), float32, time-major, 1 layer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "src", ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import recurrence_speed as rs  # noqa: E402  (interleaved timing and its clock)
import seqlab  # noqa: E402

CONFIGS = {"C1P": (100, 32, 64, 128, 64), "C2P": (100, 64, 256, 256, 128)}


def runners(cfg: str, backend: str | None):
    T, B, I, H, P = CONFIGS[cfg]  # noqa: E741
    ref = torch.nn.LSTM(I, H, proj_size=P)
    ours = seqlab.LSTM(I, H, proj_size=P, backend=backend)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I)
    with torch.no_grad():  # same function, same weights
        assert torch.allclose(ours(x)[0], ref(x)[0], atol=1e-5)
    return x, (lambda x: ours(x)[0]), (lambda x: ref(x)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="C1P")
    ap.add_argument("--backend", default=None, help="seqlab backend (default: automatic)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--budget", type=float, default=0.3, help="seconds per timing")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rs.CLOCK["clock"] = time.process_time if args.clock == "cpu" else time.perf_counter
    import warnings

    warnings.filterwarnings("ignore", message="LSTM with projections is not supported")
    backend = seqlab.engine.resolve_backend(args.backend)
    print(
        f"seqlab ({backend}) / torch.nn, proj LSTM, float32, {args.threads} thread(s), "
        f"clock {args.clock}, median of {args.rounds} interleaved rounds"
    )
    print("| config (T, B, I, H, P) | mode | seqlab ms | torch.nn ms | ratio |")
    print("|---|---|---|---|---|")
    for cfg in args.configs.split(","):
        x, ours, ref = runners(cfg, args.backend)
        for train in (False, True):
            xin = x.clone().requires_grad_(train)
            steps = {
                "seqlab": rs.make_step(ours, xin, train),
                "torch": rs.make_step(ref, xin, train),
            }
            times, ratios = rs.interleaved(steps, args.rounds, args.budget)
            ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
            mode = "train" if train else "fwd"
            print(
                f"| {cfg} {CONFIGS[cfg]} | {mode} | {ms['seqlab']:.2f} | {ms['torch']:.2f} | "
                f"{statistics.median(ratios):.2f} |"
            )


if __name__ == "__main__":
    main()
