"""Streams of whole real recordings, windows over them, and the ``frames`` task's baselines.

A stream is recordings r_1 .. r_m (each (T_i, D), one activity) end to end:
``x = [r_1; r_2; ...; r_m]`` and ``y_t`` = the activity of the recording step t comes from.
Every sample is real; which recording follows which, and so the joins, are synthetic.

A tagger labels a stream through windows of ``window`` steps that start every ``hop`` steps
(the last one ends at the stream's end). Each step takes its label from the window that
gives it the most context: the most past steps (causal, ``t − s``) or the most steps on its
shorter side (offline, ``min(t − s, e − 1 − t)``) for a window [s, e).

Baselines: the majority class of the training frames, and multinomial logistic regression
``p(c | f) = softmax(W f + b)_c`` on the features ``f`` of one step (its D channels) or of a
fixed window of steps (:func:`window_features`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class Stream:
    x: Tensor  # (N, D) float32 frames
    y: Tensor  # (N,) int64 activity per frame
    parts: list[int]  # the recordings in stream order (indices into the split's list)


def compose(recordings: Sequence[Tensor], labels: Sequence[int], order: Sequence[int]) -> Stream:
    """The stream of ``recordings[i]`` for ``i`` in ``order``, each step labelled with its
    recording's ``labels[i]``."""
    if not order:
        raise ValueError("order: expected at least one recording, got none")
    xs = [recordings[i] for i in order]
    ys = [torch.full((len(recordings[i]),), int(labels[i]), dtype=torch.long) for i in order]
    return Stream(torch.cat(xs), torch.cat(ys), list(order))


def permutations(idx: Sequence[int], n: int, seed: int) -> list[list[int]]:
    """``n`` seeded random orders of the recordings ``idx`` (each used once per stream)."""
    g = torch.Generator().manual_seed(seed)
    return [[idx[k] for k in torch.randperm(len(idx), generator=g).tolist()] for _ in range(n)]


def split_by_recording(
    labels: Sequence[int], per_class: int, seed: int
) -> tuple[list[int], list[int]]:
    """(train, valid) recording indices: ``per_class`` recordings of every class held out."""
    g = torch.Generator().manual_seed(seed)
    train, valid = [], []
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        if per_class >= len(idx):
            raise ValueError(
                f"valid_per_class: expected fewer than the {len(idx)} training recordings of "
                f"class {c}, got {per_class}"
            )
        idx = [idx[k] for k in torch.randperm(len(idx), generator=g).tolist()]
        valid += idx[:per_class]
        train += idx[per_class:]
    return sorted(train), sorted(valid)


class RandomWindows:
    """Training batches ``(x (B, W, D), y (B, W))``: each row a window of ``W`` steps at a
    random offset into a fresh stream of recordings drawn at random (with replacement) from
    ``recordings``, plus Gaussian noise of std ``noise``. One epoch = ``batches`` batches; the
    draws of epoch e depend only on (seed, e)."""

    def __init__(self, recordings, labels, window: int, batch_size: int, batches: int,
                 noise: float, seed: int) -> None:  # fmt: skip
        if not recordings:
            raise ValueError("training split is empty")
        self.recordings, self.labels = list(recordings), list(labels)
        self.window, self.batch_size, self.batches = window, batch_size, batches
        self.noise, self.seed, self.epoch = noise, seed, 0
        self.shortest = min(len(r) for r in self.recordings)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        self.epoch += 1
        n = len(self.recordings)
        need = -(-self.window // self.shortest) + 1  # recordings enough for any offset
        for _ in range(self.batches):
            xs, ys = [], []
            for _row in range(self.batch_size):
                order = torch.randint(n, (need,), generator=g).tolist()
                s = compose(self.recordings, self.labels, order)
                off = int(torch.randint(len(self.recordings[s.parts[0]]), (1,), generator=g))
                xs.append(s.x[off : off + self.window])
                ys.append(s.y[off : off + self.window])
            x = torch.stack(xs)
            if self.noise > 0:
                x = x + self.noise * torch.randn(x.shape, generator=g)
            yield x, torch.stack(ys)


def window_starts(n: int, window: int, hop: int) -> list[int]:
    """Starts of the windows over a stream of ``n`` steps: 0, hop, 2·hop, ... while a full
    window fits, then one ending at the stream's end (one window when ``n ≤ window``)."""
    if window < 1 or hop < 1 or hop > window:
        raise ValueError(f"window, hop: expected 1 <= hop <= window, got {window}, {hop}")
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, hop))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


