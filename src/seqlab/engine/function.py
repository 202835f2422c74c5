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

Recurrent dropout (optional): a kernel whose ``covers_h_mask(spec)`` is True takes a
keyword ``h_mask`` (B, H) in both calls (the recurrent product reads ``h_{t−1} ⊙ h_mask``,
:mod:`seqlab.functional.regularisers`); the engine runs masked calls of other kernels on
the reference loop.

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

    def __init__(
        self,
        name: str,
        forward_fn: Callable,
        backward_fn: Callable,
        masked: tuple[Callable, Callable] | None = None,
    ) -> None:
        """``masked``: the ``(forward, backward)`` pair that takes ``h_mask`` as one more
        (last) argument; by default ``forward_fn``/``backward_fn`` themselves do."""
        self.name, self.forward_fn, self.backward_fn = name, forward_fn, backward_fn
        self.masked_forward_fn, self.masked_backward_fn = masked or (forward_fn, backward_fn)

    def covers(self, spec: CellSpec) -> bool:
        return spec.kernel is not None and spec.params == CLASSIC and len(spec.state) <= 2

    def covers_h_mask(self, spec: CellSpec) -> bool:
        """Whether ``forward``/``backward`` take ``h_mask`` (recurrent dropout) for ``spec``."""
        return self.covers(spec)

    def forward(self, spec, x, state, params, lengths, reverse, save, h_mask=None):
        c0 = state[1] if len(state) == 2 else None
        args = (spec.kernel, x, state[0], c0, *params, lengths, reverse, save)
        if h_mask is None:
            y, h_n, c_n, *saved = self.forward_fn(*args)
        else:
            y, h_n, c_n, *saved = self.masked_forward_fn(*args, h_mask)
        return y, ((h_n, c_n) if len(state) == 2 else (h_n,)), tuple(saved)

    def backward(self, spec, x, params, lengths, reverse, saved, gy, gstate, h_mask=None):
        w_ih, w_hh, b_ih, b_hh = params
        gcn = gstate[1].contiguous() if len(gstate) == 2 else None
        args = (
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
        if h_mask is None:
            dx, dh0, dc0, *dparams = self.backward_fn(*args)
        else:
            dx, dh0, dc0, *dparams = self.masked_backward_fn(*args, h_mask)
        dstate = (dh0, dc0) if len(gstate) == 2 else (dh0,)
        pairs = zip(dparams, params, strict=True)
        return dx, dstate, tuple([d if p is not None else None for d, p in pairs])


class RecurrenceFunction(torch.autograd.Function):
    """``(x, *state, *params) -> (y, *final_state)`` with the kernel's hand-written backward.

    ``h_mask`` (a constant, no gradient; None when recurrent dropout is off) is handed to
    the kernel's forward and backward as is.

    Double backward: when the backward runs with grad mode on (``create_graph=True``), the
    gradients are computed instead by differentiable ops — the reference loop
    (:func:`seqlab.functional.scan.reference_run`) is re-run on the saved inputs under
    autograd and differentiated with ``create_graph=True`` — so they can be differentiated
    again (exactly: the reference loop is the oracle every kernel matches).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        kernel: Kernel,
        spec: CellSpec,
        lengths: Tensor | None,
        reverse: bool,
        n_state: int,
        h_mask: Tensor | None,
        x: Tensor,
        *tensors: Tensor | None,
    ) -> tuple[Tensor, ...]:
        state, params = tensors[:n_state], tensors[n_state:]
        masked = {} if h_mask is None else {"h_mask": h_mask}
        y, final, saved = kernel.forward(spec, x, state, params, lengths, reverse, True, **masked)
        ctx.kernel, ctx.spec, ctx.lengths, ctx.reverse = kernel, spec, lengths, reverse
        ctx.n_state, ctx.h_mask = n_state, h_mask
        present = [p for p in params if p is not None]
        ctx.present = tuple([p is not None for p in params])
        # the initial state is saved only for a double backward's recomputation ((B, H) each)
        ctx.save_for_backward(x, *state, *present, *saved)
        return (y, *final)

    @staticmethod
    def backward(ctx: Any, gy: Tensor, *gstate: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():  # create_graph=True: differentiable gradients
            return RecurrenceFunction._differentiable_backward(ctx, gy, gstate)
        return RecurrenceFunction._backward(ctx, gy, gstate)

    @staticmethod
    def _inputs(ctx: Any) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor | None, ...], Saved]:
        saved = ctx.saved_tensors
        x, k = saved[0], 1 + ctx.n_state
        state = tuple(saved[1:k])
        n = sum(ctx.present)
        present = iter(saved[k : k + n])
        params = tuple([next(present) if has else None for has in ctx.present])
        return x, state, params, tuple(saved[k + n :])

    @staticmethod
    def _backward(ctx: Any, gy: Tensor, gstate: Sequence[Tensor]) -> tuple[Tensor | None, ...]:
        x, _, params, buffers = RecurrenceFunction._inputs(ctx)
        masked = {} if ctx.h_mask is None else {"h_mask": ctx.h_mask}
        dx, dstate, dparams = ctx.kernel.backward(
            ctx.spec, x, params, ctx.lengths, ctx.reverse, buffers, gy, gstate, **masked
        )
        return (None,) * _N_CONST + (dx, *dstate, *dparams)

    @staticmethod
    def _differentiable_backward(
        ctx: Any, gy: Tensor, gstate: Sequence[Tensor]
    ) -> tuple[Tensor | None, ...]:
        from seqlab.functional.scan import reference_run  # scan imports the spec table only

        x, state, params, _ = RecurrenceFunction._inputs(ctx)
        inputs = (x, *state, *params)
        wanted = [
            i
            for i, (t, need) in enumerate(zip(inputs, ctx.needs_input_grad[_N_CONST:], strict=True))
            if need and t is not None
        ]
        grads: list[Tensor | None] = [None] * len(inputs)
        if wanted:
            named = {p.name: t for p, t in zip(ctx.spec.params, params, strict=True)}
            y, final = reference_run(
                ctx.spec, x, state, named, ctx.lengths, ctx.reverse, ctx.h_mask
            )
            got = torch.autograd.grad(
                (y, *final),
                [inputs[i] for i in wanted],
                (gy, *gstate),
                create_graph=True,
                allow_unused=True,
            )
            for i, g in zip(wanted, got, strict=True):
                grads[i] = torch.zeros_like(inputs[i]) if g is None else g
        return (None,) * _N_CONST + tuple(grads)


# RecurrenceFunction's leading arguments without a gradient (kernel .. h_mask)
_N_CONST = 6
