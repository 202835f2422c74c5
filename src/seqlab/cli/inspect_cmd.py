"""``seqlab inspect``, ``seqlab runs``, ``seqlab compare`` and ``seqlab sweep``.

seqlab inspect RUN [--text TEXT | --input FILE] [--beam K]
seqlab runs [DIR] [--json]
seqlab compare RUN... [--out DIR] [--text TEXT]
seqlab sweep TASK [--models rnn,gru,lstm] [train options]
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from seqlab.cli.errors import friendly_errors


@click.command("inspect")
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@click.option("--text", default=None, help="Input to look at (default: an example per task).")
@click.option(
    "--input",
    "input_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Read the input from this file instead.",
)
@click.option("--encoding", default="utf-8", show_default=True, help="Encoding of --input.")
@click.option("--beam", type=int, default=4, show_default=True, help="Beams listed (seq2seq).")
@friendly_errors
def inspect_cmd(run_dir, text, input_file, encoding, beam):
    """Write RUN/inspect.html (self-contained) and RUN/inspect/*.png: gates, states,
    saliency, gradient through time, attention and forecasts for one input."""
    from seqlab.inspection.report import inspect_run

    if text is not None and input_file:
        raise ValueError("give --text or --input, not both")
    if beam < 1:
        raise ValueError(f"--beam: expected >= 1, got {beam}")
    if input_file:
        from seqlab.data import read_text

        text = read_text(input_file, encoding)
    page, pngs = inspect_run(run_dir, text.replace("\\n", "\n") if text else text, beam=beam)
    click.echo(str(page))


def _fmt(v, digits: int = 4) -> str:
    if v is None or v == "":
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


@click.command("runs")
@click.argument("root", metavar="[DIR]", default="runs", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run.")
@friendly_errors
def runs_cmd(root, as_json):
    """List the run folders under DIR (default runs/): task, model, metric, steps, time,
    status."""
    from seqlab.runs import list_runs

    infos = list_runs(root)
    if as_json:
        for i in infos:
            click.echo(json.dumps(i.as_dict()))
        return
    if not infos:
        click.echo(f"no run folders in {root}")
        return
    header = ["run", "task", "model", "metric", "value", "steps", "time (s)", "status"]
    rows = [[str(i.path.name), i.task, i.model, i.metric, _fmt(i.value), _fmt(i.steps),
             _fmt(i.seconds), i.status] for i in infos]  # fmt: skip
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    for r in [header, *rows]:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


@click.command("compare")
@click.argument("run_dirs", metavar="RUN...", nargs=-1, required=True,
                type=click.Path(exists=True, file_okay=False))  # fmt: skip
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Folder for compare.html/.png (default: runs/compare-<time>).")  # fmt: skip
@click.option("--text", default=None, help="Shared input for the gradient curves.")
@friendly_errors
def compare_cmd(run_dirs, out_dir, text):
    """One page and figure overlaying the runs' loss curves, held-out metric, baselines and
    gradient-through-time curves, with a table."""
    from seqlab.inspection.compare import compare_runs

    page, _pngs, table = compare_runs(list(run_dirs), out_dir, text)
    header, *rows = table
    for r in rows:
        click.echo("  ".join(f"{h}={_fmt(v)}" for h, v in zip(header[:8], r, strict=False)))
    click.echo(str(page))


@click.command("sweep")
@click.argument("task")
@click.option("--models", default="rnn,gru,lstm", show_default=True,
              help="Comma-separated model kinds, trained one after another.")  # fmt: skip
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="TOML file of settings.")  # fmt: skip
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one setting (repeatable).")  # fmt: skip
@click.option("--minutes", type=float, default=None, help="Budget per model, minutes.")
@click.option("--max-steps", type=int, default=None, help="Steps per model.")
@click.option("--limit", type=int, default=None, help="Use only the first N items.")
@click.option("--seed", type=int, default=None, help="Random seed (the same for every model).")
@click.option("--threads", type=int, default=None, help="Torch CPU threads.")
@click.option("--runs-dir", default="runs", show_default=True, help="Where run folders go.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
@friendly_errors
def sweep_cmd(task, models, config_file, overrides, minutes, max_steps, limit, seed, threads,
              runs_dir, quiet):  # fmt: skip
    """Train TASK once per model kind with the same settings, budget and seed, then compare
    the runs (seqlab compare). Also ``seqlab train TASK --model rnn,gru,lstm``."""
    options = {"minutes": minutes, "max_steps": max_steps, "limit": limit,
               "seed": 0 if seed is None else seed, "threads": threads}  # fmt: skip
    run_sweep(task, models.split(","), config_file, overrides, options, runs_dir, quiet)


def run_sweep(task, kinds, config_file, overrides, options, runs_dir, quiet) -> Path:
    """One run per model kind in ``kinds`` (same settings and seed), then the compare page;
    prints one line per run and the page's path, and returns the path."""
    from seqlab.cli import run_training  # the train command's own path
    from seqlab.inspection.compare import compare_runs
    from seqlab.tasks import get_task

    kinds = [m.strip() for m in kinds if m.strip()]
    if not kinds:
        raise ValueError("--models: expected a comma-separated list of model kinds, got none")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"--models: each kind once, got {','.join(kinds)!r}")
    allowed = get_task(task).models
    bad = [m for m in kinds if m not in allowed]
    if bad:
        raise ValueError(f"--models: unknown {bad}; expected some of: {', '.join(allowed)}")
    runs: list[Path] = []
    for kind in kinds:
        # cell="" (use `model`): a `--set cell=...` would otherwise replace every kind
        run, _summary = run_training(
            task, config_file, overrides, {**options, "model": kind, "cell": ""}, runs_dir, quiet
        )
        runs.append(run.path)
    page, _pngs, table = compare_runs(runs, Path(runs_dir) / f"sweep-{runs[0].name}")
    header, *rows = table
    for r in rows:
        click.echo("  ".join(f"{h}={_fmt(v)}" for h, v in zip(header[:8], r, strict=False)))
    click.echo(str(page))
    return page
