"""The ``seqlab`` command line (click). Library code logs; only this package prints.

seqlab train TASK [--model lstm|gru|rnn|transformer] [--config F] [--set k=v ...]
seqlab evaluate RUN          seqlab generate RUN --prompt TEXT
seqlab predict RUN INPUT...  seqlab data list | info NAME | install NAME
seqlab demo [--minutes M]    seqlab bench
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from seqlab.cli import validate
from seqlab.cli.bench import bench
from seqlab.cli.data_cmd import data
from seqlab.cli.errors import CliError, friendly_errors
from seqlab.tasks import TASK_NAMES, RunDir, get_task, resolve_config, task_of_run
from seqlab.tasks.base import MODEL_KINDS
from seqlab.tasks.interrupt import EXIT_DIVERGED, stop_signals

console = Console(highlight=False)


def _defaults_epilog() -> str:
    """Every task's default recipe, shown at the bottom of ``seqlab train --help``."""
    lines = ["\b", "Task defaults (change with --config FILE.toml or --set key=value):"]
    for name in TASK_NAMES:
        cfg = get_task(name).Config()
        items = ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(cfg).items())
        lines += ["\b", f"  {name}: {items}"]
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="seqlab")
@click.option("-v", "--verbose", is_flag=True, help="Log library messages to stderr.")
def main(verbose: bool) -> None:
    """seqlab: recurrent networks, attention and Transformers on real sequence tasks."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s"
    )


def _printer(every: int = 10):
    """Progress callback: every eval, and every ``every``-th train log line."""
    count = {"n": 0}

    def show(event: dict[str, Any]) -> None:
        if event["kind"] == "eval":
            vals = "  ".join(
                f"{k}={v:.4g}"
                for k, v in event.items()
                if k not in ("kind", "step", "elapsed", "time")
            )
            console.print(
                f"[bold]eval[/] step {event['step']:>6}  {event['elapsed']:>7.0f}s  {vals}"
            )
        elif event["kind"] == "train":
            count["n"] += 1
            if count["n"] % every == 0:
                console.print(
                    f"train step {event['step']:>6}  {event['elapsed']:>7.0f}s  "
                    f"loss {event['loss']:.4f}  |g| {event['grad_norm']:.3g}"
                )

    return show


def run_training(
    task_name: str,
    config_file: str | None,
    overrides: tuple[str, ...],
    options: dict[str, Any],
    runs_dir: str,
    quiet: bool = False,
    resume: str | None = None,
) -> tuple[RunDir, dict]:
    task = get_task(task_name)
    if resume:  # the run's own settings; only the budget options may change
        run = RunDir(resume)
        cfg = resolve_config(task.Config, run.path / "config.toml", (), options)
        task.setup(cfg)
        run.resuming = True
        run.write_config(dataclasses.asdict(cfg))
    else:
        cfg = resolve_config(task.Config, config_file, overrides, options)
        task.setup(cfg)  # validates the model kind before creating a folder
        run = RunDir.create(runs_dir, task_name, config=dataclasses.asdict(cfg))
    console.print(
        f"[bold]{task_name}[/]: {task.description}\nmodel {cfg.model}, budget "
        f"{cfg.minutes:g} min, run folder {run.path}" + (" (resumed)" if resume else "")
    )
    t0 = time.perf_counter()
    with stop_signals():  # Ctrl-C / SIGTERM: checkpoint, then exit 130 / 143
        summary = task.train(cfg, run, progress=None if quiet else _printer())
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    run.write_summary(summary)
    if run.outcome is not None:
        raise CliError(f"{run.outcome[0]}: {run.outcome[1]}; run folder {run.path}", EXIT_DIVERGED)
    return run, summary


def _print_summary(run: RunDir, summary: dict[str, Any]) -> None:
    console.print("[bold]results[/] (held-out split):")
    for k, v in summary.items():
        if k in ("sample", "grad_through_time", "predictions") or isinstance(v, dict | list):
            continue
        console.print(f"  {k:<28} {v:.4f}" if isinstance(v, float) else f"  {k:<28} {v}")
    if "sample" in summary:
        console.print("[bold]sample[/]:")
        console.print(summary["sample"], markup=False)
    pngs = sorted(p.name for p in run.path.glob("*.png"))
    console.print(f"run folder: {run.path}  (plots: {', '.join(pngs) or 'none'})")


@main.command()
@click.argument("task", type=click.Choice(TASK_NAMES), required=False)
@click.option(
    "--model",
    type=click.Choice(MODEL_KINDS),
    default=None,
    help="Network kind (default: the task's recipe, lstm).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="TOML file of settings (flat key = value).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one setting, e.g. --set hidden=256 (repeatable).",
)
@click.option(
    "--minutes",
    type=float,
    default=None,
    help="Training budget in minutes (wall clock; --set clock=cpu counts CPU time).",
)
@click.option("--max-steps", type=int, default=None, help="Stop after this many steps.")
@click.option(
    "--data",
    "data_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Your own data file instead of the bundled dataset.",
)
@click.option("--encoding", default=None, help="Text encoding of --data (default utf-8).")
@click.option("--limit", type=int, default=None, help="Use only the first N items (smoke runs).")
@click.option("--seed", type=int, default=None, help="Random seed.")
@click.option("--threads", type=int, default=None, help="Torch CPU threads.")
@click.option("--runs-dir", default="runs", show_default=True, help="Where run folders go.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
@click.option(
    "--resume",
    "resume_dir",
    metavar="RUN",
    type=click.Path(exists=True, file_okay=False),
    help="Continue RUN from its last checkpoint (its own settings; --minutes/--max-steps may "
    "change).",
)
@friendly_errors
def train(
    task,
    model,
    config_file,
    overrides,
    minutes,
    max_steps,
    data_file,
    encoding,
    limit,
    seed,
    threads,
    runs_dir,
    quiet,
    resume_dir,
):
    """Train TASK and write runs/<task>-<time>/ (config, checkpoint, metrics, plots)."""
    if resume_dir:
        others = {"model": model, "config": config_file, "set": overrides, "data": data_file,
                  "encoding": encoding, "limit": limit, "seed": seed, "threads": threads,
                  "minutes": minutes, "max_steps": max_steps}  # fmt: skip
        task = validate.check_resume(Path(resume_dir), task, TASK_NAMES, others)
    elif task is None:
        raise validate.BadOption("missing TASK (or --resume RUN)")
    options = {
        "model": model,
        "minutes": minutes,
        "max_steps": max_steps,
        "data": data_file,
        "encoding": encoding,
        "limit": limit,
        "seed": seed,
        "threads": threads,
    }
    run, summary = run_training(
        task, config_file, overrides, options, runs_dir, quiet, resume=resume_dir
    )
    _print_summary(run, summary)


@main.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@friendly_errors
def evaluate(run_dir, as_json):
    """Recompute the held-out metrics of a trained RUN folder."""
    run = RunDir(run_dir)
    metrics = task_of_run(run).evaluate(run)
    if as_json:
        click.echo(json.dumps(metrics))
    else:
        for k, v in metrics.items():
            console.print(f"{k:<20} {v:.4f}" if isinstance(v, float) else f"{k:<20} {v}")


@main.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@click.option("--prompt", default="ROMEO:\n", show_default=True, help="Text to continue.")
@click.option("--length", type=int, default=400, show_default=True, help="Characters to add.")
@click.option(
    "--temperature",
    type=float,
    default=0.8,
    show_default=True,
    help="Softmax temperature (lower: more conservative).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@friendly_errors
def generate(run_dir, prompt, length, temperature, seed):
    """Continue a prompt with a trained language model RUN."""
    validate.check_generate(length, temperature)
    run = RunDir(run_dir)
    text = task_of_run(run).generate(
        run, prompt.replace("\\n", "\n"), length=length, temperature=temperature, seed=seed
    )
    click.echo(text)


@main.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@click.argument("inputs", nargs=-1)
@click.option(
    "--file",
    "input_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Read inputs from a file, one per line.",
)
@click.option("--encoding", default="utf-8", show_default=True, help="Encoding of --file.")
@click.option(
    "--beam", type=int, default=1, show_default=True, help="Beam size for sequence outputs (g2p)."
)
@click.option(
    "--steps",
    type=int,
    default=5,
    show_default=True,
    help="Forecast horizon in time steps (sunspots).",
)
@friendly_errors
def predict(run_dir, inputs, input_file, encoding, beam, steps):
    """Apply a trained RUN: classify sentences, transcribe words, or forecast a series."""
    from seqlab.data import read_text

    validate.check_predict(beam, steps)
    items = list(inputs)
    if input_file:
        items += [ln.strip() for ln in read_text(input_file, encoding).splitlines() if ln.strip()]
    run = RunDir(run_dir)
    for line in task_of_run(run).predict(run, items, beam=beam, steps=steps):
        click.echo(line)


@main.command()
@click.option(
    "--minutes",
    type=float,
    default=4.0,
    show_default=True,
    help="Training budget for the demo model.",
)
@click.option("--runs-dir", default="runs", show_default=True, help="Where the run folder goes.")
@click.option("--limit", type=int, default=None, help="Use only the first N plays (smoke runs).")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a shakespeare setting."
)
@friendly_errors
def demo(minutes, runs_dir, limit, overrides):
    """Train the Shakespeare character model briefly, then show its metric and a sample."""
    # The n-gram baseline takes a minute to count; the demo skips it (seqlab train does not).
    overrides = ("baseline_order=0", *overrides)
    run, summary = run_training(
        "shakespeare", None, overrides, {"minutes": minutes, "limit": limit}, runs_dir
    )
    _print_summary(run, summary)
    console.print(
        f"\nTry:  seqlab generate {run.path} --prompt 'HAMLET:'\n      seqlab evaluate {run.path}"
    )


main.add_command(data)
main.add_command(bench)
train.epilog = _defaults_epilog()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
