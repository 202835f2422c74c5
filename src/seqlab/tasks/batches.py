"""The tasks' training data as re-iterable batch sources for :class:`seqlab.training.Trainer`
(one ``iter()`` = one epoch)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch import Tensor

from seqlab.data import batch_indices, stream_batches


class ShuffledBatches:
    """Epoch ``e`` yields ``collate(indices)`` for the seeded shuffle
    ``batch_indices(n, batch_size, True, seed, e)`` — the same order whatever else draws
    random numbers."""

    def __init__(
        self, n: int, batch_size: int, seed: int, collate: Callable[[Sequence[int]], Any]
    ) -> None:
        if n == 0:
            raise ValueError("training split is empty")
        self.n, self.batch_size, self.seed, self.collate = n, batch_size, seed, collate
        self.epoch = 0

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """The next ``iter()`` yields epoch ``epoch`` (a resumed run's data order)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[Any]:
        order = batch_indices(self.n, self.batch_size, True, self.seed, self.epoch)
        self.epoch += 1
        for idx in order:
            yield self.collate(idx)


class StreamChunks:
    """A token stream cut into ``lanes`` parallel rows, read ``bptt`` steps at a time.

    Each epoch starts at a random phase in ``[0, bptt)`` (so chunk borders move between
    epochs) and yields ``{"inputs": x (lanes, k), "targets": y (lanes, k)}`` with y the
    next tokens, k ≤ bptt. The Trainer (``tbptt_k1=bptt, stateful=True``) carries the
    state from chunk to chunk and restarts it from zero at each epoch.
    """

    def __init__(self, ids: Tensor, lanes: int, bptt: int, seed: int) -> None:
        self.data = stream_batches(ids, lanes)  # (lanes, N)
        self.bptt, self.seed, self.rng, self.epoch = bptt, seed, random.Random(seed), 0
        if self.data.size(1) < 2:
            raise ValueError("training text is too short for the number of lanes")

    def set_epoch(self, epoch: int) -> None:
        """The next ``iter()`` yields epoch ``epoch`` (same phase as in an unbroken run)."""
        self.rng, self.epoch = random.Random(self.seed), 0
        for _ in range(epoch):
            self.rng.randrange(self.bptt)
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        self.epoch += 1
        s, n = self.rng.randrange(self.bptt), self.data.size(1)
        while s + 2 <= n:
            k = min(self.bptt, n - 1 - s)
            yield {"inputs": self.data[:, s : s + k], "targets": self.data[:, s + 1 : s + 1 + k]}
            s += k
