"""seqlab MultiHeadAttention vs torch.nn.MultiheadAttention: forward and training time.

Follows /work/shared/BENCHMARKS.md: both modules hold the same weights (converted with
``mha_from_torch``), run on the same inputs in one process, interleaved A B A B ... for
``--rounds`` rounds; each round times ``reps`` calls of each and the reported ratio is the
median of the per-round ratios ``seqlab / torch`` (> 1 = seqlab slower). Absolute times are
medians too, for orientation only.

Modes: ``fwd`` = self-attention forward under ``torch.no_grad()`` in eval mode (torch may take
its native fused inference path); ``train`` = forward + ``out.sum().backward()`` with
``x.requires_grad_(True)``. Masks: ``none`` and ``causal`` (torch gets the float causal mask and
``is_causal=True``; seqlab gets ``is_causal=True``). Both sides skip returning weights.
``seqlab`` uses the default backend (fused when the math is the same); ``math`` forces the
written-out equations.

    PYTHONPATH=src python benchmarks/attention_speed.py [--rounds 7] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from seqlab.attention import mha_from_torch

SIZES = [  # (name, B, T, E, heads)
    ("S", 16, 32, 64, 4),
    ("M", 8, 128, 128, 4),
    ("L", 4, 256, 256, 8),
]


def _timer(fn: Callable[[], None], reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def _calibrate(fn: Callable[[], None], target_s: float = 0.03) -> int:
    fn()  # warm-up (allocations, kernel selection)
    once = max(_timer(fn, 1), 1e-6)
    return max(1, min(200, int(target_s / once)))


def _callables(torch_mha, ours, x, mode, mask_kind):
    t = x.shape[1]
    torch_kw: dict = {"need_weights": False}
    our_kw: dict = {}
    if mask_kind == "causal":
        torch_kw.update(attn_mask=nn.Transformer.generate_square_subsequent_mask(t), is_causal=True)
        our_kw["is_causal"] = True

    def run_torch(inp):
        return torch_mha(inp, inp, inp, **torch_kw)[0]

    def run_ours(inp):
        return ours(inp, **our_kw).output

    if mode == "fwd":

        def wrap(f):
            def call():
                with torch.no_grad():
                    f(x)

            return call
    else:

        def wrap(f):
            def call():
                inp = x.detach().requires_grad_(True)
                f(inp).sum().backward()

            return call

    return wrap(run_torch), wrap(run_ours)


def measure(size, mode, mask_kind, rounds):
    _, b, t, e, h = size
    torch_mha = nn.MultiheadAttention(e, h, batch_first=True)
    ours = mha_from_torch(torch_mha)
    ours_math = mha_from_torch(torch_mha)
    ours_math.backend = "math"
    for m in (torch_mha, ours, ours_math):
        m.train(mode == "train")
    x = torch.randn(b, t, e)
    f_torch, f_ours = _callables(torch_mha, ours, x, mode, mask_kind)
    _, f_math = _callables(torch_mha, ours_math, x, mode, mask_kind)
    reps = _calibrate(f_torch)
    _calibrate(f_ours)
    _calibrate(f_math)
    times = {"torch": [], "seqlab": [], "math": []}
    ratios, ratios_math = [], []
    for _ in range(rounds):
        tt = _timer(f_torch, reps)
        to = _timer(f_ours, reps)
        tm = _timer(f_math, reps)
        times["torch"].append(tt)
        times["seqlab"].append(to)
        times["math"].append(tm)
        ratios.append(to / tt)
        ratios_math.append(tm / tt)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return med, statistics.median(ratios), statistics.median(ratios_math)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="small size only, 3 rounds")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes = SIZES[:1] if args.quick else SIZES
    rounds = 3 if args.quick else args.rounds
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, rounds={rounds}, "
        f"load average {load:.1f} on {os.cpu_count()} CPUs; "
        "ratio = median over rounds of (seqlab time / torch time)"
    )
    header = (
        "| size (B,T,E,h) | mode | mask | torch ms | seqlab ms | seqlab/torch "
        "| math ms | math/torch |"
    )
    print(header)
    print("|" + "---|" * 8)
    for size in sizes:
        name, b, t, e, h = size
        for mode in ("fwd", "train"):
            for mask_kind in ("none", "causal"):
                med, ratio, ratio_math = measure(size, mode, mask_kind, rounds)
                print(
                    f"| {name} ({b},{t},{e},{h}) | {mode} | {mask_kind} | {med['torch']:.3f} "
                    f"| {med['seqlab']:.3f} | {ratio:.2f} | {med['math']:.3f} "
                    f"| {ratio_math:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
