"""``seqlab inspect`` page of the vowels task: one 12-channel series, classified (see
:mod:`.report` for the shared sections).

=======  =============================================  ==========================
task     output y (saliency)                            loss L (gradient in time)
=======  =============================================  ==========================
vowels   z_k, the logit of the predicted speaker k      −log p(k)
=======  =============================================  ==========================

The input (``--text``) names a series (:meth:`seqlab.runs.LoadedRun.series`): ``N`` is the
official test series N, ``FILE.ts[:N]`` a series of a file. Besides the gates, states,
saliency ‖∂z_k/∂x_t‖ and ‖∂L/∂h_t‖ of every page, it shows the standardised input channels,
the per-channel gradient ∂z_k/∂x_{t,c}, the class probabilities, and how the pooled vector
forms: with the top layer's outputs o_t (T, R) and weights A (T, R),

    r_u = Σ_t A_tu · o_tu,      z_k = Σ_t c_t + b_k,      c_t = Σ_u W_ku · A_tu · o_tu,

where A is one-hot at argmax_t o_tu (max pooling), 1/T (mean), α_t (attention) or one-hot
at the last step each direction reads (last), and W, b are the classifier head's weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from seqlab import plots
from seqlab.inspection.page import Section
from seqlab.runs import LoadedRun


@torch.no_grad()
def pooling_weights(model, x: Tensor) -> tuple[Tensor, Tensor]:
    """(o (T, R): the top layer's outputs for one series ``x`` (1, T, I); A (T, R): the weight
    with which o_tu enters the pooled vector, r_u = Σ_t A_tu o_tu)."""
    pooling = model.config.pooling
    o = model.encoder(x, torch.tensor([x.shape[1]]))[0][0]
    T, R = o.shape
    if pooling == "max":
        return o, F.one_hot(o.argmax(0), T).T.to(o.dtype)
    if pooling == "mean":
        return o, torch.full_like(o, 1.0 / T)
    if pooling == "attention":
        alpha = torch.softmax(model.attn_v(torch.tanh(model.attn_w(o))).squeeze(-1), 0)
        return o, alpha[:, None].expand(T, R).clone()
    # last: the forward half of r is h at the last step, the backward half h at the first
    D = model.encoder.directions
    H = R // D
    a = torch.zeros_like(o)
    a[T - 1, :H] = 1.0
    if D == 2:
        a[0, H:] = 1.0
    return o, a


def contributions(model, x: Tensor, k: int) -> tuple[Tensor, Tensor, float]:
    """(c (T,): frame t's share c_t of the logit z_k; the share of r's units each frame
    gives, Σ_u A_tu / R; the bias b_k), so that Σ_t c_t + b_k = z_k."""
    o, a = pooling_weights(model, x)
    w = model.head.weight[k].detach()
    return (a * o) @ w, a.sum(1) / a.shape[1], float(model.head.bias[k].detach())


def overview(lr: LoadedRun, text: str | None, stem: str):
    """(summary lines, [input channels, class probabilities] sections, x (1, T, 12), the
    predicted class k) of the series ``text`` names: for recurrent and Transformer runs."""
    _raw, label, where = lr.series(text)
    x = lr.encode(text)  # (1, T, 12), standardised with the training statistics
    frames = [str(t) for t in range(x.shape[1])]
    with torch.no_grad():
        p = torch.softmax(lr.model(x, torch.tensor([x.shape[1]]))[0], -1)
    k, classes = int(p.argmax()), lr.labels
    summary = [
        f"input: {where}"
        + (f", speaker {label}" if label is not None else "")
        + f"; predicted speaker {classes[k]} with p = {float(p[k]):.3f}"
    ]
    inp = Section("input channels")
    inp.paragraphs.append(
        "The 12 LPC cepstrum coefficients of each frame, standardised with the training "
        "series' mean and deviation (what the first layer reads)."
    )
    inp.figures.append((f"{stem}-input", plots.state_heatmap(
        x[0], frames, "x", f"{where}: standardised coefficients", row_label="coefficient"),
        "input coefficients (rows) over the frames"))  # fmt: skip
    probs = Section("class probabilities")
    probs.figures.append((f"{stem}-probabilities", plots.bars(
        {"p(speaker)": p}, classes, f"predicted speaker {classes[k]}", "speaker"),
        "softmax probability of each speaker"))  # fmt: skip
    marks = [", ".join(m for m, on in (("predicted", j == k), ("true", c == label)) if on)
             for j, c in enumerate(classes)]  # fmt: skip
    probs.tables.append((["speaker", "p", ""], [[c, float(p[j]), marks[j]]
                                                for j, c in enumerate(classes)]))  # fmt: skip
    return summary, [inp, probs], x, k


def inspect_vowels(lr: LoadedRun, text: str | None, stem: str) -> tuple[list[str], list[Section]]:
    """(summary lines, sections) of a recurrent vowels run's page for the series ``text``
    names."""
    from seqlab.inspection.report import _part_sections, _probe_run, _saliency_section

    model = lr.model
    summary, sections, x, k = overview(lr, text, stem)
    frames = [str(t) for t in range(x.shape[1])]
    lengths = torch.tensor([x.shape[1]])

    def outputs(logits):
        return logits[0, k], -F.log_softmax(logits[0], -1)[k]

    probe, _, sal, grads = _probe_run(lr, lambda: model(x, lengths), outputs)

    share_c, share_u, bias = contributions(model, x, k)
    a = pooling_weights(model, x)[1]
    R, D = a.shape[1], model.encoder.directions
    H = R // D
    halves = [a[:, :H].sum(1) / R, a[:, H:].sum(1) / R] if D == 2 else []
    pool = Section(f"pooling ({model.config.pooling}): how r forms")
    pool.paragraphs.append(
        f"r_u = Σ_t A_tu o_tu over the top layer's outputs o_t; c_t = Σ_u W_ku A_tu o_tu is frame "
        f"t's part of the predicted speaker's logit z_k = Σ_t c_t + b_k (b_k = {bias:.4g}); "
        "the share of r's units is Σ_u A_tu / R"
        + (", split into the forward and the backward direction's units." if halves else ".")
    )
    panels = (
        {"share of r: forward units": halves[0], "share of r: backward units": halves[1]}
        if halves
        else {"share of r's units": share_u}
    )
    pool.figures.append((f"{stem}-pooling", plots.bars(
        {**panels, "c_t (part of z_k)": share_c}, frames,
        f"how the pooled vector forms ({model.config.pooling} pooling)", "frame"),
        "each frame's share of the pooled vector and its part of the predicted logit"))  # fmt: skip
    pool.tables.append((
        ["frame", "share of r's units", "c_t"] + (["forward", "backward"] if halves else []),
        [[t, float(share_u[t]), float(share_c[t]), *(float(h[t]) for h in halves)]
         for t in range(len(frames))],
    ))  # fmt: skip

    # ∂z_k/∂x_{t,c} by plain autograd (the probe gives its norm over c)
    xg = x.clone().requires_grad_()
    with torch.enable_grad():
        (g,) = torch.autograd.grad(model(xg, lengths)[0, k], xg)
    sal_sec = _saliency_section(sal, "encoder", frames, stem, "z_k, the predicted speaker's logit")
    sal_sec.figures.append((f"{stem}-saliency-channels", plots.state_heatmap(
        g[0], frames, "∂z_k/∂x", "∂z_k/∂x_{t,c}: each coefficient of each frame",
        row_label="coefficient"), "per-coefficient gradient of the predicted logit"))  # fmt: skip

    sections += [pool, sal_sec]
    sections += _part_sections(probe, probe.traces(), grads, {"encoder": frames}, stem)
    return summary, sections
