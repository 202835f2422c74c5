"""The live memory span of every recurrent task: a Trainer callback, the summary entry and
the figure (see :mod:`seqlab.inspection.memory` for what is measured).

A task gives ``norms(model) -> [‖∂ℓ/∂h_t‖ for t = 0 … T−1]`` on a fixed probe it chooses
(a validation text, sentence, word or window) with ℓ the loss of its last output; readings
are taken at every evaluation, go to ``metrics.jsonl`` (``kind: memory``), the progress
line and, with ``--set tensorboard=true``, TensorBoard.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from seqlab.tasks.rundir import RunDir

if TYPE_CHECKING:  # matplotlib loads only when a run measures (keeps the CLI start fast)
    from seqlab.inspection.memory import MemorySpan


def memory_span_callback(
    cfg: Any,
    run: RunDir,
    progress: Callable[[dict[str, Any]], None] | None,
    norms: Callable[[nn.Module], list[float]] | None,
) -> MemorySpan | None:
    """The callback for ``fit(callbacks=...)``, or None when the setting is off, the model
    has no recurrence (a Transformer) or there is no probe (``norms`` None)."""
    if not getattr(cfg, "memory_span", False) or getattr(cfg, "model", "") == "transformer":
        return None
    if norms is None:
        return None
    from seqlab.inspection.memory import MemorySpan

    def emit(event: dict[str, Any]) -> None:
        event = {k: v for k, v in event.items() if k != "grad_norms"}
        run.log(**event)
        if progress is not None:
            progress(event)

    return MemorySpan(every=cfg.eval_every, emit=emit, norms=norms)


def record_memory_span(span: MemorySpan | None, summary: dict[str, Any]) -> None:
    """The last reading into the run summary (``summary["memory_span"]``)."""
    if span is None or not span.history:
        return
    last = span.history[-1]
    summary["memory_span"] = {k: last[k] for k in ("step", "memory_span", "grad_ratio", "warning")}


def plot_memory_span(span: MemorySpan | None, run: RunDir, model_name: str) -> None:
    """``memory_span.png`` in the run folder (nothing when no reading was taken)."""
    if span is None or not span.history:
        return
    fig = span.figure(f"{model_name}: memory span while training")
    fig.savefig(run.path / "memory_span.png", dpi=110)


def plot_probe_grads(
    norms: Callable[[nn.Module], list[float]] | None,
    model: nn.Module,
    run: RunDir,
    title: str,
    by_position: bool = False,
) -> None:
    """``grad_through_time.png``: the memory-span probe's ‖∂ℓ/∂h_t‖ (``norms``) measured once
    more on ``model`` as it leaves training (the kept checkpoint), in eval mode. Nothing
    without a probe (``norms`` None, e.g. a Transformer)."""
    if norms is None:
        return
    from seqlab.tasks.plots import plot_grad_through_time

    was_training = model.training
    model.eval()
    try:
        curve = norms(model)
    finally:
        model.train(was_training)
    plot_grad_through_time(
        {"kept checkpoint": curve}, run.path / "grad_through_time.png", title, by_position
    )
