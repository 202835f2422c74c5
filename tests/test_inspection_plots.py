"""seqlab.plots returns matplotlib Figures with the axes, labels and colour bars promised."""

import pytest
import torch
from matplotlib.figure import Figure

from seqlab import plots
from seqlab.inspection.compare import memory_span
from seqlab.inspection.report import saturation, shown_units, top_units


def tick_labels(ax):
    return [t.get_text() for t in ax.get_xticklabels()]


def test_trace_heatmaps_one_panel_and_colorbar_per_gate_with_token_axis():
    T, H = 6, 4
    trace = {n: torch.rand(T, H) for n in ("i", "f", "g", "o", "c", "h")}
    tokens = list("ab cd\n")
    fig = plots.trace_heatmaps(trace, tokens, "title")
    assert isinstance(fig, Figure)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 6 and len(fig.axes) == 12  # 6 heatmaps + 6 colour bars
    assert [ax.get_ylabel().split("\n")[0] for ax in images] == ["i", "f", "g", "o", "c", "h"]
    assert tick_labels(images[-1]) == ["a", "b", "·", "c", "d", "\\n"]
    assert images[0].images[0].get_array().shape == (H, T)  # units × steps
    assert images[0].images[0].get_clim() == (0.0, 1.0)  # sigmoid gate scale
    lo, hi = images[2].images[0].get_clim()  # g: symmetric around 0
    assert lo == -hi
    with pytest.raises(ValueError, match="tokens: expected 6 labels"):
        plots.trace_heatmaps(trace, tokens[:3])


def test_trace_heatmaps_unit_subset():
    trace = {"h": torch.arange(12.0).view(3, 4)}
    fig = plots.trace_heatmaps(trace, None, units=[1, 3])
    data = fig.axes[0].images[0].get_array()
    assert data.tolist() == [[1.0, 5.0, 9.0], [3.0, 7.0, 11.0]]


def test_state_heatmap_saliency_grad_saturation():
    fig = plots.state_heatmap(torch.randn(5, 3), list("hello"), "c")
    assert len(fig.axes) == 2 and fig.axes[0].get_ylabel().startswith("c")
    fig = plots.saliency_bar([0.1, 0.5, 0.2], ["a", "b", "c"])
    (ax,) = fig.axes
    assert [p.get_height() for p in ax.patches] == pytest.approx([0.1, 0.5, 0.2])
    assert tick_labels(ax) == ["a", "b", "c"] and "∂" in ax.get_ylabel()
    fig = plots.grad_through_time({"lstm": [1e-3, 1e-2, 1.0], "rnn": [1e-9, 1e-4, 1.0]})
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and len(ax.lines) == 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["lstm", "rnn"]
    fig = plots.saturation_bar({"i": 0.25, "f": 0.5})
    assert [p.get_height() for p in fig.axes[0].patches] == [0.25, 0.5]


def test_attention_map_has_colorbar_and_both_token_axes():
    alpha = torch.softmax(torch.randn(3, 4), -1)
    fig = plots.attention_map(alpha, list("word"), ["<bos>", "W", "ER"])
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "α"  # the colour bar
    ax = fig.axes[0]
    assert tick_labels(ax) == list("word")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["<bos>", "W", "ER"]
    with pytest.raises(ValueError, match=r"alpha: expected \(2, 4\)"):
        plots.attention_map(alpha, list("word"), ["a", "b"])


def test_forecast_plot_and_curves_overlay():
    fig = plots.forecast_plot(["2000", "2001", "2002"], [1, 2, 3], [1.1, 2.1, 2.9],
                              {"naive": [0, 1, 2]})  # fmt: skip
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "actual", "model forecast", "naive"]  # fmt: skip
    assert list(ax.lines[0].get_xdata()) == [2000.0, 2001.0, 2002.0]
    runs = {"rnn": {"loss": [(1, 2.0), (2, 1.5)], "metric": [(2, 1.9)]},
            "lstm": {"loss": [(1, 2.0), (2, 1.2)], "metric": [(2, 1.4)]}}  # fmt: skip
    fig = plots.curves_overlay(runs, "nats", {"5-gram": 1.6}, {"rnn": [0.1, 1.0]})
    loss_ax, metric_ax, grad_ax = fig.axes
    assert len(loss_ax.lines) == 2 and len(metric_ax.lines) == 3  # 2 runs + the baseline
    assert grad_ax.get_yscale() == "log"


def test_statistics_against_hand_counts():
    f = torch.tensor([[0.01, 0.5], [0.99, 0.96]])  # 3 of 4 saturated (< .05 or > .95)
    g = torch.tensor([[0.0, -0.99], [0.5, 0.2]])  # 1 of 4 beyond ±0.95
    h = torch.tensor([[0.1, -0.9], [0.3, 0.8]])
    sat = saturation({"f": f, "g": g, "c": h, "h": h})
    assert sat == {"f": 0.75, "g": 0.25}
    active, saturated = top_units({"f": f, "g": g, "h": h}, k=2)
    assert [u for u, _ in active] == [1, 0]  # mean |h|: unit 1 0.85, unit 0 0.2
    assert active[0][1] == pytest.approx(0.85)
    # unit 0: f 0.01, 0.99 saturated, g 0.0, 0.5 not; unit 1: f 0.96 and g -0.99 saturated
    assert sorted(saturated) == [(0, 0.5), (1, 0.5)]
    assert shown_units(torch.randn(5, 10), limit=20) == list(range(10))
    h = torch.zeros(4, 6)
    h[:, 4] = torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert shown_units(h, limit=1) == [4]


def test_memory_span():
    assert memory_span([1e-5, 0.02, 0.5, 1.0]) == 2  # 0.5 and 0.02 ≥ 1 % of 1.0, 1e-5 is not
    assert memory_span([0.5, 1.0, 0.0]) == 1  # trailing zero-gradient steps are skipped
    assert memory_span([]) == 0


def test_attention_heads_one_panel_per_head_and_one_colorbar():
    w = torch.softmax(torch.randn(3, 2, 4), -1)  # 3 heads, T=2, S=4
    fig = plots.attention_heads(w, list("abcd"), ["x", "y"], "t")
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 3 and images[1].get_title() == "head 1"
    assert len(fig.axes) == 3 + 1  # 3 heads in one row, 1 colour bar
    assert fig.axes[-1].get_ylabel() == "α"
    assert images[0].images[0].get_array().shape == (2, 4)
    five = plots.attention_heads(torch.rand(5, 2, 4), list("abcd"), ["x", "y"])
    assert len([ax for ax in five.axes if ax.images]) == 5 and len(five.axes) == 2 * 4 + 1
    with pytest.raises(ValueError, match="weights: expected each head"):
        plots.attention_heads(w, list("abc"), ["x", "y"])
