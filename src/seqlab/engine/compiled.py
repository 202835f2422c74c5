"""The native kernels as traceable custom ops, for ``torch.compile`` and ``torch.export``.

The C++ ops (``torch.ops.seqlab_engine.forward/backward``) are opaque to Dynamo: they have no
fake (shape-only) implementation, and the forward's ``y`` is a view of its ``hbuf`` output,
an aliasing a compiler must not be told about wrongly. While a model is being compiled
(``torch.compiler.is_compiling()``), :func:`seqlab.engine.run` therefore calls these wrappers:

* ``seqlab::recurrence(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, save)
  -> (y, h_n, c_n, hbuf, cbuf, gates)`` — the native forward with ``y`` its own tensor;
  without ``save`` the three buffers are empty;
* ``seqlab::recurrence_backward(...) -> (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)``;

each with a fake implementation giving the C++ ops' shapes per mode, and the forward's
gradient formula registered with :func:`torch.library.register_autograd` (it calls the
backward op, so the compiled backward graph runs the hand-derived native BPTT). Eager calls
keep the direct path (:class:`~seqlab.engine.function.RecurrenceFunction`), which has no
custom-op dispatch overhead. Shapes (``G'`` = saved gate width, see :mod:`.fused`):

==========  ==================================  =========================================
output      shape                               when
==========  ==================================  =========================================
``c_n``     (B, H), else (0,)                   LSTM
``hbuf``    (T+1, B, H), else (0,)              ``save``
``cbuf``    (T+1, B, H), else (0,)              ``save`` and LSTM
``gates``   (T, B, G'·H), else (0,)             ``save`` and not RNN (G' = 4, 4, 3 for
                                                LSTM, GRU, reset-before GRU)
==========  ==================================  =========================================
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqlab.functional.spec import SPECS

_LSTM = SPECS["lstm"].kernel
_GATES = {s.kernel: s.G for s in SPECS.values() if s.kernel is not None}
# saved gate width per mode id, in units of H (0: none saved), as the C++ forward writes it
_SAVED_GATES = {
    SPECS["rnn_tanh"].kernel: 0,
    SPECS["rnn_relu"].kernel: 0,
    SPECS["lstm"].kernel: 4,
    SPECS["gru"].kernel: 4,
    SPECS["gru_reset_before"].kernel: 3,
}

Out6 = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]
Out7 = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


@torch.library.custom_op("seqlab::recurrence", mutates_args=())
def recurrence(
    mode: int,
    x: Tensor,
    h0: Tensor,
    c0: Tensor | None,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    lengths: Tensor | None,
    reverse: bool,
    save: bool,
) -> Out6:
    y, h_n, c_n, hbuf, cbuf, gates = torch.ops.seqlab_engine.forward(
        mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, save
    )
    y = y.clone() if lengths is None else y  # else a view of hbuf
    if not save:
        hbuf = cbuf = gates = x.new_empty(0)
    # the C++ op returns one shared empty tensor for every absent output: no two may alias
    outs = (y, h_n, c_n, hbuf, cbuf, gates)
    return tuple([t if t.numel() else x.new_empty(0) for t in outs])  # type: ignore[return-value]


@recurrence.register_fake
def _(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, save) -> Out6:
    T, B, _ = x.shape
    H, mode = h0.shape[1], int(mode)  # mode may arrive symbolic; it selects the shapes
    empty = x.new_empty(0)
    lstm = mode == _LSTM
    c_n = x.new_empty(B, H) if lstm else empty
    if not save:
        return x.new_empty(T, B, H), x.new_empty(B, H), c_n, empty, x.new_empty(0), x.new_empty(0)
    hbuf = x.new_empty(T + 1, B, H)
    cbuf = x.new_empty(T + 1, B, H) if lstm else x.new_empty(0)
    width = _SAVED_GATES[mode]
    gates = x.new_empty(T, B, width * H) if width else x.new_empty(0)
    return x.new_empty(T, B, H), x.new_empty(B, H), c_n, hbuf, cbuf, gates


@torch.library.custom_op("seqlab::recurrence_backward", mutates_args=())
def recurrence_backward(
    mode: int,
    x: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    has_b_ih: bool,
    has_b_hh: bool,
    lengths: Tensor | None,
    reverse: bool,
    hbuf: Tensor,
    cbuf: Tensor,
    gates: Tensor,
    gy: Tensor,
    ghn: Tensor,
    gcn: Tensor | None,
) -> Out7:
    out = torch.ops.seqlab_engine.backward(
        mode, x, w_ih, w_hh, has_b_ih, has_b_hh, lengths, reverse, hbuf, cbuf, gates, gy, ghn, gcn
    )
    return tuple([t if t.numel() else x.new_empty(0) for t in out])  # type: ignore[return-value]


@recurrence_backward.register_fake
def _(
    mode, x, w_ih, w_hh, has_b_ih, has_b_hh, lengths, reverse, hbuf, cbuf, gates, gy, ghn, gcn
) -> Out7:
    T, B, I = x.shape  # noqa: E741
    H = hbuf.shape[2]
    GH = _GATES[int(mode)] * H
    dc0 = x.new_empty(B, H) if mode == _LSTM else x.new_empty(0)
    db_ih = x.new_empty(GH) if has_b_ih else x.new_empty(0)
    db_hh = x.new_empty(GH) if has_b_hh else x.new_empty(0)
    return (
        x.new_empty(T, B, I),
        x.new_empty(B, H),
        dc0,
        x.new_empty(GH, I),
        x.new_empty(GH, H),
        db_ih,
        db_hh,
    )


def _setup_context(ctx, inputs, output) -> None:
    mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, _ = inputs
    _, _, _, hbuf, cbuf, gates = output
    ctx.mode, ctx.reverse, ctx.has_c = mode, reverse, c0 is not None
    ctx.has_b = (b_ih is not None, b_hh is not None)
    ctx.has_lengths = lengths is not None
    extra = (lengths,) if lengths is not None else ()
    ctx.save_for_backward(x, w_ih, w_hh, hbuf, cbuf, gates, *extra)


def _backward(ctx, gy, ghn, gcn, *_buffers):
    x, w_ih, w_hh, hbuf, cbuf, gates, *extra = ctx.saved_tensors
    lengths = extra[0] if ctx.has_lengths else None
    T, B, _ = x.shape
    H = hbuf.shape[2]
    gy = x.new_zeros(T, B, H) if gy is None else gy
    ghn = x.new_zeros(B, H) if ghn is None else ghn.contiguous()
    if gcn is None and ctx.has_c:
        gcn = x.new_zeros(B, H)
    gcn = gcn.contiguous() if ctx.has_c else None
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh = recurrence_backward(
        ctx.mode, x, w_ih, w_hh, *ctx.has_b, lengths, ctx.reverse, hbuf, cbuf, gates, gy, ghn, gcn
    )
    return (
        None,
        dx,
        dh0,
        dc0 if ctx.has_c else None,
        dw_ih,
        dw_hh,
        db_ih if ctx.has_b[0] else None,
        db_hh if ctx.has_b[1] else None,
        None,
        None,
        None,
    )


recurrence.register_autograd(_backward, setup_context=_setup_context)
