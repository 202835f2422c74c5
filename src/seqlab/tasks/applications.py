"""The seeds' other applications as tasks (issue 17), registered by :mod:`seqlab.tasks`."""

from __future__ import annotations

APPLICATION_NAMES = ("translate", "vowels", "caption", "errordetect")


def application_tasks() -> tuple[type, ...]:
    # Imported lazily so `seqlab --help` stays fast.
    from seqlab.tasks.caption import CaptionTask
    from seqlab.tasks.errordetect import ErrorDetectTask
    from seqlab.tasks.translate import TranslateTask
    from seqlab.tasks.vowels import VowelsTask

    return (TranslateTask, VowelsTask, CaptionTask, ErrorDetectTask)
