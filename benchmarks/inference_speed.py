"""Inference speed: onnxruntime (seqlab's ONNX export) vs seqlab (native) vs torch.nn.

Follows shared/BENCHMARKS.md: configurations C1, C4, P0; LSTM/GRU/RNN(tanh), 1 layer,
unidirectional, float32, time-major; forward only (``torch.no_grad()``);
``torch.set_num_threads(2)`` and an onnxruntime session with 2 intra-op threads. Each round
times the three back to back (rotating which goes first); ratios are medians of the
per-round ratios against torch.nn (lower is faster).

Generation: a character LM of the Shakespeare recipe's size (vocabulary 82 = the plays' 78
characters + 4 specials, embedding 64, one LSTM layer of 384; random weights — speed does not
depend on them), batch 1, one token per call: seqlab's ``LanguageModel.step`` on its engine,
the same model on torch.nn (``impl="torch"``), and the exported graph fed one token and its
state per ``session.run``. Reported as tokens/s (medians; absolute, so only comparable within one
run) and as ratios to torch.nn.

    python benchmarks/inference_speed.py           # ~3 min on 2 idle cores
    python benchmarks/inference_speed.py --quick   # ~1 min
    python benchmarks/inference_speed.py --threads 1   # less sensitive to a busy machine
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import onnxruntime as ort  # noqa: E402

import seqlab  # noqa: E402
from seqlab import engine  # noqa: E402
from seqlab.export import to_onnx  # noqa: E402
from seqlab.models import LanguageModel, LanguageModelConfig  # noqa: E402

CONFIGS = {"C1": (100, 32, 64, 128), "C4": (500, 16, 32, 64), "P0": (1000, 1, 8, 8)}
CELLS = {
    "LSTM": (torch.nn.LSTM, seqlab.LSTM),
    "GRU": (torch.nn.GRU, seqlab.GRU),
    "RNN": (torch.nn.RNN, seqlab.RNN),
}
LM_SIZE = dict(vocab_size=82, embed_size=64, hidden_size=384, num_layers=1, cell="lstm")
IMPLS = ("onnxruntime", "seqlab", "torch")


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def timed(step, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        step()
    return (time.perf_counter() - t0) / reps


def calibrate(step, budget_s: float) -> int:
    step()
    step()  # warm-up: allocations, oneDNN primitives, onnxruntime's first-run planning
    return max(1, min(500, int(budget_s / max(timed(step, 1), 1e-6))))


def interleave(steps: dict, rounds: int, budget: float) -> dict[str, list[float]]:
    """Per-round seconds per call of each step, rotating which goes first."""
    reps = {k: calibrate(s, budget) for k, s in steps.items()}
    names = list(steps)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            times[k].append(timed(steps[k], reps[k]))
    return times


def ratios(times: dict[str, list[float]], ref: str = "torch") -> dict[str, float]:
    return {
        k: statistics.median(a / b for a, b in zip(v, times[ref], strict=True))
        for k, v in times.items()
    }


def bench_layer(cell: str, cfg: str, rounds: int, budget: float, tmp: Path, threads: int):
    T, B, I, H = CONFIGS[cfg]
    torch.manual_seed(0)
    ref = CELLS[cell][0](I, H)
    ours = CELLS[cell][1](I, H)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, I)
    path = tmp / f"{cell}-{cfg}.onnx"
    to_onnx(ours, x, path)  # checked against onnxruntime before it is written
    sess, feed = ort_session(path, threads), {"x": x.numpy()}

    def run_torch():
        with torch.no_grad():
            ref(x)

    def run_seqlab():
        with torch.no_grad():
            ours(x)

    steps = {"onnxruntime": lambda: sess.run(None, feed), "seqlab": run_seqlab, "torch": run_torch}
    times = interleave(steps, rounds, budget)
    return {"cell": cell, "cfg": cfg, "ratio": ratios(times)}


def bench_generation(tokens: int, rounds: int, tmp: Path, threads: int):
    torch.manual_seed(0)
    ours = LanguageModel(LanguageModelConfig(**LM_SIZE)).eval()
    peer = LanguageModel(LanguageModelConfig(**LM_SIZE, impl="torch")).eval()
    peer.load_state_dict(ours.state_dict())
    path = tmp / "lm.onnx"
    to_onnx(ours, torch.randint(0, LM_SIZE["vocab_size"], (1, 8)), path)
    sess = ort_session(path, threads)

    def torch_loop(model):
        def run():
            with torch.no_grad():
                tok, state = torch.tensor([5]), model.start(1)
                for _ in range(tokens):
                    logits, state = model.step(tok, state)
                    tok = logits.argmax(-1)

        return run

    def run_ort():
        tok = np.array([[5]], dtype=np.int64)
        h = c = np.zeros((1, 1, LM_SIZE["hidden_size"]), np.float32)
        for _ in range(tokens):
            logits, h, c = sess.run(None, {"tokens": tok, "h0": h, "c0": c})
            tok = logits[:, -1].argmax(-1)[:, None]

    steps = {"onnxruntime": run_ort, "seqlab": torch_loop(ours), "torch": torch_loop(peer)}
    times = interleave(steps, rounds, 0.0)  # budget 0: one whole generation per round
    tok_s = {k: tokens / statistics.median(v) for k, v in times.items()}
    return tok_s, ratios(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds (~1 min)")
    ap.add_argument("--cells", default="LSTM,GRU,RNN")
    ap.add_argument("--configs", default="C1,C4,P0")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rounds, budget, tokens = (3, 0.02, 100) if args.quick else (7, 0.1, 300)
    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, threads {args.threads}, "
        f"seqlab backend: {engine.backends()['default']}"
    )
    print(f"rounds {rounds}; forward only (no grad), time-major, 1 layer, float32")
    print("\nForward time relative to torch.nn (median of per-round ratios; lower is faster)\n")
    print("| cell | config (T, B, I, H) | onnxruntime / torch.nn | seqlab / torch.nn |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for cell in args.cells.split(","):
            for cfg in args.configs.split(","):
                r = bench_layer(cell, cfg, rounds, budget, tmp, args.threads)["ratio"]
                print(
                    f"| {cell} | {cfg} {CONFIGS[cfg]} | {r['onnxruntime']:.2f} | "
                    f"{r['seqlab']:.2f} |",
                    flush=True,
                )
        tok_s, r = bench_generation(tokens, rounds, tmp, args.threads)
    print(
        f"\nGeneration, char LSTM LM {LM_SIZE['embed_size']}→{LM_SIZE['hidden_size']}, "
        f"vocabulary {LM_SIZE['vocab_size']}, batch 1, {tokens} greedy tokens per round "
        "(random weights)\n"
    )
    print("| implementation | tokens/s (this run) | time per token / torch.nn |")
    print("|---|---|---|")
    for k in IMPLS:
        print(f"| {k} | {tok_s[k]:,.0f} | {r[k]:.2f} |")


if __name__ == "__main__":
    main()
