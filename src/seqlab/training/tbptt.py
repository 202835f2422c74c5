"""Truncated back-propagation through time: windows, carried state, detaching.

Full BPTT back-propagates the loss of a length-``T`` sequence through all ``T`` unrolled
steps; its cost and memory grow with ``T``. Truncated BPTT bounds both by cutting the time
axis and *detaching* the recurrent state where it is cut: the state's value flows forward
into the next piece, its gradient does not flow back.

Semantics of ``TBPTT(k1, k2)`` with ``1 ≤ k2 ≤ k1`` (Williams & Peng 1990; Sutskever 2013,
"every k1 steps, run BPTT for k2 steps"):

* the time axis of a batch is cut into windows of ``k1`` steps (the last may be shorter);
* each window is one optimiser update. Its first ``n − k2`` steps (``n`` = window length)
  run forward under ``torch.no_grad`` — they only advance the state; the last
  ``min(k2, n)`` steps run with a graph, the loss is the loss of those steps, and the
  backward pass reaches at most ``k2`` steps back because the state entering them is
  detached;
* the state leaving a window is detached and carried into the next window.

So ``k1 = k2 = k`` is the common case (windows of ``k``, every step has a loss), and
``k1 = k2 = T`` is full BPTT. Windows with ``k2 < k1`` trade loss coverage for cheaper
backward passes.

Shapes: sequence tensors in a batch share the time axis ``time_dim`` (1 for ``(B, T, ...)``
batch-first data, 0 for time-major ``(T, B, ...)``). Example::

    tb = TBPTT(k1=35)
    state = None
    for start, grad_start, end in tb.windows(T):
        window = tb.slice(batch, start, end)
        loss, state = loss_fn(model, window, state)   # state in, state out
        loss.backward(); opt.step(); opt.zero_grad()
        state = detach_state(state)

:class:`seqlab.training.Trainer` does exactly this when ``TrainConfig.tbptt_k1`` is set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from seqlab.functional.scan import detach_state, tree_map

State = Any  # None, a Tensor, or a (named) tuple/list of Tensors


def reset_rows(state: State, mask: Tensor, batch_dim: int = 1) -> State:
    """Zero the state of the batch rows where ``mask`` (B,) is True.

    ``batch_dim`` is the batch axis of every state tensor: 1 for layer states
    ``(L·D, B, H)``, 0 for cell states ``(B, H)``. The other rows keep their values and
    their gradient path; the reset rows restart from zeros, like a fresh sequence.
    """
    if state is None:
        return None
    mask = mask.to(torch.bool)

    def reset(s: Tensor) -> Tensor:
        if s.shape[batch_dim] != mask.shape[0]:
            raise ValueError(
                f"mask: expected {s.shape[batch_dim]} rows (state dim {batch_dim}), "
                f"got {mask.shape[0]}"
            )
        shape = [1] * s.dim()
        shape[batch_dim] = -1
        return torch.where(mask.view(shape).to(s.device), torch.zeros((), dtype=s.dtype), s)

    return tree_map(reset, state)


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected a positive int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value}")


@dataclass(frozen=True)
class TBPTT:
    """Truncated BPTT schedule: a window every ``k1`` steps, gradient over its last ``k2``.

    ``k2=None`` means ``k2 = k1``. ``keys`` names the batch entries that are sequences
    (cut along ``time_dim``); by default every tensor with more than ``time_dim`` axes is.
    """

    k1: int
    k2: int | None = None
    time_dim: int = 1
    keys: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check_positive("k1", self.k1)
        if self.k2 is not None:
            _check_positive("k2", self.k2)
            if self.k2 > self.k1:
                raise ValueError(f"k2: expected k2 <= k1 = {self.k1}, got {self.k2}")

    @property
    def grad_steps(self) -> int:
        """``k2``, the number of steps the backward pass reaches."""
        return self.k1 if self.k2 is None else self.k2

    def windows(self, T: int) -> list[tuple[int, int, int]]:
        """``(start, grad_start, end)`` per window: steps ``[start, grad_start)`` run without
        a graph, ``[grad_start, end)`` with one. Covers ``[0, T)`` exactly."""
        if T < 1:
            raise ValueError(f"T: expected a sequence of at least 1 step, got length {T}")
        out = []
        for start in range(0, T, self.k1):
            end = min(start + self.k1, T)
            out.append((start, max(start, end - self.grad_steps), end))
        return out

    def _is_seq(self, key: str, value: Any) -> bool:
        if self.keys is not None:
            return key in self.keys
        return isinstance(value, Tensor) and value.dim() > self.time_dim

    def length(self, batch: Mapping[str, Any]) -> int:
        """The common length ``T`` of the batch's sequence entries."""
        lengths = {k: v.shape[self.time_dim] for k, v in batch.items() if self._is_seq(k, v)}
        if not lengths:
            raise ValueError(
                f"batch: no sequence tensor with a time axis {self.time_dim} among keys "
                f"{sorted(batch)}"
            )
        if len(set(lengths.values())) != 1:
            raise ValueError(f"batch: sequence entries disagree on length T: {lengths}")
        return next(iter(lengths.values()))

    def slice(self, batch: Mapping[str, Any], start: int, end: int) -> dict[str, Any]:
        """Steps ``[start, end)`` of every sequence entry; other entries pass through."""
        return {
            k: v.narrow(self.time_dim, start, end - start) if self._is_seq(k, v) else v
            for k, v in batch.items()
        }


