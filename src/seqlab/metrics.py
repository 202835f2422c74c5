"""Evaluation metrics for sequence tasks. Every function returns a Python float.

==========================  =================================================================
metric                      definition (symbols as in the code)
==========================  =================================================================
``accuracy``                ``mean(pred == target)`` over non-ignored positions
``macro_f1``                mean over classes ``k`` of ``F1_k = 2·TP_k / (2·TP_k + FP_k + FN_k)``
``mean_nll``                ``−mean log softmax(logits)[target]`` in nats
``perplexity``              ``exp(nll)`` with ``nll`` the mean negative log-likelihood in nats
``bits_per_char``           ``nll / ln 2``
``mae`` / ``rmse``          ``mean|ŷ − y|`` / ``sqrt(mean (ŷ − y)²)``
``mape``                    ``100 · mean |ŷ − y| / |y|`` (percent)
``edit_distance``           Levenshtein distance (substitution, insertion, deletion cost 1)
``error_rate``              ``Σ edit_distance(ref, hyp) / Σ len(ref)`` (token/phoneme error rate)
``word_error_rate``         ``error_rate`` over whitespace-split words
``char_error_rate``         ``error_rate`` over characters
``exact_match``             fraction of hypotheses equal to their reference
``bleu``                    corpus BLEU (Papineni et al. 2002), in [0, 1]
==========================  =================================================================
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def _labels(pred: Tensor, target: Tensor) -> Tensor:
    """Class labels from ``pred``: logits/probabilities ``(..., C)`` or labels like ``target``."""
    if pred.dim() == target.dim() + 1:
        return pred.argmax(-1)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred: expected shape {tuple(target.shape)} or {tuple(target.shape)} + (C,), "
            f"got {tuple(pred.shape)}"
        )
    return pred


def _valid(target: Tensor, ignore_index: int | None) -> Tensor:
    mask = torch.ones_like(target, dtype=torch.bool)
    if ignore_index is not None:
        mask = target != ignore_index
    if not bool(mask.any()):
        raise ValueError("target: no positions to score (empty or all ignored)")
    return mask


def accuracy(pred: Tensor, target: Tensor, ignore_index: int | None = None) -> float:
    """Fraction of positions where the predicted class equals ``target``."""
    labels = _labels(pred, target)
    mask = _valid(target, ignore_index)
    return float((labels[mask] == target[mask]).double().mean())


def macro_f1(
    pred: Tensor, target: Tensor, num_classes: int | None = None, ignore_index: int | None = None
) -> float:
    """Unweighted mean of per-class F1. Classes that occur neither in ``target`` nor in the
    predictions are left out (their F1 is 0/0); ``num_classes`` only bounds the labels."""
    labels = _labels(pred, target)
    mask = _valid(target, ignore_index)
    p, t = labels[mask].long(), target[mask].long()
    k = int(max(p.max(), t.max())) + 1 if num_classes is None else num_classes
    if int(max(p.max(), t.max())) >= k:
        raise ValueError(f"num_classes: labels go up to {int(max(p.max(), t.max()))}, got {k}")
    tp = torch.bincount(t[p == t], minlength=k).double()
    pred_count = torch.bincount(p, minlength=k).double()
    true_count = torch.bincount(t, minlength=k).double()
    denom = pred_count + true_count  # = 2·TP + FP + FN
    present = denom > 0
    return float((2 * tp[present] / denom[present]).mean())


def mean_nll(logits: Tensor, target: Tensor, ignore_index: int = -100) -> float:
    """Mean negative log-likelihood in nats; ``logits`` (..., V), ``target`` (...)."""
    if logits.shape[:-1] != target.shape:
        raise ValueError(
            f"logits: expected shape {tuple(target.shape)} + (V,), got {tuple(logits.shape)}"
        )
    _valid(target, ignore_index)
    return float(
        F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).double(),
            target.reshape(-1),
            ignore_index=ignore_index,
        )
    )


def perplexity(nll: float) -> float:
    """``exp(nll)`` for a mean negative log-likelihood ``nll`` in nats per token."""
    return math.exp(nll)


def bits_per_char(nll: float) -> float:
    """``nll / ln 2``: nats per character to bits per character."""
    return nll / math.log(2)


def _pair(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if pred.shape != target.shape:
        raise ValueError(f"pred: expected shape {tuple(target.shape)}, got {tuple(pred.shape)}")
    if target.numel() == 0:
        raise ValueError("target: empty")
    return pred.double(), target.double()


def mae(pred: Tensor, target: Tensor) -> float:
    """Mean absolute error."""
    p, t = _pair(pred, target)
    return float((p - t).abs().mean())


def rmse(pred: Tensor, target: Tensor) -> float:
    """Root mean squared error."""
    p, t = _pair(pred, target)
    return float((p - t).pow(2).mean().sqrt())


def mape(pred: Tensor, target: Tensor) -> float:
    """Mean absolute percentage error (percent); undefined when a target is 0."""
    p, t = _pair(pred, target)
    if bool((t == 0).any()):
        raise ValueError("target: MAPE is undefined for zero targets; use mae or rmse")
    return float(100.0 * ((p - t).abs() / t.abs()).mean())


def edit_distance(ref: Sequence[Hashable], hyp: Sequence[Hashable]) -> int:
    """Levenshtein distance: fewest substitutions, insertions and deletions turning
    ``ref`` into ``hyp``. Dynamic programme over prefixes, one row at a time:
    ``d[i][j] = min(d[i−1][j] + 1, d[i][j−1] + 1, d[i−1][j−1] + [ref[i−1] ≠ hyp[j−1]])``."""
    prev = list(range(len(hyp) + 1))
    for i in range(1, len(ref) + 1):
        cur = [i] + [0] * len(hyp)
        for j in range(1, len(hyp) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ref[i - 1] != hyp[j - 1]))
        prev = cur
    return prev[-1]


def error_rate(refs: Sequence[Sequence[Hashable]], hyps: Sequence[Sequence[Hashable]]) -> float:
    """Corpus error rate ``Σ edit_distance / Σ len(ref)`` (token or phoneme error rate)."""
    if len(refs) != len(hyps):
        raise ValueError(f"hyps: expected {len(refs)} hypotheses (one per ref), got {len(hyps)}")
    total = sum(len(r) for r in refs)
    if total == 0:
        raise ValueError("refs: the references contain no tokens")
    return sum(edit_distance(r, h) for r, h in zip(refs, hyps, strict=True)) / total


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Word error rate over whitespace-separated words."""
    return error_rate([r.split() for r in refs], [h.split() for h in hyps])


