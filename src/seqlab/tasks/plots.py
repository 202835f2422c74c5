"""PNG plots for a run (matplotlib's Agg backend: no display needed).

Each ``*_figure`` function builds and returns the figure (tests inspect its axes); each
``plot_*`` function saves it to a PNG and closes it. One unit per axis: quantities measured in
different units (a training loss and a held-out accuracy) get their own subplot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def loss_figure(
    events: list[dict[str, Any]],
    metric: str,
    title: str,
    baselines: dict[str, float] | None = None,
    metric_label: str | None = None,
    loss_label: str = "training loss",
    higher_is_better: bool = False,
    best_step: int | None = None,
) -> Figure:
    """Two stacked axes sharing the step axis: the training loss per logged step (top) and
    the validation ``metric`` at each evaluation (bottom) with the same-split ``baselines`` as
    dashed lines. The best evaluation, the checkpoint the run keeps, is starred, and a dotted
    vertical line marks its step on both axes; ``best_step`` names that evaluation when
    another metric chose the checkpoint (vowels plots accuracy, keeps the lowest loss)."""
    train = [(e["step"], e["loss"]) for e in events if e.get("kind") == "train"]
    evals = [(e["step"], e[metric]) for e in events if e.get("kind") == "eval" and metric in e]
    fig, (ax_loss, ax_val) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    if train:
        ax_loss.plot(*zip(*train, strict=True), lw=1, alpha=0.8, label="training loss")
    ax_loss.set_ylabel(loss_label)
    ax_loss.set_title(title)
    if evals:
        ax_val.plot(*zip(*evals, strict=True), "o-", label=f"validation {metric}")
        pick = max if higher_is_better else min
        chosen = [sv for sv in evals if sv[0] == best_step]
        best_step, best = chosen[0] if chosen else pick(evals, key=lambda sv: sv[1])
        ax_val.plot(
            [best_step], [best], "*", ms=16, color="C3", label=f"best checkpoint ({best:.4g})"
        )
        for ax in (ax_loss, ax_val):
            ax.axvline(best_step, color="C3", ls=":", lw=1)
    for i, (name, value) in enumerate((baselines or {}).items()):
        ax_val.axhline(value, ls="--", lw=1, color=f"C{4 + i}", label=f"{name} ({value:.4g})")
    ax_val.set_ylabel(metric_label or f"validation {metric}")
    ax_val.set_xlabel("optimizer step")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig


def plot_losses(events: list[dict[str, Any]], metric: str, path: Path, title: str, **kw) -> Path:
    """Save :func:`loss_figure` to ``path``."""
    return _save(loss_figure(events, metric, title, **kw), path)


def grad_through_time_figure(
    curves: dict[str, list[float]], title: str, by_position: bool = False
) -> Figure:
    """Per-step gradient norms ‖∂L/∂h_t‖ (from :func:`seqlab.training.hidden_grad_norms`), log
    scale, one line per curve: against the distance T - t from the last step, or with
    ``by_position`` against the position t itself (a bidirectional layer's two directions,
    whose losses reach h_t from opposite ends)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, norms in curves.items():
        # norms[t] is at distance T-1-t
        xs = list(range(len(norms))) if by_position else list(range(len(norms) - 1, -1, -1))
        ax.semilogy(xs, [max(n, 1e-30) for n in norms], label=label)
    ax.set_xlabel(
        "position t in the input" if by_position else "steps back from the last output (T - t)"
    )
    ax.set_ylabel("gradient norm ‖∂L/∂h_t‖")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return fig


def plot_grad_through_time(
    curves: dict[str, list[float]], path: Path, title: str, by_position: bool = False
) -> Path:
    """Save :func:`grad_through_time_figure` to ``path``."""
    return _save(grad_through_time_figure(curves, title, by_position), path)


def attention_figure(
    alpha: list[list[float]], src: list[str], tgt: list[str], title: str
) -> Figure:
    """Heat map of attention weights α (rows: output tokens, columns: input tokens) with a
    colour bar for the weight scale, 0 to 1."""
    fig, ax = plt.subplots(figsize=(2 + 0.45 * len(src), 1 + 0.4 * len(tgt)))
    image = ax.imshow(alpha, cmap="viridis", aspect="auto", vmin=0, vmax=1)
    ax.set_xticks(range(len(src)), src)
    ax.set_yticks(range(len(tgt)), tgt)
    ax.set_xlabel("input token")
    ax.set_ylabel("output step (decoder input)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="attention weight α")
    return fig


def plot_attention(
    alpha: list[list[float]], src: list[str], tgt: list[str], path: Path, title: str
) -> Path:
    """Save :func:`attention_figure` to ``path``."""
    return _save(attention_figure(alpha, src, tgt, title), path)


def _as_numbers(times: Sequence[Any]) -> list[float] | None:
    try:
        return [float(t) for t in times]
    except (TypeError, ValueError):
        return None


def forecast_figure(
    times: Sequence[Any], actual: list[float], forecasts: dict[str, list[float]], title: str
) -> Figure:
    """The actual series over the test period and each method's one-step forecast (ours and
    the baselines), on one axis in the series' own units, and below it each forecast's error
    (forecast − actual), also in series units."""
    xs = _as_numbers(times) or list(range(len(actual)))
    fig, (ax, ax_err) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, height_ratios=(2, 1))
    ax.plot(xs, actual, "k-", lw=2, label="actual")
    for i, (name, values) in enumerate(forecasts.items()):
        style = "o-" if i == 0 else "--"
        ax.plot(xs[: len(values)], values, style, ms=3, lw=1.5 if i == 0 else 1, label=name)
        err = [v - a for v, a in zip(values, actual, strict=False)]
        ax_err.plot(xs[: len(err)], err, style, ms=3, lw=1, label=name)
    ax_err.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("value")
    ax_err.set_ylabel("forecast − actual")
    ax_err.set_xlabel("time" if _as_numbers(times) else "test point")
    ax.set_title(title)
    for a in (ax, ax_err):
        a.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_forecast(
    times: Sequence[Any],
    actual: list[float],
    forecasts: dict[str, list[float]],
    path: Path,
    title: str,
) -> Path:
    """Save :func:`forecast_figure` to ``path``."""
    return _save(forecast_figure(times, actual, forecasts, title), path)
