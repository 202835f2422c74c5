"""Fixed-window (Markov) baseline for character language modelling.

An order-n model predicts ``x_t`` from the previous n-1 characters only, with Witten-Bell
interpolation down to a uniform distribution (Witten & Bell 1991; Chen & Goodman 1998 §2.4):

    P_k(c | h) = (C(h c) + N₁₊(h •) · P_{k-1}(c | h')) / (C(h •) + N₁₊(h •))

where h' drops h's oldest character, C counts training occurrences, N₁₊(h •) is the number of
distinct characters seen after h, and P_0 = 1/V. An unseen context falls through to P_{k-1}.
"""

from __future__ import annotations

import math
from collections import Counter


class CharNGram:
    def __init__(self, order: int, vocab_size: int):
        if order < 1:
            raise ValueError(f"order: expected >= 1, got {order}")
        self.order, self.V = order, vocab_size
        self.counts: list[Counter[str]] = []  # counts[k]: (k+1)-grams
        self.ctx_total: list[Counter[str]] = []  # C(h •) for contexts of length k
        self.ctx_types: list[Counter[str]] = []  # N₁₊(h •)

    def fit(self, text: str) -> CharNGram:
        for k in range(self.order):
            grams = Counter(text[i : i + k + 1] for i in range(len(text) - k))
            total: Counter[str] = Counter()
            types: Counter[str] = Counter()
            for g, c in grams.items():
                total[g[:-1]] += c
                types[g[:-1]] += 1
            self.counts.append(grams)
            self.ctx_total.append(total)
            self.ctx_types.append(types)
        return self

    def prob(self, history: str, c: str) -> float:
        p = 1.0 / self.V
        for k in range(self.order):
            if k > len(history):
                break
            h = history[len(history) - k :] if k else ""
            total = self.ctx_total[k].get(h, 0)
            if total == 0:
                continue  # unseen context: keep the lower-order estimate
            types = self.ctx_types[k][h]
            p = (self.counts[k].get(h + c, 0) + types * p) / (total + types)
        return p

    def nats_per_char(self, text: str, context: str = "") -> float:
        """Mean -ln P(x_t | previous n-1 chars) over ``text`` (``context`` primes the window)."""
        full = context + text
        off = len(context)
        nll = 0.0
        for i in range(off, len(full)):
            nll -= math.log(self.prob(full[max(0, i - self.order + 1) : i], full[i]))
        return nll / max(1, len(text))