StepLoss = Callable[[Any, Mapping[str, Any], State], tuple[Tensor, State]]


def tbptt_backward(
    loss_fn: StepLoss,
    model: Any,
    batch: Mapping[str, Any],
    state: State,
    tbptt: TBPTT,
    after_window: Callable[[Tensor], None] | None = None,
) -> tuple[list[float], State]:
    """Run every window of ``batch``: forward, ``loss.backward()``, then ``after_window(loss)``
    (e.g. an optimiser step). Gradients accumulate in ``.grad`` when ``after_window`` does not
    clear them. Returns the per-window losses and the detached final state."""
    losses = []
    for start, grad_start, end in tbptt.windows(tbptt.length(batch)):
        state = window_forward_state(loss_fn, model, batch, state, tbptt, start, grad_start)
        loss, state = loss_fn(model, tbptt.slice(batch, grad_start, end), state)
        loss.backward()
        losses.append(float(loss.detach()))
        if after_window is not None:
            after_window(loss)
        state = detach_state(state)
    return losses, state


def window_forward_state(
    loss_fn: StepLoss,
    model: Any,
    batch: Mapping[str, Any],
    state: State,
    tbptt: TBPTT,
    start: int,
    grad_start: int,
) -> State:
    """Advance ``state`` over steps ``[start, grad_start)`` without a graph (the ``k1 − k2``
    prefix of a window) and return it detached."""
    if grad_start > start:
        with torch.no_grad():
            _, state = loss_fn(model, tbptt.slice(batch, start, grad_start), state)
    return detach_state(state)


def chunked_forward(
    forward: Callable[[Tensor, State], tuple[Tensor, State]],
    x: Tensor,
    chunk: int,
    state: State = None,
    time_dim: int = 0,
    detach: bool = True,
) -> Iterator[tuple[Tensor, State]]:
    """Yield ``(outputs, state)`` for consecutive chunks of ``chunk`` steps of ``x``, carrying
    the state from one chunk to the next (detached when ``detach``). Concatenating the outputs
    along ``time_dim`` reproduces one full forward pass."""
    _check_positive("chunk", chunk)
    T = x.shape[time_dim]
    for start in range(0, T, chunk):
        out, state = forward(x.narrow(time_dim, start, min(chunk, T - start)), state)
        if detach:
            state = detach_state(state)
        yield out, state
