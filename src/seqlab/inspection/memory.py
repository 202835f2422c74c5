"""Memory span while training: how far back ‖∂L/∂h_t‖ reaches, measured every few steps.

For a fixed probe input of T steps and a loss L at its end, with g_t = ‖∂L/∂h_t‖
(:func:`seqlab.training.hidden_grad_norms` on the whole model):

* memory span = the number of steps back from the last step carrying gradient over which
  g_t ≥ ``fraction`` · g_last without a drop below (:func:`seqlab.inspection.compare.memory_span`);
* ratio = g_0 / g_last, the gradient that reaches the first step relative to the last;
* warning ``vanishing`` when ratio < ``vanish`` (1e-6), ``exploding`` when ratio > ``explode``
  (1e3) or a norm is not finite.

:class:`MemorySpan` is a :class:`seqlab.training.Trainer` callback (``callbacks=[span]``): it
appends each reading to ``history``, hands it to ``emit`` (e.g. the run's metrics.jsonl and the
progress line) and writes ``memory_span``/``grad_ratio`` scalars to TensorBoard (the one
given, else the trainer's when its ``tensorboard_dir`` is set). Instead of a whole-model
probe ``(inputs, loss_fn)`` it can take ``norms(model) -> [g_0, …]``, any measurement of
‖∂L/∂h_t‖ the caller writes (e.g. of one layer inside a larger model).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

from seqlab.inspection.compare import memory_span
from seqlab.training import hidden_grad_norms


def measure(
    model: nn.Module,
    inputs: Any,
    loss_fn: Callable,
    part: str | None = None,
    fraction: float = 0.01,
    vanish: float = 1e-6,
    explode: float = 1e3,
) -> dict[str, Any]:
    """One reading (see the module docstring): ``{"memory_span", "grad_ratio", "warning",
    "grad_norms"}``; the model is measured in eval mode (no dropout noise) and restored."""
    was_training = model.training
    model.eval()
    try:
        flow = hidden_grad_norms(model, inputs, loss_fn, part=part)
    finally:
        model.train(was_training)
    return reading(flow.h.tolist(), fraction, vanish, explode)


def reading(
    norms: list[float], fraction: float = 0.01, vanish: float = 1e-6, explode: float = 1e3
) -> dict[str, Any]:
    """Memory span, ratio and warning of measured ``norms`` g_0 … g_{T−1} (see the module
    docstring)."""
    nonzero = [g for g in norms if g != 0.0]
    last = nonzero[-1] if nonzero else 0.0
    ratio = norms[0] / last if last else 0.0
    warning = None
    if not all(math.isfinite(g) for g in norms) or ratio > explode:
        warning = "exploding"
    elif ratio < vanish:
        warning = "vanishing"
    return {
        "memory_span": memory_span(norms, fraction),
        "grad_ratio": ratio,
        "warning": warning,
        "grad_norms": norms,
    }


class MemorySpan:
    """Trainer callback measuring the memory span every ``every`` optimiser steps."""

    def __init__(
        self,
        inputs: Any = None,
        loss_fn: Callable | None = None,
        every: int = 100,
        part: str | None = None,
        fraction: float = 0.01,
        emit: Callable[[dict[str, Any]], None] | None = None,
        tensorboard: Any = None,
        norms: Callable[[nn.Module], list[float]] | None = None,
    ) -> None:
        if every < 1:
            raise ValueError(f"every: expected >= 1, got {every}")
        if norms is None and (inputs is None or loss_fn is None):
            raise ValueError("MemorySpan: give inputs and loss_fn, or norms")
        self.inputs, self.loss_fn, self.every, self.part = inputs, loss_fn, every, part
        self.fraction, self.emit, self.tensorboard = fraction, emit, tensorboard
        self.norms = norms
        self.history: list[dict[str, Any]] = []

    def measure(self, model: nn.Module) -> dict[str, Any]:
        """One reading of ``model`` (eval mode, restored afterwards)."""
        if self.norms is None:
            return measure(model, self.inputs, self.loss_fn, self.part, self.fraction)
        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                norms = [float(g) for g in self.norms(model)]
        finally:
            model.train(was_training)
        return reading(norms, self.fraction)

    def __call__(self, trainer: Any, rec: dict[str, Any]) -> None:
        if trainer.step % self.every:
            return
        event = {"kind": "memory", "step": trainer.step, **self.measure(trainer.model)}
        self.history.append(event)
        if self.emit is not None:
            self.emit(event)
        # the trainer's own TensorBoard writer when the caller gave none
        board = self.tensorboard or getattr(trainer, "tensorboard", None)
        if board is not None:
            board.scalars(
                trainer.step,
                {"memory_span": event["memory_span"], "grad_ratio": event["grad_ratio"]},
            )

    def figure(self, title: str = "") -> Figure:
        """Memory span (left) and g_0 / g_last (right, log) against the training step."""
        fig = Figure(figsize=(9, 3.2))
        ax_span, ax_ratio = fig.subplots(1, 2)
        steps = [e["step"] for e in self.history]
        ax_span.plot(steps, [e["memory_span"] for e in self.history], "o-", ms=3)
        ax_span.set_ylabel(f"steps with ‖∂L/∂h_t‖ ≥ {self.fraction:g}·last")
        ratios = [max(e["grad_ratio"], 1e-30) for e in self.history]
        ax_ratio.semilogy(steps, ratios, "o-", ms=3, color="tab:red")
        ax_ratio.set_ylabel("‖∂L/∂h_0‖ / ‖∂L/∂h_last‖")
        for ax in (ax_span, ax_ratio):
            ax.set_xlabel("optimizer step")
            ax.grid(alpha=0.3)
        fig.suptitle(title or "memory span while training", fontsize=10)
        fig.tight_layout()
        return fig
