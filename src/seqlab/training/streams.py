"""Stateful streaming for language models: ``B`` parallel streams over one long text.

A language model trained with truncated BPTT sees a long text as ``B`` contiguous streams
read in parallel. Row ``b`` of every batch continues exactly where row ``b`` of the previous
batch stopped, so the recurrent state can be carried (detached) from batch to batch and the
model effectively sees context longer than one window.

Layout for ``N`` tokens, batch size ``B`` and window ``T`` (targets are inputs shifted by 1):

==============  ===========  ============================================================
name            shape        meaning
==============  ===========  ============================================================
``L``           int          ``(N − 1) // B`` tokens per stream
``offsets``     (B,)         ``offsets[b] = b·L``, where stream ``b`` starts in ``tokens``
``inputs``      (B, T)       ``tokens[offsets[b] + j·T + t]`` in window ``j``
``targets``     (B, T)       ``tokens[offsets[b] + j·T + t + 1]``
``resets``      (B, T) bool  True where a new document starts at that input position
``position``    (B,)         index in ``tokens`` of each row's first input of the window
==============  ===========  ============================================================

Documents: give ``doc_starts`` (indices in ``tokens`` where documents begin) or
``boundary_token`` (a token id that starts each document, e.g. a BOS). A model then resets
its state row-wise where ``resets`` is True, e.g. with :func:`forward_with_resets`, so no
state leaks from one document into the next.

Example::

    streams = TokenStreams(ids, batch_size=32, seq_len=64)
    state = None
    for batch in streams:                 # consecutive windows, row b continues row b
        out, state = forward_with_resets(lm_forward, batch["inputs"], state, batch["resets"])
        state = detach_state(state)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from seqlab.training.tbptt import State, reset_rows


class TokenStreams:
    """Iterable of windows over ``B`` parallel streams of one token tensor (see module doc).

    ``drop_last=True`` (default) keeps only full windows of ``seq_len`` so every batch has
    the same shape; otherwise the last window may be shorter.
    """

    def __init__(
        self,
        tokens: Tensor,
        batch_size: int,
        seq_len: int,
        doc_starts: Tensor | None = None,
        boundary_token: int | None = None,
        drop_last: bool = True,
    ) -> None:
        if not isinstance(tokens, Tensor) or tokens.dim() != 1:
            raise TypeError(
                f"tokens: expected a 1-D LongTensor (N,), got "
                f"{tuple(tokens.shape) if isinstance(tokens, Tensor) else type(tokens).__name__}"
            )
        for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        per_row = (tokens.numel() - 1) // batch_size
        if per_row < 1 or (drop_last and per_row < seq_len):
            raise ValueError(
                f"tokens: {tokens.numel()} tokens give {max(per_row, 0)} per stream for "
                f"batch_size={batch_size}; need at least {seq_len if drop_last else 1} "
                f"(zero-length dataset)"
            )
        self.tokens = tokens.long()
        self.batch_size, self.seq_len, self.stream_len = batch_size, seq_len, per_row
        self.offsets = torch.arange(batch_size) * per_row  # (B,)
        starts = torch.zeros(tokens.numel(), dtype=torch.bool)  # (N,)
        if doc_starts is not None:
            starts[doc_starts.long()] = True
        if boundary_token is not None:
            starts |= self.tokens == boundary_token
        self.doc_start = starts
        self.num_windows = per_row // seq_len if drop_last else -(-per_row // seq_len)

    def __len__(self) -> int:
        return self.num_windows

    def window(self, j: int) -> dict[str, Tensor]:
        """Window ``j``: ``inputs``, ``targets``, ``resets`` (B, T) and ``position`` (B,)."""
        if not 0 <= j < self.num_windows:
            raise IndexError(f"j: expected 0 <= j < {self.num_windows}, got {j}")
        T = min(self.seq_len, self.stream_len - j * self.seq_len)
        position = self.offsets + j * self.seq_len  # (B,)
        index = position.unsqueeze(1) + torch.arange(T)  # (B, T)
        return {
            "inputs": self.tokens[index],
            "targets": self.tokens[index + 1],
            "resets": self.doc_start[index],
            "position": position,
        }

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for j in range(self.num_windows):
            yield self.window(j)


def forward_with_resets(
    forward: Callable[[Tensor, State], tuple[Tensor, State]],
    x: Tensor,
    state: State,
    resets: Tensor | None,
    time_dim: int = 1,
    state_batch_dim: int = 1,
) -> tuple[Tensor, State]:
    """Run ``forward(x_piece, state) -> (out_piece, state)`` over ``x`` with per-row resets.

    ``resets`` is (B, T) bool; where ``resets[b, t]`` is True row ``b``'s state is zeroed
    just before step ``t``. The window is split at every step where any row resets, so any
    layer with the ``(x, state) -> (out, state)`` contract gets exact resets. ``state=None``
    already means zeros. Outputs are concatenated back along ``time_dim``.
    """
    if resets is None:
        return forward(x, state)
    T = x.shape[time_dim]
    if resets.shape[1] != T:
        raise ValueError(f"resets: expected shape (B, {T}), got {tuple(resets.shape)}")
    cuts = [t for t in range(1, T) if bool(resets[:, t].any())]
    bounds = [0, *cuts, T]
    outs: list[Any] = []
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        if state is not None:
            state = reset_rows(state, resets[:, s], state_batch_dim)
        out, state = forward(x.narrow(time_dim, s, e - s), state)
        outs.append(out)
    return torch.cat(outs, dim=time_dim), state
