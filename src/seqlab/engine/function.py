"""The kernel interface and the autograd glue shared by every fast backend.

A :class:`Kernel` runs one layer in one direction of a cell kind that has a kernel id
(:attr:`seqlab.functional.CellSpec.kernel`). State and parameters travel as sequences in
the description's order (``spec.state``, ``spec.params``; an absent bias is None), so a cell
with more state parts or other parameters needs no new argument lists:

* ``forward(spec, x, state, params, lengths, reverse, save)
  -> (y, final_state, saved)`` — ``saved`` is the kernel's own buffers for the backward;
* ``backward(spec, x, params, lengths, reverse, saved, gy, gstate)
  -> (dx, dstate, dparams)`` — one gradient per state part and per parameter (None for an
  absent parameter).

:class:`ClassicKernel` adapts these sequences onto the fixed argument lists
``(x, h0, c0, w_ih, w_hh, b_ih, b_hh)`` that the fused (:mod:`.fused`) and native
(:class:`.native.NativeKernel`) implementations of the classic cells share.

Only ``x``, the parameters and the kernel's buffers are saved: the outputs ``y`` are a view
of the state buffer (when no lengths are given), so the saved state costs nothing extra.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from seqlab.functional.spec import CLASSIC, CellSpec

Saved = tuple[Tensor, ...]


class Kernel(Protocol):
    """What :class:`RecurrenceFunction` drives (see the module docstring)."""

    name: str

    def covers(self, spec: CellSpec) -> bool: ...

    def forward(
        self,
        spec: CellSpec,
        x: Tensor,
        state: Sequence[Tensor],
        params: Sequence[Tensor | None],
        lengths: Tensor | None,
        reverse: bool,
        save: bool,
    ) -> tuple[Tensor, tuple[Tensor, ...], Saved]: ...

    def backward(
        self,
        spec: CellSpec,
        x: Tensor,
        params: Sequence[Tensor | None],
        lengths: Tensor | None,
        reverse: bool,
        saved: Saved,
        gy: Tensor,
        gstate: Sequence[Tensor],
    ) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor | None, ...]]: ...


class ClassicKernel:
    """A :class:`Kernel` over two functions with the classic fixed arguments.

    ``forward_fn(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, save)
    -> (y, h_n, c_n, hbuf, cbuf, gates)`` and ``backward_fn(mode, x, w_ih, w_hh, has_b_ih,
    has_b_hh, lengths, reverse, hbuf, cbuf, gates, gy, ghn, gcn)
    -> (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)``; ``mode`` is ``spec.kernel``.
    Covers the cell kinds with a kernel id, the classic parameters and 1 or 2 state parts.
    """

    def __init__(self, name: str, forward_fn: Callable, backward_fn: Callable) -> None:
        self.name, self.forward_fn, self.backward_fn = name, forward_fn, backward_fn

    def covers(self, spec: CellSpec) -> bool:
        return spec.kernel is not None and spec.params == CLASSIC and len(spec.state) <= 2

    def forward(self, spec, x, state, params, lengths, reverse, save):
        c0 = state[1] if len(state) == 2 else None
        y, h_n, c_n, *saved = self.forward_fn(
            spec.kernel, x, state[0], c0, *params, lengths, reverse, save
        )
        return y, ((h_n, c_n) if len(state) == 2 else (h_n,)), tuple(saved)

    def backward(self, spec, x, params, lengths, reverse, saved, gy, gstate):
        w_ih, w_hh, b_ih, b_hh = params
        gcn = gstate[1].contiguous() if len(gstate) == 2 else None
        dx, dh0, dc0, *dparams = self.backward_fn(
            spec.kernel,
            x,
            w_ih,
            w_hh,
            b_ih is not None,
            b_hh is not None,
            lengths,
            reverse,
            *saved,
            gy,  # kernels accept contiguous or broadcast (from .sum()) gradients
            gstate[0].contiguous(),
            gcn,
        )
        dstate = (dh0, dc0) if len(gstate) == 2 else (dh0,)
        pairs = zip(dparams, params, strict=True)
        return dx, dstate, tuple([d if p is not None else None for d, p in pairs])


class RecurrenceFunction(torch.autograd.Function):
    """``(x, *state, *params) -> (y, *final_state)`` with the kernel's hand-written backward.

    Double backward is not implemented: with ``create_graph=True`` the returned gradients
    carry a node that raises :data:`DOUBLE_BACKWARD` when differentiated.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        kernel: Kernel,
        spec: CellSpec,
        lengths: Tensor | None,
        reverse: bool,
        n_state: int,
        x: Tensor,
        *tensors: Tensor | None,
    ) -> tuple[Tensor, ...]:
        state, params = tensors[:n_state], tensors[n_state:]
        y, final, saved = kernel.forward(spec, x, state, params, lengths, reverse, True)
        ctx.kernel, ctx.spec, ctx.lengths, ctx.reverse = kernel, spec, lengths, reverse
        ctx.n_state = n_state
        present = [p for p in params if p is not None]
        ctx.present = tuple([p is not None for p in params])
        ctx.save_for_backward(x, *present, *saved)
        return (y, *final)

    @staticmethod
    def backward(ctx: Any, gy: Tensor, *gstate: Tensor) -> tuple[Tensor | None, ...]:
        with torch.no_grad():
            grads = RecurrenceFunction._backward(ctx, gy, gstate)
        if not torch.is_grad_enabled():
            return grads
        # create_graph=True: make differentiating these gradients raise a clear error
        # (an input that requires grad is attached so the outputs get a grad_fn)
        inputs = ctx.saved_tensors[: 1 + sum(ctx.present)]
        anchors = [t for t in inputs if t.requires_grad][:1]
        tensors = [g for g in grads if g is not None] + anchors
        wrapped = iter(_delayed_error(len(tensors))(*tensors))
        return tuple(None if g is None else next(wrapped) for g in grads)

    @staticmethod
    def _backward(ctx: Any, gy: Tensor, gstate: Sequence[Tensor]) -> tuple[Tensor | None, ...]:
        saved = ctx.saved_tensors
        x, n = saved[0], sum(ctx.present)
        present = iter(saved[1 : 1 + n])
        params = tuple([next(present) if has else None for has in ctx.present])
        dx, dstate, dparams = ctx.kernel.backward(
            ctx.spec, x, params, ctx.lengths, ctx.reverse, saved[1 + n :], gy, gstate
        )
        return (None,) * 5 + (dx, *dstate, *dparams)


DOUBLE_BACKWARD = (
    "seqlab engine: double backward (differentiating a gradient) is not supported by the "
    "'native'/'fused' recurrence backends; use backend='reference' for higher-order gradients"
)


def _delayed_error(n: int) -> Any:
    try:
        return torch._C._functions.DelayedError(DOUBLE_BACKWARD, n)
    except (AttributeError, TypeError):  # private API moved: fail early instead of silently

        def fail(*_: Tensor) -> tuple[Tensor, ...]:
            raise RuntimeError(DOUBLE_BACKWARD)

        return fail
