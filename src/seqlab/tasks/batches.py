"""Epoch iterators shared by the example-based tasks (sentiment, g2p, sunspots)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from seqlab.data import batch_indices


class EpochBatches:
    """``next()`` returns collate(items of the next shuffled batch), or None after ``epochs``.

    ``epochs <= 0`` means unlimited (the time budget or max_steps stops training).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        epochs: int,
        seed: int,
        collate: Callable[[Sequence[int]], Any],
    ):
        if n == 0:
            raise ValueError("training split is empty")
        self.n, self.batch_size, self.epochs, self.seed = n, batch_size, epochs, seed
        self.collate, self.epoch, self.queue = collate, 0, []

    def __call__(self) -> Any:
        if not self.queue:
            if self.epochs > 0 and self.epoch >= self.epochs:
                return None
            self.queue = batch_indices(self.n, self.batch_size, True, self.seed, self.epoch)
            self.epoch += 1
        return self.collate(self.queue.pop(0))
