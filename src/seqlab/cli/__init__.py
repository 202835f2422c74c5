"""The ``seqlab`` command line (click). Library code logs; only this package prints.

seqlab train TASK [--model lstm|gru|rnn|transformer] [--config F] [--set k=v ...]
seqlab evaluate RUN          seqlab generate RUN --prompt TEXT
seqlab predict RUN INPUT...  seqlab data list | info NAME | install NAME
seqlab demo [--minutes M]    seqlab bench

Heavy modules (torch, the tasks) are imported inside the commands, after the first line is
printed, so the user hears from ``seqlab train`` at once (issue 19).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click

from seqlab.cli import validate
from seqlab.cli.errors import CliError, friendly_errors
from seqlab.cli.help import TrainCommand
from seqlab.cli.progress import RunDisplay, make_console
from seqlab.tasks import ALIASES, MODEL_KINDS, TASK_NAMES, canonical_name
from seqlab.tasks.interrupt import EXIT_DIVERGED, stop_signals
from seqlab.tasks.phases import phase

console = make_console()


class LazyGroup(click.Group):
    """Subcommands imported on first use (click's documented lazy-loading pattern)."""

    lazy = {
        "data": "seqlab.cli.data_cmd:data",
        "bench": "seqlab.cli.bench:bench",
        "inspect": "seqlab.cli.inspect_cmd:inspect_cmd",
        "runs": "seqlab.cli.inspect_cmd:runs_cmd",
        "compare": "seqlab.cli.inspect_cmd:compare_cmd",
        "sweep": "seqlab.cli.inspect_cmd:sweep_cmd",
        "export": "seqlab.cli.export_cmd:export",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="seqlab")
@click.option("-v", "--verbose", is_flag=True, help="Log library messages to stderr.")
def main(verbose: bool) -> None:
    """seqlab: recurrent networks, attention and Transformers on real sequence tasks."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s"
    )


_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def run_training(
    task_name: str,
    config_file: str | None,
    overrides: tuple[str, ...],
    options: dict[str, Any],
    runs_dir: str,
    quiet: bool = False,
    name: str | None = None,
    display: RunDisplay | None = None,
    resume: str | None = None,
) -> tuple[Any, dict]:
    """Resolve the settings, create the run folder (or reopen ``resume``), train; phases are
    announced on ``display``. A new run that fails before training starts leaves no folder
    behind; Ctrl-C / SIGTERM during training checkpoint, then exit 130 / 143."""
    t0 = time.perf_counter()
    task_name = canonical_name(task_name)
    if name is not None and not _RUN_NAME.match(name):
        raise click.BadParameter(
            f"expected letters, digits, '.', '_' or '-' (a folder name), got {name!r}",
            param_hint="--name",
        )
    display = display or RunDisplay(console, quiet=quiet)
    run = None
    try:
        with phase(display, "startup", f"seqlab train {task_name}: loading torch and the task"):
            from seqlab.tasks import RunDir, get_task, resolve_config
            from seqlab.tasks.threads import auto_threads

            task = get_task(task_name)
            if resume:  # the run's own settings; only the budget options may change
                cfg = resolve_config(task.Config, Path(resume) / "config.toml", (), options)
            else:
                cfg = resolve_config(task.Config, config_file, overrides, options)
            cfg.threads, notice = auto_threads(cfg.threads)
            task.setup(cfg)  # validates the model kind before creating a folder
        if notice:
            display.print(notice, markup=False)
        config = dataclasses.asdict(cfg)
        if resume:
            run = RunDir(resume)
            run.resuming = True
            run.write_config(config)
        elif name:
            run = RunDir.create(runs_dir, name, config=config, stamp=False)
        else:
            run = RunDir.create(runs_dir, f"{task_name}-{task.data_name(cfg)}", config=config)
        display.print(
            f"[bold]{task_name}[/]: {task.describe(cfg)}\nmodel {cfg.model}, budget "
            f"{cfg.minutes:g} min"
            + (f" or {cfg.max_steps} steps" if cfg.max_steps else "")
            + f", {cfg.threads} thread{'s' if cfg.threads > 1 else ''}, run folder {run.path}"
            + (" (resumed)" if resume else "")
        )
        with stop_signals():  # Ctrl-C / SIGTERM: checkpoint, then exit 130 / 143
            summary = task.train(cfg, run, progress=display)
    except BaseException:
        display.close()
        if run is not None and not resume and "training" not in display.started:
            shutil.rmtree(run.path, ignore_errors=True)  # a failed start: nothing to keep
        raise
    display.close()
    summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
    summary["phase_seconds"] = {n: round(s, 1) for n, s in display.phases}
    run.write_summary(summary)
    if run.outcome is not None:
        raise CliError(f"{run.outcome[0]}: {run.outcome[1]}; run folder {run.path}", EXIT_DIVERGED)
    return run, summary


def _print_summary(run: Any, summary: dict[str, Any]) -> None:
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


@main.command(cls=TrainCommand)
@click.argument("task", type=click.Choice([*TASK_NAMES, *ALIASES]), metavar="TASK", required=False)
@click.option(
    "--model",
    default=None,
    callback=lambda _ctx, _param, value: _model_kinds(value),
    help="Network kind: " + " | ".join(MODEL_KINDS) + " or any registered cell kind "
    "(lnlstm, lngru, ...; as --set cell=KIND) (default: the task's recipe). "
    "A comma-separated list (rnn,gru,lstm) trains one run per kind with the same settings, "
    "budget and seed, then compares them (as seqlab sweep).",
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
@click.option(
    "--threads",
    type=int,
    default=None,
    help="Torch CPU threads (default: the recipe's, fewer on a busy machine, with a notice).",
)
@click.option("--runs-dir", default="runs", show_default=True, help="Where run folders go.")
@click.option(
    "--name",
    default=None,
    help="Run folder name under --runs-dir (default: TASK-DATA-<time>, e.g. charlm-shakespeare-…).",
)
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
    name,
    quiet,
    resume_dir,
):
    """Train TASK and write runs/<task>-<data>-<time>/ (config, checkpoints, metrics, plots);
    or continue a stopped run with --resume RUN.

    \b
    TASK: charlm    character-level language model (default data: shakespeare)
          classify  text classification (default data: rotten_tomatoes)
          seq2seq   sequence transduction, e.g. spelling -> phonemes (default data: cmudict)
          forecast  one-step-ahead forecasting of a series (default data: sunspots)
          translate sequence to sequence on your own TSV of pairs (BLEU)
          vowels    multivariate series classification (default data: japanese_vowels)
          caption   captions for strips of digit images (default data: digits)
          errordetect  per-word error detection (default data: rotten_tomatoes)
          frames    an activity label per step of a sensor stream (default data: basic_motions)
    The first names (shakespeare, sentiment, g2p, sunspots) still work as aliases.
    `seqlab train TASK --help` lists every setting of TASK with its meaning and default.
    """
    if resume_dir:
        others = {"model": model, "config": config_file, "set": overrides, "data": data_file,
                  "encoding": encoding, "limit": limit, "seed": seed, "threads": threads,
                  "minutes": minutes, "max_steps": max_steps, "name": name}  # fmt: skip
        task = validate.check_resume(Path(resume_dir), task, (*TASK_NAMES, *ALIASES), others)
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
    if model is not None and "," in model:
        if resume_dir or name:
            raise validate.BadOption(
                "--model: a list of kinds cannot be combined with --resume/--name"
            )
        from seqlab.cli.inspect_cmd import run_sweep

        options["seed"] = 0 if seed is None else seed
        run_sweep(task, model.split(","), config_file, overrides, options, runs_dir, quiet)
        return
    run, summary = run_training(
        task, config_file, overrides, options, runs_dir, quiet, name, resume=resume_dir
    )
    _print_summary(run, summary)


def _model_kinds(value: str | None) -> str | None:
    """``--model``: one kind, or a comma-separated list of distinct kinds (a sweep). The
    kinds are the registered cell kinds (read only when a name is not a classic one, so
    ``--help`` does not load torch) and ``transformer``."""
    if value is None:
        return None
    kinds = [k.strip() for k in value.split(",")]
    allowed = MODEL_KINDS
    if any(k not in allowed for k in kinds):
        from seqlab.functional.spec import cell_choices

        allowed = cell_choices() + tuple(k for k in MODEL_KINDS if k not in cell_choices())
    bad = [k for k in kinds if k not in allowed]
    if bad or len(set(kinds)) != len(kinds):
        raise click.BadParameter(
            f"expected one of {', '.join(allowed)} or a list of distinct ones "
            f"(rnn,gru,lstm), got {value!r}",
            param_hint="--model",
        )
    return ",".join(kinds)


@main.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@friendly_errors
def evaluate(run_dir, as_json):
    """Recompute the held-out metrics of a trained RUN folder."""
    from seqlab.tasks import RunDir, task_of_run

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
    help="Softmax temperature (lower: more conservative; 0: greedy, always the likeliest).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@friendly_errors
def generate(run_dir, prompt, length, temperature, seed):
    """Continue a prompt with a trained language model RUN."""
    from seqlab.tasks import RunDir, task_of_run

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
    "--beam", type=int, default=1, show_default=True, help="Beam size (g2p, translate, caption)."
)
@click.option(
    "--steps",
    type=int,
    default=5,
    show_default=True,
    help="Forecast horizon in time steps (forecast).",
)
@friendly_errors
def predict(run_dir, inputs, input_file, encoding, beam, steps):
    """Apply a trained RUN: classify sentences, transcribe words, or forecast a series."""
    from seqlab.data import read_text
    from seqlab.tasks import RunDir, task_of_run

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
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a charlm setting."
)
@friendly_errors
def demo(minutes, runs_dir, limit, overrides):
    """Train the Shakespeare character model briefly, then show its metric and a sample."""
    # The n-gram baseline takes a minute to count; the demo skips it (seqlab train does not).
    overrides = ("baseline_order=0", *overrides)
    run, summary = run_training(
        "charlm", None, overrides, {"minutes": minutes, "limit": limit}, runs_dir
    )
    _print_summary(run, summary)
    console.print(
        f"\nTry:  seqlab generate {run.path} --prompt 'HAMLET:'\n      seqlab evaluate {run.path}"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
