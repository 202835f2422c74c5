"""Padding, batching, streaming and splitting.

Shapes: B batch, T time. Padded batches are batch-first ``(B, T)`` with ``PAD`` (0) after each
sequence's last token and a ``lengths`` tensor ``(B,)``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from seqlab.data.vocab import PAD


def pad_batch(seqs: Sequence[Sequence[int]], pad: int = PAD) -> tuple[Tensor, Tensor]:
    """List of id lists -> (ids (B, T_max) long, lengths (B,) long). Empty sequences rejected."""
    if not seqs:
        raise ValueError("seqs: expected at least one sequence, got 0")
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    if int(lengths.min()) == 0:
        raise ValueError("seqs: expected non-empty sequences, found one of length 0")
    out = torch.full((len(seqs), int(lengths.max())), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out, lengths


def batch_indices(
    n: int, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0
) -> list[list[int]]:
    """Index lists covering range(n); shuffled reproducibly from (seed, epoch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    order = list(range(n))
    if shuffle:
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def stream_batches(ids: Tensor, batch_size: int) -> Tensor:
    """1-D token stream (N,) -> (B, N // B): B contiguous lanes read in parallel.

    Lane b holds tokens [b·L, (b+1)·L); the remainder is dropped. Carrying the recurrent state
    from chunk k to chunk k+1 of the same lane is what makes truncated BPTT see long context.
    """
    if ids.dim() != 1:
        raise ValueError(f"ids: expected a 1-D stream, got shape {tuple(ids.shape)}")
    lane = ids.numel() // batch_size
    if lane < 2:
        raise ValueError(
            f"ids: stream of {ids.numel()} tokens is too short for batch_size={batch_size}"
        )
    return ids[: lane * batch_size].view(batch_size, lane)


def tbptt_chunks(lanes: Tensor, bptt: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (inputs (B, k), targets (B, k)) with k <= ``bptt``; targets are inputs shifted by 1."""
    n = lanes.size(1) - 1
    for start in range(0, n, bptt):
        k = min(bptt, n - start)
        yield lanes[:, start : start + k], lanes[:, start + 1 : start + 1 + k]


def split_indices(n: int, fractions: Sequence[float], seed: int = 0) -> list[list[int]]:
    """Shuffle range(n) with a fixed seed and cut it into parts of the given fractions.

    The last part takes the rounding remainder. With the same (n, fractions, seed) the split is
    identical on every machine (Python's ``random`` is specified, unlike hash order).
    """
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions: expected non-negative values summing to 1, got {fractions}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    parts, start = [], 0
    for f in fractions[:-1]:
        k = round(n * f)
        parts.append(order[start : start + k])
        start += k
    parts.append(order[start:])
    return parts
