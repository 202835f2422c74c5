"""The bundled tasks and their registry: ``get_task(name)``."""

from __future__ import annotations

import json

from seqlab.tasks.applications import APPLICATION_NAMES, application_tasks
from seqlab.tasks.base import Task, TaskConfig, resolve_config
from seqlab.tasks.rundir import RunDir


def _registry() -> dict[str, type[Task]]:
    # Imported lazily so `seqlab --help` stays fast.
    from seqlab.tasks.g2p import G2PTask
    from seqlab.tasks.sentiment import SentimentTask
    from seqlab.tasks.shakespeare import ShakespeareTask
    from seqlab.tasks.sunspots import SunspotsTask

    tasks = (ShakespeareTask, SentimentTask, G2PTask, SunspotsTask, *application_tasks())
    return {t.name: t for t in tasks}


TASK_NAMES = ("shakespeare", "sentiment", "g2p", "sunspots", *APPLICATION_NAMES)


def get_task(name: str) -> Task:
    """A task instance by name; an unknown name lists the valid ones."""
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; expected one of: {', '.join(TASK_NAMES)}")
    return _registry()[name]()


def task_of_run(run: RunDir) -> Task:
    """The task that wrote a run folder (from its model.json)."""
    meta_file = run.path / "model.json"
    if not meta_file.is_file():
        raise ValueError(f"{run.path}: not a finished seqlab run (no model.json)")
    return get_task(json.loads(meta_file.read_text())["task"])


__all__ = [
    "TASK_NAMES",
    "RunDir",
    "Task",
    "TaskConfig",
    "get_task",
    "resolve_config",
    "task_of_run",
]