@torch.no_grad()
def label_stream(
    logits_fn: Callable[[Tensor], Tensor], x: Tensor, window: int, hop: int, causal: bool
) -> Tensor:
    """Per-step logits (N, C) of a stream ``x`` (N, D): ``logits_fn`` labels a batch of
    windows (K, W, D) -> (K, W, C); each step keeps its most-context window (module doc)."""
    n = x.shape[0]
    starts = window_starts(n, window, hop)
    w = min(window, n)
    out = logits_fn(torch.stack([x[s : s + w] for s in starts]))
    best = torch.full((n,), -1, dtype=torch.long)
    logits = out.new_zeros(n, out.shape[-1])
    steps = torch.arange(w)
    for k, s in enumerate(starts):
        context = steps if causal else torch.minimum(steps, w - 1 - steps)
        better = context > best[s : s + w]
        logits[s : s + w][better] = out[k][better]
        best[s : s + w] = torch.where(better, context, best[s : s + w])
    return logits


def window_features(x: Tensor, size: int, centred: bool) -> Tensor:
    """(N, size·D) features: for step t the frames t−size+1 .. t (causal) or t−r .. t+r with
    size = 2r + 1 (centred), oldest first; steps beyond the stream repeat its first / last
    frame."""
    if size < 1 or (centred and size % 2 == 0):
        raise ValueError(f"baseline_window: expected an odd size >= 1 when centred, got {size}")
    n = x.shape[0]
    before = size // 2 if centred else size - 1
    t = torch.arange(n)[:, None] + torch.arange(-before, size - before)[None, :]
    return x[t.clamp(0, n - 1)].reshape(n, -1)


class LogisticRegression:
    """Multinomial logistic regression ``p(c | f) = softmax(W z + b)_c`` on standardised
    features ``z = (f − μ) / σ`` (training statistics), fitted in float64 by L-BFGS on the
    mean cross-entropy + ``l2``/2 · ‖W‖² (b not penalised)."""

    def __init__(self, num_classes: int, l2: float = 0.0, max_iter: int = 500) -> None:
        if l2 < 0:
            raise ValueError(f"l2: expected a number >= 0, got {l2}")
        self.num_classes, self.l2, self.max_iter = num_classes, l2, max_iter

    def fit(self, f: Tensor, y: Tensor) -> LogisticRegression:
        f = f.double()
        self.mu, self.sigma = f.mean(0), f.std(0).clamp_min(1e-12)
        z = (f - self.mu) / self.sigma
        self.W = torch.zeros(f.shape[1], self.num_classes, dtype=torch.float64, requires_grad=True)
        self.b = torch.zeros(self.num_classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([self.W, self.b], max_iter=self.max_iter,
                                tolerance_grad=1e-10, tolerance_change=1e-14,
                                history_size=20, line_search_fn="strong_wolfe")  # fmt: skip

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(z @ self.W + self.b, y) + 0.5 * self.l2 * (self.W**2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        self.W, self.b = self.W.detach(), self.b.detach()
        return self

    def logits(self, f: Tensor) -> Tensor:
        return ((f.double() - self.mu) / self.sigma) @ self.W + self.b

    def predict_proba(self, f: Tensor) -> Tensor:
        return torch.softmax(self.logits(f), -1)


def per_class_f1(pred: Tensor, target: Tensor, num_classes: int) -> list[float]:
    """F1 = 2·TP / (2·TP + FP + FN) of every class (0 where the class is neither predicted nor
    true)."""
    out = []
    for c in range(num_classes):
        tp = int(((pred == c) & (target == c)).sum())
        fp = int(((pred == c) & (target != c)).sum())
        fn = int(((pred != c) & (target == c)).sum())
        out.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return out


def scores(pred: Tensor, target: Tensor, classes: Sequence[str]) -> dict[str, float]:
    """Per-step accuracy, macro F1 (mean over all ``classes``) and each class's F1."""
    f1 = per_class_f1(pred, target, len(classes))
    out = {"acc": float((pred == target).double().mean()), "macro_f1": sum(f1) / len(f1)}
    return out | {f"f1_{c.lower()}": v for c, v in zip(classes, f1, strict=True)}
