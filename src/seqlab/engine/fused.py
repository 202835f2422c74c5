"""Pure-PyTorch kernels of the hand-derived BPTT ("fused" backend, the portable fallback).

The same step math, buffer layout and mode ids as the native C++ kernels
(``csrc/recurrence.cpp``), written with eager torch ops so it runs wherever PyTorch does.
It differs in where the big GEMMs sit: here the input projection is one GEMM before the
loop and the weight gradients are GEMMs over all steps after it; the native loop does both a
chunk of steps at a time. :data:`KERNEL` wraps it as a
:class:`~seqlab.engine.function.Kernel`; the autograd glue is :mod:`seqlab.engine.function`.

Shapes: ``T`` steps, ``B`` batch, ``I`` input, ``H`` hidden, ``G`` gates (1 RNN, 3 GRU, 4 LSTM).

Buffers (time-major, written once in forward, read in backward):

==========  =============  ==========================================================
name        shape          content
==========  =============  ==========================================================
``hbuf``    (T+1, B, H)    states; forward: ``hbuf[0] = h0``, step t writes ``hbuf[t+1]``;
                           reverse: ``hbuf[T] = h0``, step t writes ``hbuf[t]``
``cbuf``    (T+1, B, H)    LSTM cell states, same layout (empty otherwise)
``gates``   (T, B, G'·H)   activated gates: LSTM ``i f g o``; GRU ``r z n`` and, for the
                           torch.nn GRU, a 4th block ``hn = h @ W_hnᵀ + b_hn``; RNN: empty
==========  =============  ==========================================================

With ``lengths``, a row whose step ``t`` is padding carries its state unchanged and outputs 0;
running the time loop backwards (``reverse``) over the same mask gives exactly the reference's
"reverse over each row's valid prefix".
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqlab.engine.function import ClassicKernel
from seqlab.functional.spec import SPECS

# Mode ids shared with the C++ kernels, read from the cell descriptions.
RNN_TANH, RNN_RELU, LSTM, GRU, GRU_BEFORE = (
    SPECS[name].kernel for name in ("rnn_tanh", "rnn_relu", "lstm", "gru", "gru_reset_before")
)
MODE_IDS = {name: s.kernel for name, s in SPECS.items() if s.kernel is not None}
SPEC_BY_ID = {s.kernel: s for s in SPECS.values() if s.kernel is not None}
GATE_COUNT = {k: s.G for k, s in SPEC_BY_ID.items()}


def lstm_gate_grads(
    dct: Tensor, dm: Tensor, i: Tensor, f: Tensor, g: Tensor, o: Tensor, tc: Tensor, c_prev: Tensor
) -> Tensor:
    """∂L/∂a_t, the LSTM's pre-activations [i, f, g, o] side by side, from dct = ∂L/∂c_t (the
    total, through h_t and c_{t+1}) and dm = ∂L/∂m_t of m_t = o ⊙ tanh c_t (tc = tanh c_t):
    [dct⊙g⊙i(1−i), dct⊙c_{t−1}⊙f(1−f), dct⊙i⊙(1−g²), dm⊙tc⊙o(1−o)]."""
    return torch.cat(
        [
            dct * g * i * (1 - i),
            dct * c_prev * f * (1 - f),
            dct * i * (1 - g * g),
            dm * tc * o * (1 - o),
        ],
        dim=1,
    )


def _empty(x: Tensor) -> Tensor:
    return x.new_empty(0)


def projection_bias(mode: int, b_ih: Tensor | None, b_hh: Tensor | None, H: int):
    """Bias folded into the all-steps input GEMM (:meth:`CellSpec.projection_bias`)."""
    return SPEC_BY_ID[mode].projection_bias(b_ih, b_hh, H)


def forward(
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
    save: bool = True,
    h_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Returns ``(y (T,B,H), h_n, c_n, hbuf, cbuf, gates)`` (see the module table).

    ``save=False`` (inference) may skip filling buffers only the backward reads.
    ``h_mask`` (B, H): recurrent dropout, the recurrent products read ``hm = h ⊙ h_mask``
    (the GRU's ``z ⊙ h`` term and the carried state read the plain ``h``).
    """
    T, B, _ = x.shape
    H = h0.shape[1]
    bias = projection_bias(mode, b_ih, b_hh, H)
    xw = torch.nn.functional.linear(x, w_ih, bias)  # (T, B, G·H): one GEMM for all steps
    hbuf = x.new_empty(T + 1, B, H)
    cbuf = x.new_empty(T + 1, B, H) if mode == LSTM else _empty(x)
    if mode == GRU:
        gates = x.new_empty(T, B, 4 * H)
    elif mode in (LSTM, GRU_BEFORE):
        gates = xw
    else:
        gates = _empty(x)
    start = T if reverse else 0
    hbuf[start] = h0
    if mode == LSTM:
        cbuf[start] = c0
    mask = None
    if lengths is not None:
        mask = torch.arange(T, device=x.device).unsqueeze(1) < lengths.unsqueeze(0)  # (T, B)
        mask = mask.unsqueeze(-1)
    b_hn = b_hh[2 * H :] if (mode == GRU and b_hh is not None) else None
    for t in range(T - 1, -1, -1) if reverse else range(T):
        prev, cur = (t + 1, t) if reverse else (t, t + 1)
        h = hbuf[prev]
        hm = h if h_mask is None else h * h_mask  # what the recurrent products read
        if mode == LSTM:
            a = xw[t].addmm_(hm, w_hh.t())
            ifo = a[:, : 2 * H].sigmoid_()
            g = a[:, 2 * H : 3 * H].tanh_()
            o = a[:, 3 * H :].sigmoid_()
            c = ifo[:, H:] * cbuf[prev] + ifo[:, :H] * g
            h_new = o * c.tanh()
        elif mode in (RNN_TANH, RNN_RELU):
            a = xw[t].addmm_(hm, w_hh.t())
            h_new = a.tanh_() if mode == RNN_TANH else a.relu_()
        elif mode == GRU:
            hw = hm @ w_hh.t()
            hn = hw[:, 2 * H :] if b_hn is None else hw[:, 2 * H :] + b_hn
            rz = (xw[t, :, : 2 * H] + hw[:, : 2 * H]).sigmoid_()
            n = torch.addcmul(xw[t, :, 2 * H :], rz[:, :H], hn).tanh_()
            gates[t, :, : 2 * H] = rz
            gates[t, :, 2 * H : 3 * H] = n
            gates[t, :, 3 * H :] = hn
            h_new = torch.addcmul(n, rz[:, H:], h - n)
        else:  # GRU_BEFORE
            a = xw[t]
            rz = a[:, : 2 * H].addmm_(hm, w_hh[: 2 * H].t()).sigmoid_()
            n = a[:, 2 * H :].addmm_(rz[:, :H] * hm, w_hh[2 * H :].t()).tanh_()
            h_new = torch.addcmul(n, rz[:, H:], h - n)
        if mask is not None:
            h_new = torch.where(mask[t], h_new, h)
            if mode == LSTM:
                c = torch.where(mask[t], c, cbuf[prev])
        hbuf[cur] = h_new
        if mode == LSTM:
            cbuf[cur] = c
    y = hbuf[:T] if reverse else hbuf[1:]
    if mask is not None:
        y = y * mask
    end = 0 if reverse else T
    c_n = cbuf[end].clone() if mode == LSTM else _empty(x)
    return y, hbuf[end].clone(), c_n, hbuf, cbuf, gates


