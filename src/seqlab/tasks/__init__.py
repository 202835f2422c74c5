"""The bundled tasks and their registry: ``get_task(name)``.

Task names say what the job is; each has a bundled real dataset as its default data and
takes the user's own file with ``data=...``. The first names of the tasks (the datasets'
names) stay valid as aliases. To add a task: one line in ``TASKS`` (``name: "module:Class"``);
its module is imported only when the task is used, so ``seqlab --help`` stays fast.
"""

from __future__ import annotations

import importlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from seqlab.tasks.base import Task
    from seqlab.tasks.rundir import RunDir

TASKS: dict[str, str] = {
    "charlm": "seqlab.tasks.shakespeare:ShakespeareTask",
    "classify": "seqlab.tasks.sentiment:SentimentTask",
    "seq2seq": "seqlab.tasks.g2p:G2PTask",
    "forecast": "seqlab.tasks.sunspots:SunspotsTask",
    # the seeds' other applications (issue 17)
    "translate": "seqlab.tasks.translate:TranslateTask",
    "vowels": "seqlab.tasks.vowels:VowelsTask",
    "caption": "seqlab.tasks.caption:CaptionTask",
    "errordetect": "seqlab.tasks.errordetect:ErrorDetectTask",
    "frames": "seqlab.tasks.frames:FramesTask",
}
ALIASES: dict[str, str] = {
    "shakespeare": "charlm",
    "sentiment": "classify",
    "g2p": "seq2seq",
    "sunspots": "forecast",
}
TASK_NAMES = tuple(TASKS)
MODEL_KINDS = ("lstm", "gru", "rnn", "transformer")


def canonical_name(name: str) -> str:
    """The task's own name for ``name`` or one of its aliases; an unknown name lists both."""
    if name in TASKS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    raise ValueError(
        f"unknown task {name!r}; expected one of: {', '.join(TASK_NAMES)} "
        f"(or the aliases {', '.join(ALIASES)})"
    )


def get_task(name: str) -> Task:
    """A task instance by name or alias; an unknown name lists the valid ones."""
    module, cls = TASKS[canonical_name(name)].split(":")
    return getattr(importlib.import_module(module), cls)()


def task_of_run(run: RunDir) -> Task:
    """The task that wrote a run folder (from its model.json; old task names still work)."""
    meta_file = run.path / "model.json"
    if not meta_file.is_file():
        raise ValueError(f"{run.path}: not a finished seqlab run (no model.json)")
    return get_task(json.loads(meta_file.read_text())["task"])


_LAZY = {
    "Task": "seqlab.tasks.base",
    "TaskConfig": "seqlab.tasks.base",
    "resolve_config": "seqlab.tasks.base",
    "RunDir": "seqlab.tasks.rundir",
}


def __getattr__(name: str) -> Any:  # torch-backed names load on first use (PEP 562)
    if name not in _LAZY:
        raise AttributeError(f"module 'seqlab.tasks' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    "ALIASES",
    "MODEL_KINDS",
    "TASKS",
    "TASK_NAMES",
    "RunDir",
    "Task",
    "TaskConfig",
    "canonical_name",
    "get_task",
    "resolve_config",
    "task_of_run",
]
