"""The run plots, by inspecting the matplotlib figures, and the bidirectional gradient curves
against a hand-unrolled loop of torch.nn cells."""

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.colorbar import Colorbar
from torch import nn

import seqlab
from seqlab.tasks.plots import (
    attention_figure,
    forecast_figure,
    grad_through_time_figure,
    loss_figure,
)
from seqlab.training import bidirectional_grad_norms

EVENTS = [
    {"kind": "info", "train": 10},
    *({"kind": "train", "step": s, "loss": 1.0 / s} for s in range(10, 101, 10)),
    {"kind": "eval", "step": 30, "val_rmse": 30.0},
    {"kind": "eval", "step": 60, "val_rmse": 22.0},
    {"kind": "eval", "step": 90, "val_rmse": 25.0},
]


def labels(ax):
    return ax.get_legend_handles_labels()[1]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_loss_figure_one_unit_per_axis_with_best_marker_and_baselines():
    fig = loss_figure(
        EVENTS, "val_rmse", "t", baselines={"AR(9)": 24.0, "seasonal naive": 35.0},
        metric_label="validation RMSE (series units)",
        loss_label="training MSE (standardised units)",
    )  # fmt: skip
    top, bottom = fig.axes
    assert len(fig.axes) == 2
    assert top.get_ylabel() == "training MSE (standardised units)"
    assert bottom.get_ylabel() == "validation RMSE (series units)"
    assert bottom.get_xlabel() == "optimizer step"
    # the training curve is on the top axis only, the evaluations on the bottom one
    (train_line,) = [ln for ln in top.lines if ln.get_label() == "training loss"]
    assert list(train_line.get_xdata()) == list(range(10, 101, 10))
    assert all(ln.get_label() != "training loss" for ln in bottom.lines)
    (star,) = [ln for ln in bottom.lines if ln.get_marker() == "*"]
    assert (list(star.get_xdata()), list(star.get_ydata())) == ([60], [22.0])
    # a vertical line at the best step on both axes
    for ax in (top, bottom):
        assert any(list(ln.get_xdata()) == [60, 60] for ln in ax.lines)
    base = {lab for lab in labels(bottom) if lab.startswith(("AR", "seasonal"))}
    assert base == {"AR(9) (24)", "seasonal naive (35)"}


def test_loss_figure_higher_is_better_stars_the_maximum():
    events = [{"kind": "eval", "step": s, "acc": a} for s, a in ((1, 0.5), (2, 0.9), (3, 0.7))]
    fig = loss_figure(events, "acc", "t", higher_is_better=True)
    (star,) = [ln for ln in fig.axes[1].lines if ln.get_marker() == "*"]
    assert list(star.get_ydata()) == [0.9]


def test_attention_map_has_a_colour_bar():
    alpha = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]]
    fig = attention_figure(alpha, ["c", "a", "t"], ["<bos>", "K"], "t")
    heat = fig.axes[0]
    assert len(fig.axes) == 2  # the map and its colour bar
    (image,) = heat.images
    assert isinstance(image.colorbar, Colorbar)
    assert image.colorbar.ax is fig.axes[1]
    assert image.get_clim() == (0, 1)
    assert [t.get_text() for t in heat.get_xticklabels()] == ["c", "a", "t"]


def test_forecast_figure_shows_actual_ours_and_baselines_in_series_units():
    times = ["2000", "2001", "2002"]
    fig = forecast_figure(
        times, [10.0, 20.0, 30.0],
        {"lstm (ours)": [11.0, 19.0, 28.0], "AR(9)": [9.0, 25.0, 31.0]}, "t",
    )  # fmt: skip
    top, err = fig.axes
    assert labels(top) == ["actual", "lstm (ours)", "AR(9)"]
    (actual,) = [ln for ln in top.lines if ln.get_label() == "actual"]
    assert list(actual.get_xdata()) == [2000.0, 2001.0, 2002.0]
    (ours_err,) = [ln for ln in err.lines if ln.get_label() == "lstm (ours)"]
    assert list(ours_err.get_ydata()) == [1.0, -1.0, -2.0]
    assert err.get_ylabel() == "forecast − actual"


