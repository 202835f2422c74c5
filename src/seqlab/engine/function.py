"""Autograd glue shared by the fused (Python) and native (C++) kernels.

A kernel is any object with the two functions of :mod:`seqlab.engine.fused`:

* ``forward(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse)
  -> (y, h_n, c_n, hbuf, cbuf, gates)``
* ``backward(mode, x, w_ih, w_hh, has_b_ih, has_b_hh, lengths, reverse, hbuf, cbuf, gates,
  gy, ghn, gcn) -> (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)``

Only ``x``, the weights and the kernel's buffers are saved: the outputs ``y`` are a view of
``hbuf`` (when no lengths are given), so the saved state costs nothing extra.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from seqlab.engine.fused import LSTM


class RecurrenceFunction(torch.autograd.Function):
    """``(x, h0, c0, w_ih, w_hh, b_ih, b_hh) -> (y, h_n, c_n)`` with a hand-written backward.

    Double backward is not implemented: with ``create_graph=True`` the returned gradients
    carry a node that raises :data:`DOUBLE_BACKWARD` when differentiated.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        kernel: Any,
        mode: int,
        lengths: Tensor | None,
        reverse: bool,
        x: Tensor,
        h0: Tensor,
        c0: Tensor | None,
        w_ih: Tensor,
        w_hh: Tensor,
        b_ih: Tensor | None,
        b_hh: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        y, h_n, c_n, hbuf, cbuf, gates = kernel.forward(
            mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse
        )
        ctx.kernel, ctx.mode, ctx.lengths, ctx.reverse = kernel, mode, lengths, reverse
        ctx.has_b = (b_ih is not None, b_hh is not None)
        ctx.save_for_backward(x, w_ih, w_hh, hbuf, cbuf, gates)
        if mode != LSTM:
            ctx.mark_non_differentiable(c_n)
        return y, h_n, c_n

    @staticmethod
    def backward(ctx: Any, gy: Tensor, ghn: Tensor, gcn: Tensor) -> tuple[Tensor | None, ...]:
        with torch.no_grad():
            grads = RecurrenceFunction._backward(ctx, gy, ghn, gcn)
        if not torch.is_grad_enabled():
            return grads
        # create_graph=True: make differentiating these gradients raise a clear error
        # (an input that requires grad is attached so the outputs get a grad_fn)
        anchors = [t for t in ctx.saved_tensors[:3] if t.requires_grad][:1]
        tensors = [g for g in grads if g is not None] + anchors
        wrapped = iter(_delayed_error(len(tensors))(*tensors))
        return tuple(None if g is None else next(wrapped) for g in grads)

    @staticmethod
    def _backward(ctx: Any, gy: Tensor, ghn: Tensor, gcn: Tensor) -> tuple[Tensor | None, ...]:
        x, w_ih, w_hh, hbuf, cbuf, gates = ctx.saved_tensors
        dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh = ctx.kernel.backward(
            ctx.mode,
            x,
            w_ih,
            w_hh,
            ctx.has_b[0],
            ctx.has_b[1],
            ctx.lengths,
            ctx.reverse,
            hbuf,
            cbuf,
            gates,
            gy,  # kernels accept contiguous or broadcast (from .sum()) gradients
            ghn.contiguous(),
            gcn.contiguous() if ctx.mode == LSTM else None,
        )
        return (
            None,
            None,
            None,
            None,
            dx,
            dh0,
            dc0 if ctx.mode == LSTM else None,
            dw_ih,
            dw_hh,
            db_ih if ctx.has_b[0] else None,
            db_hh if ctx.has_b[1] else None,
        )


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
