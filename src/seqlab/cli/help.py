"""``seqlab train TASK --help``: the task's every setting, its meaning and its default."""

from __future__ import annotations

import click

from seqlab.tasks import ALIASES, TASK_NAMES


class TrainCommand(click.Command):
    """``train`` whose help ends with the settings of the TASK named before ``--help`` (or,
    without a TASK, with how to ask for them). Task modules are imported only for help."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        named = [a for a in args if a in TASK_NAMES or a in ALIASES]
        ctx.meta["help_task"] = named[0] if named else None
        return super().parse_args(ctx, args)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        import dataclasses

        from seqlab.tasks import get_task
        from seqlab.tasks.settings import settings_help

        name = ctx.meta.get("help_task")
        if name is None:
            title = "Task defaults (meanings: seqlab train TASK --help)"
            with formatter.section(title):
                for task_name in TASK_NAMES:
                    cfg = dataclasses.asdict(get_task(task_name).Config())
                    items = ", ".join(f"{k}={v!r}" for k, v in cfg.items())
                    formatter.write_text(f"{task_name}: {items}")
            return

        task = get_task(name)
        title = f"Settings of {task.name} ({task.description}; default data: {task.dataset})"
        with formatter.section(title):
            formatter.write_text("Change with --set key=value or --config FILE.toml (key = value).")
            formatter.write_paragraph()
            for line in settings_help(task.Config):
                formatter.write(f"{'':>{formatter.current_indent}}{line}\n")