def char_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Character error rate."""
    return error_rate([list(r) for r in refs], [list(h) for h in hyps])


def exact_match(refs: Sequence, hyps: Sequence) -> float:
    """Fraction of hypotheses exactly equal to their reference."""
    if len(refs) != len(hyps) or not refs:
        raise ValueError(f"hyps: expected {len(refs)} (> 0) hypotheses, got {len(hyps)}")
    return sum(list(r) == list(h) for r, h in zip(refs, hyps, strict=True)) / len(refs)


def _ngrams(tokens: Sequence[Hashable], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(
    hyps: Sequence[Sequence[Hashable]],
    refs: Sequence[Sequence[Sequence[Hashable]]],
    max_n: int = 4,
    smooth: bool = False,
) -> float:
    """Corpus BLEU with uniform weights over 1…``max_n``-grams.

    ``refs[i]`` is the list of reference token lists for ``hyps[i]``. Clipped n-gram
    precision ``p_n = Σ_i Σ_g min(count_hyp(g), max_r count_ref_r(g)) / Σ_i Σ_g count_hyp(g)``;
    brevity penalty ``BP = 1`` if ``c > r`` else ``exp(1 − r/c)`` with ``c`` the total
    hypothesis length and ``r`` the sum of the reference lengths closest to each
    hypothesis length (the shorter on ties); ``BLEU = BP · exp(Σ_n log(p_n) / max_n)``.
    ``smooth`` adds 1 to numerator and denominator of ``p_n`` for ``n ≥ 2`` (Lin & Och 2004).
    """
    if len(hyps) != len(refs) or not hyps:
        raise ValueError(f"refs: expected {len(hyps)} (> 0) reference lists, got {len(refs)}")
    match = [0] * max_n
    total = [0] * max_n
    c = r = 0
    for hyp, rs in zip(hyps, refs, strict=True):
        if not rs:
            raise ValueError("refs: every hypothesis needs at least one reference")
        c += len(hyp)
        r += min((abs(len(x) - len(hyp)), len(x)) for x in rs)[1]
        for n in range(1, max_n + 1):
            h = _ngrams(hyp, n)
            best: Counter = Counter()
            for x in rs:
                best |= _ngrams(x, n)  # element-wise max over references
            match[n - 1] += sum(min(k, best[g]) for g, k in h.items())
            total[n - 1] += sum(h.values())
    if c == 0:
        return 0.0
    log_p = 0.0
    for n in range(max_n):
        m, t = match[n], total[n]
        if smooth and n > 0:
            m, t = m + 1, t + 1
        if m == 0 or t == 0:
            return 0.0
        log_p += math.log(m / t) / max_n
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return bp * math.exp(log_p)