def backward(
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
    h_mask: Tensor | None = None,
) -> tuple[Tensor, ...]:
    """Reverse loop for the pre-activation gradients ``dA``, then the weight gradients as
    big GEMMs over all ``T·B`` rows after the loop (the native kernel does them chunk by
    chunk inside its loop instead).

    With ``h_mask`` (the forward's recurrent dropout mask m): the recurrent path's share of
    ``dh_{t−1}`` is ``(dA_t @ w_hh) ⊙ m`` and ``dW_hh = Σ_t dA_tᵀ (h_{t−1} ⊙ m)``.

    Returns ``(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)`` (``dc0``/biases empty if absent).
    """
    T, B, _ = x.shape
    H = hbuf.shape[2]
    G = GATE_COUNT[mode]
    da = x.new_empty(T, B, G * H)  # d loss / d (x @ W_ihᵀ + b) per step
    dah = x.new_empty(T, B, H) if mode == GRU else None  # GRU: d/d hn = dA_n ⊙ r
    mask = None
    if lengths is not None:
        steps = torch.arange(T, device=x.device).unsqueeze(1)
        mask = (steps < lengths.unsqueeze(0)).unsqueeze(-1)
        gy = gy * mask
    dh = ghn.clone()
    dc = gcn.clone() if mode == LSTM else None
    for t in range(T) if reverse else range(T - 1, -1, -1):
        prev, cur = (t + 1, t) if reverse else (t, t + 1)
        dh = dh + gy[t]
        h_prev = hbuf[prev]
        hm = h_prev if h_mask is None else h_prev * h_mask
        if mode == LSTM:
            i, f, g, o = gates[t].chunk(4, dim=1)
            tc = cbuf[cur].tanh()
            dct = dc + dh * o * (1 - tc * tc)
            da_t = lstm_gate_grads(dct, dh, i, f, g, o, tc, cbuf[prev])
            dc_new = dct * f
            direct = None
        elif mode in (RNN_TANH, RNN_RELU):
            h = hbuf[cur]
            da_t = dh * (1 - h * h) if mode == RNN_TANH else dh * (h > 0)
            direct = None
        elif mode == GRU:
            r, z, n, hn = gates[t].chunk(4, dim=1)
            dan = dh * (1 - z) * (1 - n * n)
            da_t = torch.cat([dan * hn * r * (1 - r), dh * (h_prev - n) * z * (1 - z), dan], 1)
            dah_t = dan * r
            direct = dh * z
        else:  # GRU_BEFORE
            r, z, n = gates[t].chunk(3, dim=1)
            dan = dh * (1 - z) * (1 - n * n)
            drh = dan @ w_hh[2 * H :]  # d(r ⊙ hm)
            da_t = torch.cat([drh * hm * r * (1 - r), dh * (h_prev - n) * z * (1 - z), dan], 1)
            direct = dh * z
            drec = drh * r  # d hm through r ⊙ hm
        if mask is not None:
            m = mask[t]
            da_t = da_t * m
            if mode == GRU:
                dah_t = dah_t * m
        da[t] = da_t
        if mode == GRU:
            dah[t] = dah_t
            dh_new = torch.cat([da_t[:, : 2 * H], dah_t], 1) @ w_hh
        elif mode == GRU_BEFORE:
            dh_new = torch.addmm(drec, da_t[:, : 2 * H], w_hh[: 2 * H])
        else:
            dh_new = da_t @ w_hh
        if h_mask is not None:  # the recurrent path read hm = h ⊙ m
            dh_new = dh_new * h_mask
        if direct is not None:
            dh_new = dh_new + direct
        if mask is not None:
            dh_new = torch.where(m, dh_new, dh)
            if mode == LSTM:
                dc_new = torch.where(m, dc_new, dc)
        dh = dh_new
        if mode == LSTM:
            dc = dc_new
    da2 = da.view(T * B, G * H)
    x2 = x.reshape(T * B, -1)
    h_prev_all = hbuf[1:] if reverse else hbuf[:T]
    if h_mask is not None:  # the recurrent products read hm = h ⊙ m
        h_prev_all = h_prev_all * h_mask
    h_prev_all = h_prev_all.reshape(T * B, H)
    dx = (da2 @ w_ih).view(T, B, -1)
    dw_ih = da2.t() @ x2
    db_ih = da2.sum(0) if has_b_ih else _empty(x)
    if mode == GRU:
        dah2 = torch.cat([da[:, :, : 2 * H], dah], 2).view(T * B, G * H)
        dw_hh = dah2.t() @ h_prev_all
        db_hh = dah2.sum(0) if has_b_hh else _empty(x)
    elif mode == GRU_BEFORE:
        rh = gates[:, :, :H].reshape(T * B, H) * h_prev_all
        dw_hh = torch.cat([da2[:, : 2 * H].t() @ h_prev_all, da2[:, 2 * H :].t() @ rh])
        db_hh = da2.sum(0) if has_b_hh else _empty(x)
    else:
        dw_hh = da2.t() @ h_prev_all
        db_hh = da2.sum(0) if has_b_hh else _empty(x)
    dc0 = dc if mode == LSTM else _empty(x)
    return dx, dh, dc0, dw_ih, dw_hh, db_ih, db_hh


#: the fused backend as a :class:`~seqlab.engine.function.Kernel`
KERNEL = ClassicKernel("fused", forward, backward)
