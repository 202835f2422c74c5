"""The LayerNorm loops' two thread-team layouts, rows vs units, timed alternately in one run.

The native LN loops split a step across the team either by batch rows (each thread runs the
whole step on its rows, with all of W_hh) or by hidden units (three meetings per step for the
LSTM); ``SEQLAB_LN_SPLIT`` forces one, and the loops read it on every call, so this script
switches it between interleaved rounds. Per shape it prints both training times (forward +
backward, T=100, I=64), their ratio rows/units (< 1: rows faster) and the layout the default
choice (``ln_row_team_size``) takes. The thresholds in ``csrc/layernorm_cells.h`` come from
these numbers.

    python benchmarks/ln_layout.py [--threads 2] [--rounds 7] [--shapes 32x128,2x256,...]
"""

from __future__ import annotations

import argparse
import os
import statistics

import torch

from recurrence_speed import interleaved, make_step

SHAPES = "32x128,64x256,128x512,16x64,2x128,8x128,2x256,8x256,4x512,16x512,32x512,64x512"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--budget", type=float, default=0.3, help="seconds per timing")
    parser.add_argument("--mode", default="lnlstm", choices=("lnlstm", "lngru"))
    parser.add_argument("--shapes", default=SHAPES, help="BxH,... (T=100, I=64)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import seqlab
    from seqlab.engine import native

    ops = native.load()
    if ops is None:
        raise SystemExit("the native engine is not available here")
    G = 4 if args.mode == "lnlstm" else 3
    print(
        f"torch {torch.__version__}, {args.threads} threads, {args.mode} train, T=100, I=64; "
        f"ratio = rows/units (< 1: rows faster), median of {args.rounds} interleaved rounds"
    )
    print("| B | H | W_hh KB | rows ms | units ms | rows/units | default |")
    print("|" + "---|" * 7)
    for shape in args.shapes.split(","):
        B, H = (int(v) for v in shape.split("x"))
        torch.manual_seed(0)
        layer = seqlab.RecurrentLayer(args.mode, 64, H)
        x = torch.randn(100, B, 64, requires_grad=True)
        step = make_step(lambda v, m=layer: m(v)[0], x, True)

        def under(split: str, step=step):
            def run() -> None:
                os.environ["SEQLAB_LN_SPLIT"] = split
                step()

            return run

        try:
            times, ratios = interleaved(
                {"rows": under("rows"), "units": under("units")}, args.rounds, args.budget
            )
        finally:
            os.environ.pop("SEQLAB_LN_SPLIT", None)
        nt = ops.ln_row_team_size(B, G, H, 4)
        ms = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        print(
            f"| {B} | {H} | {G * H * H * 4 // 1024} | {ms['rows']:.2f} | {ms['units']:.2f} | "
            f"{statistics.median(ratios):.2f} | {'rows' if nt > 1 else 'units'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
