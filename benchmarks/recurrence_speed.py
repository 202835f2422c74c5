"""Recurrence speed: seqlab's engine vs torch.nn, interleaved in one process.

Follows shared/BENCHMARKS.md: configurations C1–C4 and P0, LSTM/GRU/RNN(tanh), 1 layer,
unidirectional, float32, time-major, ``torch.set_num_threads(2)``. Each round times seqlab
and torch.nn back to back (alternating which goes first); the reported ratio is the median of
the per-round ratios seqlab/torch.nn (lower is better). "% peak" divides achieved FLOP/s by the
median 2048³ float32 ``torch.mm`` rate measured in this run. A last section measures the peak
memory of one C3 training step for each implementation, each in a fresh process.

    python benchmarks/recurrence_speed.py            # full table (~10 min on 2 cores)
    python benchmarks/recurrence_speed.py --quick    # < 2 min idle: 3 rounds, no memory probe
    python benchmarks/recurrence_speed.py --recurrent-only   # only the Recurrent(cell) rows
    python benchmarks/recurrence_speed.py --minimal-only     # only the minGRU/minLSTM rows

The LayerNorm table times seqlab's LayerNorm LSTM/GRU layers (``lnlstm``/``lngru``, the
kernel the engine picks: the fused one unless the backend has its own) against seqlab's
LSTM/GRU layer of the same size on the same backend (target for LN-LSTM: <= 1.3, issue 13),
and against the same LN layer on the reference loop (the speed-up of the kernel).

    python benchmarks/recurrence_speed.py --ln-only          # only the LayerNorm rows

The last table times ``seqlab.Recurrent(cell)`` (and a 2-layer bidirectional
``Stacked``/``Bidirectional`` composition of cells) against the equivalent seqlab layer
with the same weights, interleaved the same way; target ratio <= 1.1 (train, C1 and C4).

The minGRU/minLSTM section (issue 13) times their training (forward + backward) at
T=1000, B=16, H=256 and I=256 (= H) or I=64 against ``seqlab.GRU`` of the same sizes
(the GEMMs bound the speed-up by 3(I+H)/(G·I): 3.0 for minGRU at I=H), by each method of
:mod:`seqlab.engine.minimal`: ``scan`` (what ``auto`` runs on CPU: the native chunked scan,
K time chunks of the op's choice, K = 1 on <= 2 threads at these sizes), ``scan K=4`` (the
same op forced to 4 chunks: the time-parallel decomposition's own cost), ``sequential``
(the op with one chunk) and, at I=256, ``log-scan`` (the log-space scan by torch ops, the
CUDA path); the ratio is GRU time / min time (speed-up, higher is better; goal >= 3), and
the minGRU/scan rows are also timed against ``torch.nn.GRU``. Then the sequential minGRU
at P0 in µs per step (goal <= 2, train and forward), interleaved with ``seqlab.GRU`` at P0,
and one step of ``Cell("mingru")`` (one Python call per token, as in generation) against
``seqlab.GRUCell``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from seqlab import engine  # noqa: E402
from seqlab.functional import get_spec  # noqa: E402

CONFIGS = {  # name: (T, B, I, H)
    "C1": (100, 32, 64, 128),
    "C2": (100, 64, 256, 256),
    "C3": (50, 128, 512, 512),
    "C4": (500, 16, 32, 64),
    "P0": (1000, 1, 8, 8),
}
CELLS = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn_tanh"}  # gate counts from the descriptions
# train-time ratio targets seqlab/torch.nn (issue 3); forward: <= 1.0 everywhere
TRAIN_TARGET = {
    "LSTM": {"C1": 1.0, "C2": 1.0, "C3": 1.0, "C4": 0.8, "P0": 1.0},
    "GRU": {"C1": 0.5, "C2": 0.9, "C3": 0.9, "C4": 0.5, "P0": 0.5},
    "RNN": {"C1": 0.5, "C2": 0.9, "C3": 0.9, "C4": 0.5, "P0": 0.5},
}
P0_STEP_TARGET_US = 5.0


def torch_module(cell: str, I: int, H: int) -> torch.nn.Module:
    if cell == "LSTM":
        return torch.nn.LSTM(I, H)
    if cell == "GRU":
        return torch.nn.GRU(I, H)
    return torch.nn.RNN(I, H, nonlinearity="tanh")


def seqlab_runner(cell: str, ref: torch.nn.Module, backend: str | None):
    """seqlab's layer with torch.nn's weights (seqlab.<cell> if available, else run_layer)."""
    mode = CELLS[cell]
    try:
        import seqlab

        cls = getattr(seqlab, cell)
        layer = cls(ref.input_size, ref.hidden_size, backend=backend)
        layer.load_state_dict(ref.state_dict())
        return lambda x: layer(x)[0]
    except (ImportError, AttributeError, TypeError):
        pass
    w = [ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0, ref.bias_hh_l0]

    def run(x: torch.Tensor) -> torch.Tensor:
        B, H = x.shape[1], ref.hidden_size
        h0 = x.new_zeros(B, H)
        state = (h0,) * len(get_spec(mode).state)
        return engine.run_layer(mode, x, state, *w, backend=backend)[0]

    return run


def make_step(fn, x: torch.Tensor, train: bool):
    if train:

        def step() -> None:
            x.grad = None
            fn(x).sum().backward()
    else:

        def step() -> None:
            with torch.no_grad():
                fn(x)

    return step


CLOCK = {"clock": time.perf_counter}  # --clock cpu: time.process_time


def timed(step, reps: int) -> float:
    clock = CLOCK["clock"]
    t0 = clock()
    for _ in range(reps):
        step()
    return (clock() - t0) / reps


def calibrate(step, budget_s: float) -> int:
    step()  # warm-up (allocations, oneDNN primitive creation)
    once = timed(step, 1)
    return max(1, min(200, int(budget_s / max(once, 1e-6))))


def gemm_peak(rounds: int) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    rates = []
    for _ in range(rounds):
        rates.append(2 * 2048**3 / timed(lambda: torch.mm(a, b), 2))
    return statistics.median(rates)


def interleaved(steps, rounds, budget):
    """Time ``steps`` (two named callables) alternately; per-round times and a/b ratios."""
    a, b = steps
    reps = {k: calibrate(s, budget) for k, s in steps.items()}
    times = {a: [], b: []}
    ratios = []
    for r in range(rounds):
        order = [a, b] if r % 2 == 0 else [b, a]
        got = {k: timed(steps[k], reps[k]) for k in order}
        for k in got:
            times[k].append(got[k])
        ratios.append(got[a] / got[b])
    return times, ratios


def bench_one(cell, cfg, train, rounds, budget, backend):
    T, B, I, H = CONFIGS[cfg]
    torch.manual_seed(0)
    ref = torch_module(cell, I, H)
    ours = seqlab_runner(cell, ref, backend)
    x = torch.randn(T, B, I, requires_grad=train)
    steps = {"seqlab": make_step(ours, x, train), "torch": make_step(lambda v: ref(v)[0], x, train)}
    times, ratios = interleaved(steps, rounds, budget)
    G = get_spec(CELLS[cell]).G
    flops = T * 2 * B * (I + H) * G * H * (3 if train else 1)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "cell": cell,
        "cfg": cfg,
        "mode": "train" if train else "fwd",
        "ms": {k: 1e3 * v for k, v in med.items()},
        "tok_s": T * B / med["seqlab"],
        "gflops": {k: flops / v / 1e9 for k, v in med.items()},
        "us_step": {k: 1e6 * v / T for k, v in med.items()},
        "us_step_best": {k: 1e6 * min(v) / T for k, v in times.items()},
        "ratio": statistics.median(ratios),
    }


COMPOSITIONS = ("cell", "stack2-bi")  # Recurrent(cell); Stacked of 2 Bidirectional(Recurrent)


def recurrent_runners(cell: str, cfg: str, composition: str):
    """``(Recurrent composition, equivalent layer)`` sharing one set of weights."""
    import seqlab
    from seqlab.cells import make_cell

    T, B, I, H = CONFIGS[cfg]
    deep = composition == "stack2-bi"
    torch.manual_seed(0)
    layer = getattr(seqlab, cell)(I, H, num_layers=2 if deep else 1, bidirectional=deep)

    def cell_of(suffix: str):
        made = make_cell(CELLS[cell], layer.params(suffix)["w_ih"].shape[1], H)
        for p in made.spec.params:
            setattr(made, p.attr, getattr(layer, p.attr + suffix))  # the layer's tensors
        return made

    if deep:
        module = seqlab.Stacked(
            [
                seqlab.Bidirectional(
                    seqlab.Recurrent(cell_of(f"_l{k}")), seqlab.Recurrent(cell_of(f"_l{k}_reverse"))
                )
                for k in range(2)
            ]
        )
    else:
        module = seqlab.Recurrent(cell_of("_l0"))
    return (lambda x: module(x)[0]), (lambda x: layer(x)[0])


def bench_recurrent(cell, cfg, composition, rounds, budget):
    T, B, I, H = CONFIGS[cfg]
    ours, layer = recurrent_runners(cell, cfg, composition)
    x = torch.randn(T, B, I, requires_grad=True)
    steps = {"recurrent": make_step(ours, x, True), "layer": make_step(layer, x, True)}
    times, ratios = interleaved(steps, rounds, budget)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    return med, statistics.median(ratios)


RECURRENT_TARGET = 1.1

# LayerNorm cells: (kind, seqlab layer they are timed against); train-time ratio targets
LN_CELLS = {"LNLSTM": ("lnlstm", "LSTM"), "LNGRU": ("lngru", "GRU")}
LN_TARGET = {"LNLSTM": 1.3}  # issue 13 (C1, C2)
LN_CONFIGS = ("C1", "C2")


def ln_kernel(mode: str, backend: str | None) -> str:
    """Name of the kernel the engine runs ``mode`` on (as :func:`seqlab.engine.run` picks)."""
    name = engine.resolve_backend(backend, torch.empty(0))
    if name == "reference":
        return "reference"
    spec = get_spec(mode)
    kernels = [k for k in engine.EXTRA_KERNELS if k.covers(spec)]
    named = [k for k in kernels if k.name == name]
    return (named or kernels)[0].name if kernels else "reference"


def bench_ln(cell: str, cfg: str, rounds: int, budget: float, backend: str | None):
    """Train-time ratios LN layer / classic layer and reference-loop LN / LN (one process)."""
    import seqlab

    T, B, I, H = CONFIGS[cfg]
    mode, peer = LN_CELLS[cell]
    torch.manual_seed(0)
    ln = seqlab.RecurrentLayer(mode, I, H, backend=backend)
    base = getattr(seqlab, peer)(I, H, backend=backend)
    slow = seqlab.RecurrentLayer(mode, I, H, backend="reference")
    slow.load_state_dict(ln.state_dict())
    x = torch.randn(T, B, I, requires_grad=True)
    fast = make_step(lambda v: ln(v)[0], x, True)
    steps = {"ln": fast, "base": make_step(lambda v: base(v)[0], x, True)}
    times, ratios = interleaved(steps, rounds, budget)
    ref_steps = {"reference": make_step(lambda v: slow(v)[0], x, True), "ln": fast}
    ref_times, speedups = interleaved(ref_steps, max(3, rounds // 2), budget)
    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
    med["reference"] = 1e3 * statistics.median(ref_times["reference"])
    return med, statistics.median(ratios), statistics.median(speedups)


MINIMAL_SIZES = (1000, 16, 256, 256)  # T, B, I, H
MINIMAL_INPUTS = (256, 64)  # I = H (as C2), and a narrower input
MINIMAL_SPEEDUP_TARGET = 3.0
MINIMAL_P0_TARGET_US = 2.0


def minimal_runner(layer: torch.nn.Module, method: str, chunks: int | None = None):
    from seqlab.engine import minimal

    def run(x: torch.Tensor) -> torch.Tensor:
        with minimal.evaluation(method, chunks):
            return layer(x)[0]

    return run


MINIMAL_METHODS = {  # row name: (method, chunks, only at I = H)
    "scan": ("scan", None, False),
    "scan K=4": ("scan", 4, True),
    "sequential": ("sequential", None, False),
    "log-scan": ("log-scan", None, True),
}


def bench_minimal(rounds: int, budget: float) -> list[tuple[str, bool]]:
    """Print the minGRU/minLSTM tables; returns (row name, met) pairs."""
    import seqlab

    results = []
    T, B, _, H = MINIMAL_SIZES
    print(f"\nminGRU/minLSTM training (forward + backward) vs seqlab.GRU, T={T}, B={B}, "
          f"H={H}, I as given; speed-up = GRU time / min time, goal >= "
          f"{MINIMAL_SPEEDUP_TARGET:.0f} for the parallel scan (the other methods: for "
          f"comparison); GEMM bound = GRU GEMM flops / min GEMM flops = 3(I+H) / (G·I), the "
          f"speed-up if the min cell's pointwise work were free:"
          )  # fmt: skip
    print("| cell | I | method | min ms | peer ms | speed-up | GEMM bound | met |")
    print("|" + "---|" * 8)
    for I in MINIMAL_INPUTS:  # noqa: E741
        torch.manual_seed(0)
        grus = {"GRU": seqlab.GRU(I, H), "torch.nn.GRU": torch.nn.GRU(I, H)}
        x = torch.randn(T, B, I, requires_grad=True)
        for mode in ("mingru", "minlstm"):
            layer = seqlab.RecurrentLayer(mode, I, H)
            bound = 3 * (I + H) / (layer.spec.G * I)
            for row, (method, chunks, at_h) in MINIMAL_METHODS.items():
                if at_h and I != H:
                    continue
                peers = ["GRU", "torch.nn.GRU"] if (mode, row) == ("mingru", "scan") else ["GRU"]
                for peer in peers:
                    steps = {
                        "gru": make_step(lambda v, g=grus[peer]: g(v)[0], x, True),
                        "min": make_step(minimal_runner(layer, method, chunks), x, True),
                    }
                    times, ratios = interleaved(steps, rounds, budget)
                    med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
                    speedup = statistics.median(ratios)
                    ok = speedup >= MINIMAL_SPEEDUP_TARGET
                    goal = row == "scan" and peer == "GRU"  # the goal is the parallel scan's
                    if goal:
                        results.append((f"{mode}/{row}/I{I}", ok))
                    verdict = ("met" if ok else "NOT met") if goal else "-"
                    print(f"| {mode} | {I} | {row}{'' if peer == 'GRU' else ' vs ' + peer} | "
                          f"{med['min']:.1f} | {med['gru']:.1f} | {speedup:.2f} | {bound:.1f} | "
                          f"{verdict} |", flush=True)  # fmt: skip
    T, B, I, H = CONFIGS["P0"]
    print(f"\nSequential minGRU at P0 (T={T}, B={B}, I={I}, H={H}), µs/step, goal <= "
          f"{MINIMAL_P0_TARGET_US:.0f}; ratio = minGRU / seqlab.GRU time:")  # fmt: skip
    print("| mode | minGRU µs/step | best round | GRU µs/step | ratio | met |")
    print("|" + "---|" * 6)
    torch.manual_seed(0)
    layer, gru = seqlab.RecurrentLayer("mingru", I, H), seqlab.GRU(I, H)
    for train in (False, True):
        x = torch.randn(T, B, I, requires_grad=train)
        steps = {
            "min": make_step(minimal_runner(layer, "sequential"), x, train),
            "gru": make_step(lambda v: gru(v)[0], x, train),
        }
        times, ratios = interleaved(steps, rounds, budget)
        us = {k: 1e6 * statistics.median(v) / T for k, v in times.items()}
        best = 1e6 * min(times["min"]) / T
        ok = us["min"] <= MINIMAL_P0_TARGET_US
        mode = "train" if train else "fwd"
        results.append((f"mingru/sequential/P0/{mode}", ok))
        ratio = statistics.median(ratios)
        print(f"| {mode} | {us['min']:.2f} | {best:.2f} | {us['gru']:.2f} | {ratio:.2f} | "
              f"{'met' if ok else 'NOT met'} |", flush=True)  # fmt: skip
    cell, gru_cell = seqlab.Cell("mingru", I, H), seqlab.GRUCell(I, H)
    x1, h1 = torch.randn(B, I), torch.zeros(B, H)
    with torch.no_grad():
        steps = {"min": lambda: cell(x1, h1), "gru": lambda: gru_cell(x1, h1)}
        times, ratios = interleaved(steps, rounds, budget)
    us = {k: 1e6 * statistics.median(v) for k, v in times.items()}
    print(f"\nOne Cell call (generation, one token, no grad): Cell('mingru') {us['min']:.1f} µs, "
          f"GRUCell {us['gru']:.1f} µs, ratio {statistics.median(ratios):.2f}")  # fmt: skip
    return results


MEMORY_CHILD = """
import json, sys, torch
sys.path.insert(0, {src!r}); sys.path.insert(0, {bench!r})
torch.set_num_threads(2)
import recurrence_speed as rs
cell, impl = {cell!r}, {impl!r}
T, B, I, H = rs.CONFIGS["C3"]
torch.manual_seed(0)
ref = rs.torch_module(cell, I, H)
fn = rs.seqlab_runner(cell, ref, None) if impl == "seqlab" else (lambda v: ref(v)[0])
x = torch.randn(T, B, I, requires_grad=True)
fn(x[:2]).sum().backward()  # load kernels / primitives outside the measured step
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the high-water mark
fn(x).sum().backward()
print(json.dumps(status("VmHWM:") - before))
"""


def peak_memory(cell: str, impl: str) -> float | None:
    code = MEMORY_CHILD.format(
        src=str(ROOT / "src"), bench=str(ROOT / "benchmarks"), cell=cell, impl=impl
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        print(f"memory probe failed for {cell}/{impl}: {out.stderr[-500:]}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1]) / 2**20


def verdict(row) -> tuple[str, bool]:
    target = 1.0 if row["mode"] == "fwd" else TRAIN_TARGET[row["cell"]][row["cfg"]]
    return f"<= {target:.1f}", row["ratio"] <= target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, under 2 minutes")
    parser.add_argument("--backend", default=None, help="force a seqlab backend")
    parser.add_argument("--cells", default="LSTM,GRU,RNN")
    parser.add_argument("--configs", default="C1,C2,C3,C4,P0")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--rounds", type=int, default=None, help="override rounds per row")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time, steadier on a crowded machine (use with --threads 1)",
    )
    parser.add_argument("--budget", type=float, default=None, help="seconds per timing")
    parser.add_argument(
        "--recurrent-only", action="store_true", help="only the Recurrent(cell) vs layer rows"
    )
    parser.add_argument(
        "--ln-only", "--layernorm-only", action="store_true", help="only the LayerNorm cell rows"
    )
    parser.add_argument("--ln-configs", default=",".join(LN_CONFIGS))
    parser.add_argument("--minimal-only", action="store_true", help="only the minGRU/minLSTM rows")
    args = parser.parse_args()
    only = args.recurrent_only or args.ln_only
    torch.set_num_threads(args.threads)
    CLOCK["clock"] = time.process_time if args.clock == "cpu" else time.perf_counter
    rounds, budget = (3, 0.01) if args.quick else (7, 0.05)
    rounds, budget = args.rounds or rounds, args.budget or budget
    report = engine.backends()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, seqlab backend: "
          f"{report['default']} ({report['why']})")  # fmt: skip
    peak = gemm_peak(3 if args.quick else 7)
    print(f"float32 GEMM peak (2048^3, median): {peak / 1e9:.1f} GFLOP/s")
    header = (
        "| cell | cfg | mode | seqlab ms | torch ms | seqlab tok/s | seqlab %peak | "
        "torch %peak | ratio | target | met |"
    )
    rows = []
    if args.minimal_only:
        missed = [name for name, ok in bench_minimal(rounds, budget) if not ok]
        print("\nminGRU/minLSTM goals not met: " + (", ".join(missed) if missed else "none"))
        return
    print(header)
    print("|" + "---|" * 11)
    for cell in [] if only else args.cells.split(","):
        for cfg in args.configs.split(","):
            for train in (False, True):
                row = bench_one(cell, cfg, train, rounds, budget, args.backend)
                target, ok = verdict(row)
                rows.append((row, ok))
                g = row["gflops"]
                print(
                    f"| {cell} | {cfg} | {row['mode']} | {row['ms']['seqlab']:.2f} | "
                    f"{row['ms']['torch']:.2f} | {row['tok_s']:.0f} | "
                    f"{100 * g['seqlab'] * 1e9 / peak:.0f}% | {100 * g['torch'] * 1e9 / peak:.0f}% "
                    f"| {row['ratio']:.2f} | {target} | {'met' if ok else 'NOT met'} |",
                    flush=True,
                )
    print("" if only else "\nP0 per-step time (train), target <= 5 µs/step:")
    for row, _ in rows:
        if row["cfg"] == "P0" and row["mode"] == "train":
            us, best = row["us_step"], row["us_step_best"]
            ok = us["seqlab"] <= P0_STEP_TARGET_US
            print(f"  {row['cell']}: seqlab {us['seqlab']:.2f} µs/step (best round "
                  f"{best['seqlab']:.2f}), torch.nn {us['torch']:.2f} (best {best['torch']:.2f})"
                  f" -> {'met' if ok else 'NOT met'}")  # fmt: skip
    if not (args.no_memory or args.quick or only) and "C3" in args.configs:
        print("\nPeak memory of one C3 training step (fresh process each, MiB):")
        for cell in args.cells.split(","):
            ours, theirs = peak_memory(cell, "seqlab"), peak_memory(cell, "torch")
            if ours is None or theirs is None:
                continue
            ok = ours <= theirs
            print(f"  {cell}: seqlab {ours:.0f}, torch.nn {theirs:.0f} -> "
                  f"{'met' if ok else 'NOT met'}")  # fmt: skip
    if not args.recurrent_only:
        print("\nLayerNorm cells vs seqlab's classic layer (same backend), train:")
        print(
            "| cell | cfg | LN kernel | LN ms | classic ms | LN/classic | target | met | "
            "reference ms | reference/LN |"
        )
        print("|" + "---|" * 10)
    for cell in [] if args.recurrent_only else LN_CELLS:
        for cfg in args.ln_configs.split(","):
            med, ratio, speedup = bench_ln(cell, cfg, rounds, budget, args.backend)
            target = LN_TARGET.get(cell)
            ok = target is None or ratio <= target
            if not ok:
                rows.append(({"cell": cell, "cfg": cfg, "mode": "train/classic"}, False))
            kernel = ln_kernel(LN_CELLS[cell][0], args.backend)
            print(f"| {cell} | {cfg} | {kernel} | {med['ln']:.2f} | {med['base']:.2f} | "
                  f"{ratio:.2f} | {'-' if target is None else f'<= {target}'} | "
                  f"{'-' if target is None else 'met' if ok else 'NOT met'} | "
                  f"{med['reference']:.2f} | {speedup:.2f} |", flush=True)  # fmt: skip
    if not args.ln_only:
        print("\nRecurrent(cell) vs the equivalent layer, train, target <= 1.1:")
        print("| cell | cfg | composition | Recurrent ms | layer ms | ratio | met |")
        print("|" + "---|" * 7)
    for cell in [] if args.ln_only else ("LSTM", "GRU"):
        for cfg in ("C1", "C4"):
            for comp in COMPOSITIONS:
                med, ratio = bench_recurrent(cell, cfg, comp, rounds, budget)
                ok = ratio <= RECURRENT_TARGET
                if not ok:
                    rows.append(({"cell": cell, "cfg": cfg, "mode": f"Recurrent/{comp}"}, False))
                print(f"| {cell} | {cfg} | {comp} | {med['recurrent']:.2f} | {med['layer']:.2f} "
                      f"| {ratio:.2f} | {'met' if ok else 'NOT met'} |", flush=True)  # fmt: skip
    missed = [f"{r['cell']}/{r['cfg']}/{r['mode']}" for r, ok in rows if not ok]
    if not only:
        missed += [name for name, ok in bench_minimal(rounds, budget) if not ok]
    print("\nratio targets not met: " + (", ".join(missed) if missed else "none"))


if __name__ == "__main__":
    main()