def test_grad_through_time_axes_by_distance_or_position():
    fig = grad_through_time_figure({"a": [1e-3, 1e-2, 1.0]}, "t")
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and list(ax.lines[0].get_xdata()) == [2, 1, 0]
    fig = grad_through_time_figure({"forward": [1, 2], "backward": [2, 1]}, "t", by_position=True)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "position t in the input"
    assert list(ax.lines[0].get_xdata()) == [0, 1] and labels(ax) == ["forward", "backward"]


def hand_bidirectional(layer, x, loss_of_outputs):
    """Oracle: unroll torch.nn.LSTMCell copies of both directions by hand, keep every h_t as
    a graph node, and read ‖∂L/∂h_t‖ from autograd (h_t feeds its output and the next
    step, so its .grad is the total derivative)."""
    H = layer.hidden_size
    cells = []
    for suffix in ("", "_reverse"):
        cell = nn.LSTMCell(layer.input_size, H)
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(cell, name).copy_(getattr(layer, f"{name}_l0{suffix}"))
        cells.append(cell)
    B, T, _ = x.shape
    hs = {0: [None] * T, 1: [None] * T}
    for d, order in ((0, range(T)), (1, range(T - 1, -1, -1))):
        h = c = torch.zeros(B, H)
        for t in order:
            h, c = cells[d](x[:, t], (h, c))
            h.retain_grad()
            hs[d][t] = h
    out = torch.cat([torch.stack(hs[0], 1), torch.stack(hs[1], 1)], -1)
    loss_of_outputs(out).backward()
    return [torch.stack([h.grad.norm() for h in hs[d]]) for d in (0, 1)]


@pytest.mark.parametrize("impl", ["torch", "seqlab"])
def test_bidirectional_gradient_curves_match_a_hand_unrolled_loop(impl):
    torch.manual_seed(0)
    cls = nn.LSTM if impl == "torch" else seqlab.LSTM
    layer = cls(3, 5, batch_first=True, bidirectional=True)
    x = torch.randn(2, 7, 3)
    w = torch.randn(10)

    def loss(out):  # max pooling over time, then a linear score
        return (out.amax(1) @ w).pow(2).mean()

    fwd, bwd = bidirectional_grad_norms(layer, x, loss, batch_first=True)
    want_f, want_b = hand_bidirectional(layer, x, loss)
    torch.testing.assert_close(fwd.h, want_f, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(bwd.h, want_b, rtol=1e-4, atol=1e-6)
    assert fwd.loss == pytest.approx(bwd.loss)


def test_bidirectional_gradient_rejects_what_it_cannot_split():
    with pytest.raises(ValueError, match="one-layer bidirectional"):
        bidirectional_grad_norms(nn.LSTM(3, 4), torch.randn(5, 1, 3), lambda o: o.sum())
    with pytest.raises(ValueError, match="one-layer bidirectional"):
        bidirectional_grad_norms(
            nn.GRU(3, 4, num_layers=2, bidirectional=True), torch.randn(5, 1, 3), lambda o: o.sum()
        )


def test_loss_figure_stars_the_kept_step_when_another_metric_chose_it():
    events = [{"kind": "eval", "step": s, "acc": a} for s, a in ((1, 0.5), (2, 0.9), (3, 0.7))]
    fig = loss_figure(events, "acc", "t", higher_is_better=True, best_step=3)
    (star,) = [ln for ln in fig.axes[1].lines if ln.get_marker() == "*"]
    assert (list(star.get_xdata()), list(star.get_ydata())) == ([3], [0.7])


def test_saliency_bar_labels_its_y_axis():
    from seqlab import plots

    assert plots.saliency_bar([0.1, 0.2]).axes[0].get_ylabel() == "‖∂output/∂x_t‖"
    fig = plots.saliency_bar([0.1, 0.9], ["a", "b"], ylabel="P(error)")
    assert fig.axes[0].get_ylabel() == "P(error)"
    assert [b.get_height() for b in fig.axes[0].patches] == [0.1, 0.9]
