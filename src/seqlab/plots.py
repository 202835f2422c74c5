"""Plotting helpers that return matplotlib ``Figure`` objects (no pyplot state, no display).

Each function draws one kind of picture of a model's inside; save with
``fig.savefig("x.png")``. Inputs are plain sequences or tensors (converted with ``.tolist()``).

=========================  ==============================================================
function                   picture
=========================  ==============================================================
``trace_heatmaps``         one heatmap per gate/state (units × steps) over the input tokens
``state_heatmap``          one (units × steps) heatmap with a colour bar
``saliency_bar``           ‖∂output/∂x_t‖ per input token
``bars``                   stacked bar panels over shared labels (class probabilities, …)
``grad_through_time``      ‖∂L/∂h_t‖ per step, log scale, one line per curve
``saturation_bar``         share of saturated activations per gate
``attention_map``          attention weights α (outputs × inputs) with a colour bar
``forecast_plot``          forecast vs actual, with baseline forecasts
``curves_overlay``         several runs' training loss and held-out metric (compare)
=========================  ==============================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

# Colour maps: gates live in [0, 1] (sigmoid), states and tanh candidates around 0.
_SEQUENTIAL = {"i", "f", "o", "r", "z"}


def _rows(values: Any) -> list[list[float]]:
    v = values.tolist() if hasattr(values, "tolist") else values
    return [list(map(float, r)) for r in v]


def _list(values: Any) -> list[float]:
    v = values.tolist() if hasattr(values, "tolist") else values
    return [float(x) for x in v]


def _token_axis(ax, tokens: Sequence[str] | None, n: int, axis: str = "x") -> None:
    if tokens is None:
        return
    if len(tokens) != n:
        raise ValueError(f"tokens: expected {n} labels (one per step), got {len(tokens)}")
    labels = ["·" if t == " " else repr(t)[1:-1] if t.isspace() or not t else t for t in tokens]
    step = max(1, n // 60)  # at most ~60 labels so they stay readable
    ticks = list(range(0, n, step))
    if axis == "x":
        ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize=7, rotation=90 if n > 20 else 0)
    else:
        ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=7)


def _heat(fig: Figure, ax, rows: list[list[float]], name: str, tokens, units=None,
          row_label: str = "unit") -> None:  # fmt: skip
    """units × steps image of ``rows`` (T lists of H values) with a colour bar."""
    T = len(rows)
    data = [list(col) for col in zip(*rows, strict=True)] if T else [[]]  # (H, T)
    if name in _SEQUENTIAL:
        im = ax.imshow(data, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0,
                       interpolation="nearest")  # fmt: skip
    else:
        # A few large cell states would wash out the rest: scale to the 90th percentile of
        # |value| (larger values show the end colour).
        mags = sorted(abs(v) for r in data for v in r)
        m = (mags[min(len(mags) - 1, int(0.9 * len(mags)))] if mags else 1.0) or 1.0
        im = ax.imshow(data, aspect="auto", cmap="RdBu_r", vmin=-m, vmax=m,
                       interpolation="nearest")  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01)
    ax.set_ylabel(f"{name}\n{row_label}", fontsize=8)
    if units is not None:  # label rows with the units' own numbers
        step = max(1, len(units) // 8)
        ticks = list(range(0, len(units), step))
        ax.set_yticks(ticks, [str(units[i]) for i in ticks], fontsize=6)
    _token_axis(ax, tokens, T)


def trace_heatmaps(
    trace: Mapping[str, Any],
    tokens: Sequence[str] | None = None,
    title: str = "",
    units: Sequence[int] | None = None,
) -> Figure:
    """One heatmap per traced quantity (gates, ``c``, ``h``): rows are hidden units, columns
    steps labelled with ``tokens``. ``trace[name]`` is (T, H) (one batch row); ``units``
    restricts (and labels) the units shown."""
    names = list(trace)
    if not names:
        raise ValueError("trace: expected at least one gate or state, got none")
    T = len(_rows(trace[names[0]]))
    fig = Figure(figsize=(min(20, max(6, 3 + 0.16 * T)), 1.7 * len(names) + 0.8))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names, strict=True):
        rows = _rows(trace[name])
        if units is not None:
            rows = [[r[u] for u in units] for r in rows]
        _heat(fig, ax, rows, name, tokens if ax is axes[-1] else None, units)
    axes[-1].set_xlabel("input step")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def state_heatmap(
    values: Any,
    tokens: Sequence[str] | None = None,
    name: str = "h",
    title: str = "",
    row_label: str = "unit",
) -> Figure:
    """A single (units × steps) heatmap of ``values`` (T, H) with a colour bar; ``row_label``
    names what the rows are (units, input channels, ...)."""
    rows = _rows(values)
    fig = Figure(figsize=(min(20, max(6, 3 + 0.16 * len(rows))), 3.2))
    ax = fig.subplots()
    _heat(fig, ax, rows, name, tokens, row_label=row_label)
    ax.set_xlabel("input step")
    ax.set_title(title or f"{name} over the input", fontsize=10)
    fig.tight_layout()
    return fig


def saliency_bar(
    values: Any,
    tokens: Sequence[str] | None = None,
    title: str = "",
    ylabel: str = "‖∂output/∂x_t‖",
) -> Figure:
    """Bars of one value per input step: ‖∂output/∂x_t‖ unless ``ylabel`` says otherwise."""
    v = _list(values)
    fig = Figure(figsize=(min(20, max(6, 3 + 0.16 * len(v))), 3))
    ax = fig.subplots()
    ax.bar(range(len(v)), v, color="tab:orange")
    _token_axis(ax, tokens, len(v))
    ax.set_ylabel(ylabel)
    ax.set_xlabel("input step")
    ax.set_title(title or "saliency: how much each input step moves the output", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def bars(
    panels: Mapping[str, Any], labels: Sequence[str], title: str = "", xlabel: str = ""
) -> Figure:
    """One bar panel per entry of ``panels`` (its key is the y label), stacked and sharing the
    x axis labelled with ``labels`` (one value per label in every panel)."""
    if not panels:
        raise ValueError("panels: expected at least one panel, got none")
    n = len(labels)
    fig = Figure(figsize=(min(20, max(6, 3 + 0.2 * n)), 0.8 + 2.4 * len(panels)))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for i, (ax, (name, values)) in enumerate(zip(axes, panels.items(), strict=True)):
        v = _list(values)
        if len(v) != n:
            raise ValueError(f"panels[{name!r}]: expected {n} values (one per label), got {len(v)}")
        ax.bar(range(n), v, color=f"C{i}")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylabel(name, fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    _token_axis(axes[-1], list(labels), n)
    axes[-1].set_xlabel(xlabel)
    if title:
        axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def grad_through_time(
    curves: Mapping[str, Any],
    tokens: Sequence[str] | None = None,
    title: str = "",
    steps_back: bool = False,
) -> Figure:
    """‖∂L/∂h_t‖ per step on a log scale, one line per curve. ``steps_back=True`` puts the
    distance from the last step (T − 1 − t) on the x axis (curves of different lengths)."""
    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    n = 0
    for label, values in curves.items():
        v = [max(x, 1e-30) for x in _list(values)]
        n = max(n, len(v))
        xs = list(range(len(v) - 1, -1, -1)) if steps_back else list(range(len(v)))
        ax.semilogy(xs, v, marker="." if len(v) < 60 else None, label=label)
    if steps_back:
        ax.set_xlabel("steps back from the last output (T − 1 − t)")
    else:
        ax.set_xlabel("input step t")
        if tokens is not None and len(tokens) == n:
            _token_axis(ax, tokens, n)
    ax.set_ylabel("‖∂L/∂h_t‖")
    ax.set_title(title or "gradient through time", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    if curves:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def saturation_bar(fractions: Mapping[str, float], title: str = "") -> Figure:
    """Share of saturated activations per gate (bars in [0, 1])."""
    fig = Figure(figsize=(1.5 + 0.8 * max(1, len(fractions)), 3))
    ax = fig.subplots()
    names = list(fractions)
    ax.bar(names, [float(fractions[n]) for n in names], color="tab:purple")
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction saturated")
    ax.set_title(title or "saturated gates", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def attention_map(alpha: Any, src: Sequence[str], tgt: Sequence[str], title: str = "") -> Figure:
    """Attention weights α (T outputs × S inputs) with a colour bar."""
    rows = _rows(alpha)
    if len(rows) != len(tgt) or any(len(r) != len(src) for r in rows):
        raise ValueError(
            f"alpha: expected ({len(tgt)}, {len(src)}) = (len(tgt), len(src)), "
            f"got ({len(rows)}, {len(rows[0]) if rows else 0})"
        )
    fig = Figure(figsize=(2.2 + 0.45 * len(src), 1.4 + 0.35 * len(tgt)))
    ax = fig.subplots()
    im = ax.imshow(rows, cmap="viridis", aspect="auto", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="α", fraction=0.06, pad=0.02)
    ax.set_xticks(range(len(src)), list(src), fontsize=8)
    ax.set_yticks(range(len(tgt)), list(tgt), fontsize=8)
    ax.set_xlabel("input")
    ax.set_ylabel("output step (its input token)")
    ax.set_title(title or "attention weights", fontsize=10)
    fig.tight_layout()
    return fig


def forecast_plot(
    times: Sequence[Any],
    actual: Any,
    forecast: Any,
    baselines: Mapping[str, Any] | None = None,
    title: str = "",
    ylabel: str = "value",
) -> Figure:
    """Forecast vs actual over ``times``, with baseline forecasts as dashed lines."""
    t = [float(x) if str(x).lstrip("-").replace(".", "", 1).isdigit() else i
         for i, x in enumerate(times)]  # fmt: skip
    fig = Figure(figsize=(8, 3.6))
    ax = fig.subplots()
    ax.plot(t, _list(actual), "k-", lw=2, label="actual")
    ax.plot(t, _list(forecast), "o-", color="tab:blue", ms=3, label="model forecast")
    for name, values in (baselines or {}).items():
        ax.plot(t, _list(values), "--", lw=1, label=name)
    ax.set_xlabel("time")
    ax.set_ylabel(ylabel)
    ax.set_title(title or "one-step-ahead forecast vs actual", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def curves_overlay(
    runs: Mapping[str, Mapping[str, Any]],
    metric: str,
    baselines: Mapping[str, float] | None = None,
    grad_curves: Mapping[str, Any] | None = None,
    title: str = "",
) -> Figure:
    """Compare runs: training loss (left), held-out ``metric`` at each evaluation with the
    baselines as horizontal lines (middle), ‖∂L/∂h_t‖ against steps back (right).

    ``runs[label] = {"loss": [(step, loss)...], "metric": [(step, value)...]}``."""
    fig = Figure(figsize=(15, 4))
    ax_loss, ax_metric, ax_grad = fig.subplots(1, 3)
    for label, run in runs.items():
        if run.get("loss"):
            ax_loss.plot(*zip(*run["loss"], strict=True), lw=1, label=label)
        if run.get("metric"):
            ax_metric.plot(*zip(*run["metric"], strict=True), "o-", ms=3, label=label)
    for i, (name, value) in enumerate((baselines or {}).items()):
        ax_metric.axhline(float(value), ls="--", lw=1, color=f"C{(i + 5) % 10}", label=name)
    ax_loss.set_title("training loss", fontsize=10)
    ax_metric.set_title(f"held-out {metric}", fontsize=10)
    for ax in (ax_loss, ax_metric):
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    for label, values in (grad_curves or {}).items():
        v = [max(x, 1e-30) for x in _list(values)]
        ax_grad.semilogy(list(range(len(v) - 1, -1, -1)), v, label=label)
    ax_grad.set_title("‖∂L/∂h_t‖ through time (trained)", fontsize=10)
    ax_grad.set_xlabel("steps back from the last output")
    ax_grad.grid(alpha=0.3, which="both")
    if grad_curves:
        ax_grad.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def attention_heads(
    weights: Any, src: Sequence[str], tgt: Sequence[str], title: str = ""
) -> Figure:
    """Every head's attention weights (heads × T × S) side by side, one shared colour bar."""
    heads = [_rows(w) for w in (weights.tolist() if hasattr(weights, "tolist") else weights)]
    if not heads:
        raise ValueError("weights: expected (heads, T, S) with at least one head, got none")
    for w in heads:
        if len(w) != len(tgt) or any(len(r) != len(src) for r in w):
            raise ValueError(
                f"weights: expected each head ({len(tgt)}, {len(src)}) = (len(tgt), len(src)), "
                f"got ({len(w)}, {len(w[0]) if w else 0})"
            )
    n = len(heads)
    cols = min(n, 4)
    rows_n = -(-n // cols)
    cell = max(1.6, min(4.0, 0.22 * max(len(src), len(tgt))))
    fig = Figure(figsize=(1.0 + cols * cell, 0.8 + rows_n * cell))
    axes = fig.subplots(rows_n, cols, squeeze=False)
    im = None
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        im = ax.imshow(heads[k], cmap="viridis", aspect="auto", vmin=0, vmax=1)
        ax.set_title(f"head {k}", fontsize=8)
        small = max(len(src), len(tgt)) <= 40
        if small and k % cols == 0:
            ax.set_yticks(range(len(tgt)), list(tgt), fontsize=6)
        else:
            ax.set_yticks([])
        if small and k >= n - cols:
            ax.set_xticks(range(len(src)), list(src), fontsize=6, rotation=90)
        else:
            ax.set_xticks([])
    fig.colorbar(im, ax=list(axes.flat), label="α", fraction=0.03, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
