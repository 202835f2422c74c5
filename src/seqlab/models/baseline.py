"""Fixed-window (Markov) baselines: what an RNN must beat.

:class:`WindowMLP` — vectors or tokens. The output at step t sees only the last k inputs:

    w_t = [x_{t−k+1}; …; x_t]  (x_τ = 0 for τ < 1, i.e. zero left-padding)
    y_t = W_2 tanh(W_1 w_t + b_1) + b_2

so ``forward`` is per-step (B, T, O) like :class:`~seqlab.models.tagger.SequenceTagger`, and
``pooling="last"`` gives a many-to-one output (B, O) at each row's last valid step, like
:class:`~seqlab.models.classifier.SequenceClassifier`. Same ``loss(batch)`` conventions.

:class:`NGramLM` — tokens. An order-n count model, c = the previous n−1 tokens, with
``smoothing="add_delta"`` (default):

    p(v | c) = (count(c, v) + δ) / (count(c) + δ·V)

or ``smoothing="witten_bell"``, interpolated down to the uniform distribution (Witten & Bell
1991; Chen & Goodman 1998 §2.4), for k = 1 … n with P_0 = 1/V:

    P_k(v | h) = (C(h v) + N₁₊(h •) · P_{k−1}(v | h')) / (C(h •) + N₁₊(h •))

where h is the last k−1 tokens, h' drops h's oldest token, C counts training occurrences,
N₁₊(h •) is the number of distinct tokens seen after h; an unseen h keeps P_{k−1}.
Contexts shorter than n−1 at the start of a sequence are left-padded with ``bos``. It
follows the decoding protocol (state = the last n−1 tokens, (B, n−1)), so greedy, sampling
and beam search run on it like on the LanguageModel; ``forward`` returns per-step log-probs
(B, T, V), usable as logits.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.losses import sequence_cross_entropy, sequence_mse
from seqlab.models._checks import check_choice, check_positive, check_tokens
from seqlab.models.classifier import embed_or_check
from seqlab.sizes import check_sizes
from seqlab.validation import check_lengths


@dataclass
class WindowConfig:
    output_size: int
    window: int = 3  # k
    vocab_size: int | None = None
    input_size: int | None = None
    embed_size: int = 16
    hidden_size: int = 64
    pooling: str = "none"  # "none": per-step (B, T, O); "last": (B, O)
    task: str = "classify"  # "classify" (cross-entropy) or "regress" (MSE) for loss()


class WindowMLP(nn.Module):
    """Fixed-window baseline: ``y_t = W_2 tanh(W_1 [x_{t−k+1}; …; x_t] + b_1) + b_2``.

    Sees only the last k inputs (zero left-padding), per step (B, T, O) or, with
    ``pooling="last"``, once per row (B, O) — what a recurrent model must beat. Settings:
    :class:`WindowConfig`.
    """

    def __init__(self, config: WindowConfig) -> None:
        super().__init__()
        c = self.config = config
        check_sizes(c, ("output_size", "window", "embed_size", "hidden_size"),
                    ("vocab_size", "input_size"))  # fmt: skip
        check_positive("window", c.window)
        check_positive("output_size", c.output_size)
        check_choice("pooling", c.pooling, ("none", "last"))
        check_choice("task", c.task, ("classify", "regress"))
        if (c.vocab_size is None) == (c.input_size is None):
            raise ValueError(
                "give exactly one of vocab_size (token input) or input_size (dense input), "
                f"got vocab_size={c.vocab_size}, input_size={c.input_size}"
            )
        size = c.input_size
        if c.vocab_size is not None:
            self.embed = nn.Embedding(c.vocab_size, c.embed_size)
            size = c.embed_size
        self.hidden = nn.Linear(c.window * size, c.hidden_size)
        self.out = nn.Linear(c.hidden_size, c.output_size)

    def forward(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        c = self.config
        x = embed_or_check(self, inputs, c.vocab_size, c.input_size)  # (B, T, I)
        B, T, _ = x.shape
        lengths = check_lengths(lengths, B, T, name="lengths")
        k = c.window
        padded = F.pad(x, (0, 0, k - 1, 0))  # (B, T+k−1, I): zeros before the start
        # Window t holds steps t−k+1..t, oldest first: unfold then put time-in-window first.
        win = padded.unfold(1, k, 1).transpose(2, 3).reshape(B, T, -1)  # (B, T, k·I)
        y = self.out(torch.tanh(self.hidden(win)))  # (B, T, O)
        if c.pooling == "last":
            last = (lengths - 1) if lengths is not None else torch.full((B,), T - 1)
            return y[torch.arange(B), last.to(y.device)]
        return y

    def loss(self, batch: dict) -> Tensor:
        y, lengths = self(batch["inputs"], batch.get("lengths")), batch.get("lengths")
        targets = batch["targets"]
        if self.config.pooling == "last":
            if self.config.task == "classify":
                return F.cross_entropy(y, targets)
            return F.mse_loss(y, targets.to(y.dtype).view_as(y))
        if self.config.task == "classify":
            return sequence_cross_entropy(y, targets, lengths)
        return sequence_mse(y, targets.to(y.dtype).view_as(y), lengths)


WindowBaseline = WindowMLP  # the name the issue uses for the fixed-window model


SMOOTHINGS = ("add_delta", "witten_bell")


class NGramLM:
    """Count-based order-``n`` language model (not an nn.Module: it has no gradients)."""

    def __init__(
        self,
        vocab_size: int,
        n: int = 3,
        delta: float = 0.1,
        bos: int = 1,
        smoothing: str = "add_delta",
    ) -> None:
        check_positive("vocab_size", vocab_size)
        check_positive("n", n)
        check_choice("smoothing", smoothing, SMOOTHINGS)
        if delta <= 0:
            raise ValueError(f"delta must be > 0 (add-δ smoothing), got {delta}")
        self.vocab_size, self.n, self.delta, self.bos = vocab_size, n, delta, bos
        self.smoothing = smoothing
        # grams[k]: counts of (k+1)-token tuples whose last token is a real (non-padding) one;
        # ctx_total[k][h] = C(h •), ctx_types[k][h] = N₁₊(h •) for contexts h of k tokens.
        self.grams: list[Counter] = [Counter() for _ in range(n)]
        self.ctx_total: list[dict] = [{} for _ in range(n)]
        self.ctx_types: list[dict] = [{} for _ in range(n)]

    def fit(self, sequences) -> NGramLM:
        """Count n-grams in an iterable of token-id sequences (lists or 1-D tensors)."""
        n = self.n
        for seq in sequences:
            ids = seq.tolist() if isinstance(seq, Tensor) else list(seq)
            check_tokens("sequences", torch.tensor([ids], dtype=torch.long), self.vocab_size)
            padded = [self.bos] * (n - 1) + ids
            for k in range(n):  # the (k+1)-grams ending at each real token
                ends = len(padded) - k
                cols = [padded[n - 1 - k + j : ends + j] for j in range(k + 1)]
                self.grams[k].update(zip(*cols, strict=True))
        for k in range(n):
            total: dict = defaultdict(int)
            types: dict = defaultdict(int)
            for g, c in self.grams[k].items():
                total[g[:-1]] += c
                types[g[:-1]] += 1
            self.ctx_total[k], self.ctx_types[k] = dict(total), dict(types)
        return self

    def prob(self, context: tuple[int, ...], token: int) -> float:
        """p(token | context); ``context`` holds at least the last n−1 tokens (BOS-padded)."""
        context = tuple(context)
        if self.smoothing == "add_delta":
            h = context[len(context) - (self.n - 1) :] if self.n > 1 else ()
            count = self.grams[-1].get((*h, token), 0)
            total = self.ctx_total[-1].get(h, 0)
            return (count + self.delta) / (total + self.delta * self.vocab_size)
        p = 1.0 / self.vocab_size
        for k in range(self.n):
            h = context[len(context) - k :] if k else ()
            total = self.ctx_total[k].get(h, 0)
            if total == 0:
                continue  # unseen context: keep the lower-order estimate
            types = self.ctx_types[k][h]
            p = (self.grams[k].get((*h, token), 0) + types * p) / (total + types)
        return p

    def log_probs(self, context: tuple[int, ...]) -> Tensor:
        """log p(· | context) (V,), float64."""
        context = tuple(context)
        return torch.log(
            torch.tensor([self.prob(context, v) for v in range(self.vocab_size)],
                         dtype=torch.float64)
        )  # fmt: skip

    def stream_nll(self, ids, context=()) -> float:
        """Mean −ln p(x_t | previous n−1 tokens) over every token of ``ids`` (a list or 1-D
        tensor); the history before ``ids`` is ``context`` (its last tokens), BOS-padded."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        h = [self.bos] * (self.n - 1) + list(context)[-(self.n - 1) :] if self.n > 1 else []
        h = h[len(h) - (self.n - 1) :] if self.n > 1 else []
        full = h + ids
        m = len(h)
        nll = 0.0
        for i in range(m, len(full)):
            nll -= math.log(self.prob(tuple(full[i - m : i]), full[i]))
        return nll / max(1, len(ids))

    def start(self, batch_size: int) -> Tensor:
        return torch.full((batch_size, self.n - 1), self.bos, dtype=torch.long)

    def step(self, tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """Decoding protocol. ``tokens`` (B,) is appended to the context before predicting."""
        tokens = check_tokens("tokens", tokens, self.vocab_size, dims=1)
        ctx = torch.cat([state, tokens.unsqueeze(1)], 1)[:, 1:] if self.n > 1 else state
        logits = torch.stack([self.log_probs(tuple(row)) for row in ctx.tolist()])
        return logits.float(), ctx

    def reorder_state(self, state: Tensor, index: Tensor) -> Tensor:
        return state.index_select(0, index)

    def forward(self, tokens: Tensor) -> Tensor:
        """Per-step log p(x_{t+1} | x_{t−n+2..t}) for a batch (B, T) -> (B, T, V); the first
        step's context is BOS-padded, so logits[:, t] scores the token after tokens[:, t]."""
        tokens = check_tokens("tokens", tokens, self.vocab_size)
        state = self.start(tokens.shape[0])
        out = []
        for t in range(tokens.shape[1]):
            logits, state = self.step(tokens[:, t], state)
            out.append(logits)
        return torch.stack(out, 1)

    __call__ = forward

    def nll(self, tokens: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Mean negative log-likelihood per predicted token (targets = tokens[:, 1:])."""
        logp = self(tokens[:, :-1])
        n = None if lengths is None else check_lengths(lengths, *tokens.shape, name="lengths") - 1
        return sequence_cross_entropy(logp, tokens[:, 1:], n)
