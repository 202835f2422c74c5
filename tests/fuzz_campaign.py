"""The long fuzz campaign (``make fuzz``): thousands of generated cases, counted by outcome.

    python tests/fuzz_campaign.py [--cases 6000] [--chunk 300] [--seed 0] [--jobs 2]

Cases come from the strategies of ``fuzz_cases.py``, split evenly across the areas and run in
chunks, each chunk in its own Python process: a case that kills the process (a segfault, an
abort) is counted as a crash and named, and the campaign goes on with the next chunk. Prints
the counts per area and in total (correct / clear error / unclear error / wrong / crash),
then one reproducer per distinct failure. Exit status 1 when a failure lies outside the
regions marked ``known`` (owned by other work), else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(area: str, n: int, seed: int) -> None:
    """Run ``n`` cases of ``area``; one JSON line before (``s``) and after (``o``) each."""
    import warnings

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed

    import fuzz_cases

    warnings.simplefilter("ignore")
    import torch

    torch.set_num_threads(1)

    @hseed(seed)
    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(fuzz_cases.AREAS[area]())
    def one(case):
        print(json.dumps({"s": case.what}), flush=True)
        outcome, detail = fuzz_cases.classify(case)
        print(json.dumps({"o": outcome, "d": detail, "w": case.what, "k": case.known}), flush=True)

    one()


def _run_child(area: str, n: int, seed: int) -> list[dict]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", area, str(n), str(seed)],
        capture_output=True,
        text=True,
        env=env,
    )
    results, started = [], None
    for line in proc.stdout.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "s" in rec:
            started = rec["s"]
        else:
            results.append(rec)
            started = None
    if proc.returncode != 0:
        why = f"exit status {proc.returncode}" + (
            f" (signal {-proc.returncode})" if proc.returncode < 0 else ""
        )
        tail = proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else []
        known = "native (issue 16 item 3): hidden size 0" if started and "H=0" in started else ""
        results.append(
            {
                "o": "crash",
                "d": f"{why} {' '.join(tail)}"[:300],
                "w": started or "(between cases)",
                "k": known,
            }
        )
    return results


def run_chunk(area: str, n: int, seed: int) -> list[dict]:
    """``n`` cases of ``area``; after a crash, the rest of the chunk runs in a new process
    (with a new seed, so the same crash is not simply repeated)."""
    results: list[dict] = []
    attempt = 0
    while len(results) < n and attempt < 20:
        got = _run_child(area, n - len(results), seed + 7919 * attempt)
        results += got
        attempt += 1
        if not got or got[-1]["o"] != "crash":
            break  # hypothesis may stop early when it runs out of distinct cases
    for r in results:
        r["area"] = area
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=6000)
    ap.add_argument("--chunk", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--show", type=int, default=40, help="reproducers to print")
    ap.add_argument("--areas", default="", help="comma-separated subset of the areas")
    ap.add_argument("--child", nargs=3, metavar=("AREA", "N", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0

    sys.path.insert(0, str(HERE))
    from fuzz_cases import AREAS, OUTCOMES

    areas = [a.strip() for a in args.areas.split(",") if a.strip()] or list(AREAS)
    per_area = -(-args.cases // len(areas))
    jobs = []
    for k, area in enumerate(areas):
        for j in range(0, per_area, args.chunk):
            jobs.append((area, min(args.chunk, per_area - j), args.seed * 1000 + k * 100 + j))
    t0 = time.time()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        chunks = list(pool.map(lambda a: run_chunk(*a), jobs))
    results = [r for c in chunks for r in c]

    by_area: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        by_area[r["area"]][r["o"]] += 1
    width = max(len(a) for a in areas) + 2
    print(f"{'area':<{width}}" + "".join(f"{o:>15}" for o in OUTCOMES) + f"{'cases':>8}")
    total: Counter = Counter()
    for area in areas:
        c = by_area[area]
        total.update(c)
        print(
            f"{area:<{width}}" + "".join(f"{c[o]:>15}" for o in OUTCOMES) + f"{sum(c.values()):>8}"
        )
    print(
        f"{'total':<{width}}"
        + "".join(f"{total[o]:>15}" for o in OUTCOMES)
        + f"{sum(total.values()):>8}"
    )
    bad = [r for r in results if r["o"] not in ("correct", "clear error")]
    known = [r for r in bad if r.get("k")]
    new = [r for r in bad if not r.get("k")]
    print(
        f"\n{len(results)} cases in {time.time() - t0:.0f} s; {len(bad)} failures: "
        f"{len(known)} in known regions (other work), {len(new)} elsewhere"
    )
    for tag, count in Counter((r["k"], r["o"]) for r in known).most_common():
        print(f"  {count:>5}  {tag[1]:<14} known: {tag[0]}")
    seen: set = set()
    for label, group in (("elsewhere", new), ("known", known)):
        shown = 0
        for r in group:
            key = (r["area"], r["o"], r["d"][:60], r.get("k"))
            if key in seen or shown >= args.show:
                continue
            seen.add(key)
            shown += 1
            tag = f" [{r['k']}]" if r.get("k") else ""
            print(f"- {label} {r['area']} {r['o']}{tag}: {r['w']}\n    {r['d']}")
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
