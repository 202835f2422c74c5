"""The projected LSTM (torch.nn's ``proj_size``) on eager torch ops, with a hand-derived BPTT.

Forward per step (``P`` projected units, ``H`` cell units; equations of
:mod:`seqlab.functional.proj`):

    a_t = xw_t + h_{t−1} W_hhᵀ          (B, 4H), xw = x W_ihᵀ + b_ih + b_hh for all steps
    i, f, g, o = σ, σ, tanh, σ of a_t's blocks
    c_t = f ⊙ c_{t−1} + i ⊙ g,  m_t = o ⊙ tanh c_t,  h_t = m_t W_hrᵀ   (B, P)

Backward per step, in reverse time order, with ``dh`` the gradient reaching ``h_t`` (from
``y_t`` and from step t+1) and ``dc`` the one reaching ``c_t`` from step t+1:

    dm = dh W_hr                         (B, H): the projection's transpose
    dĉ = dc + dm ⊙ o ⊙ (1 − tanh² c_t)
    dA_t = [dĉ ⊙ g ⊙ i(1−i), dĉ ⊙ c_{t−1} ⊙ f(1−f), dĉ ⊙ i ⊙ (1−g²), dm ⊙ tanh c_t ⊙ o(1−o)]
    dh_{t−1} = dA_t W_hh  (B, P),  dc_{t−1} = dĉ ⊙ f

and after the loop, over all ``T·B`` rows at once: ``dx = dA W_ih``, ``dW_ih = dAᵀ X``,
``dW_hh = dAᵀ H_{prev}``, ``db = Σ dA``, ``dW_hr = dHᵀ M`` (``dH`` the ``dh`` of every step,
``M`` = ``o ⊙ tanh c`` recomputed from the saved gates and cells). A padded step (``lengths``)
carries ``h`` and ``c`` and outputs 0, so its ``dA`` and ``dh`` rows are 0 and the gradients
pass it unchanged. No autograd inside: :class:`ProjKernel` plugs these functions into
:class:`seqlab.engine.function.RecurrenceFunction`.

Saved buffers, time-major: ``hbuf`` (T+1, B, P) and ``cbuf`` (T+1, B, H) laid out as in
:mod:`seqlab.engine.fused` (``hbuf[0] = h0`` forward, ``hbuf[T] = h0`` reversed), ``gates``
(T, B, 4H) the activated ``i f g o``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from seqlab.engine.fused import lstm_gate_grads
from seqlab.functional.proj import LSTM_PROJ
from seqlab.functional.spec import CellSpec


def _bias(b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor | None:
    if b_ih is None:
        return b_hh
    return b_ih if b_hh is None else b_ih + b_hh


def _mask(lengths: Tensor | None, T: int, x: Tensor) -> Tensor | None:
    if lengths is None:
        return None
    return (torch.arange(T, device=x.device).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(-1)


def forward(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    w_hr: Tensor,
    lengths: Tensor | None,
    reverse: bool,
    save: bool = True,
) -> tuple[Tensor, ...]:
    """``(y (T, B, P), h_n, c_n, hbuf, cbuf, gates)`` (see the module docstring)."""
    T, B, _ = x.shape
    P, H = h0.shape[1], c0.shape[1]
    gates = torch.nn.functional.linear(x, w_ih, _bias(b_ih, b_hh))  # (T, B, 4H), one GEMM
    hbuf = x.new_empty(T + 1, B, P)
    cbuf = x.new_empty(T + 1, B, H)
    start = T if reverse else 0
    hbuf[start], cbuf[start] = h0, c0
    mask = _mask(lengths, T, x)
    w_hh_t, w_hr_t = w_hh.t(), w_hr.t()
    for t in range(T - 1, -1, -1) if reverse else range(T):
        prev, cur = (t + 1, t) if reverse else (t, t + 1)
        h, c_prev = hbuf[prev], cbuf[prev]
        a = gates[t].addmm_(h, w_hh_t)
        ifo = a[:, : 2 * H].sigmoid_()
        g = a[:, 2 * H : 3 * H].tanh_()
        o = a[:, 3 * H :].sigmoid_()
        c = torch.addcmul(ifo[:, H : 2 * H] * c_prev, ifo[:, :H], g)
        h_new = (o * c.tanh()) @ w_hr_t
        if mask is not None:
            h_new = torch.where(mask[t], h_new, h)
            c = torch.where(mask[t], c, c_prev)
        hbuf[cur], cbuf[cur] = h_new, c
    y = hbuf[:T] if reverse else hbuf[1:]
    if mask is not None:
        y = y * mask
    end = 0 if reverse else T
    return y, hbuf[end].clone(), cbuf[end].clone(), hbuf, cbuf, gates


def backward(
    x: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    w_hr: Tensor,
    has_b_ih: bool,
    has_b_hh: bool,
    lengths: Tensor | None,
    reverse: bool,
    hbuf: Tensor,
    cbuf: Tensor,
    gates: Tensor,
    gy: Tensor,
    ghn: Tensor,
    gcn: Tensor,
) -> tuple[Tensor, ...]:
    """``(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dw_hr)`` (absent biases: empty)."""
    T, B, _ = x.shape
    P, H = hbuf.shape[2], cbuf.shape[2]
    mask = _mask(lengths, T, x)
    if mask is not None:
        gy = gy * mask
    cells = cbuf[:T] if reverse else cbuf[1:]  # c_t of every step
    tanh_c = cells.tanh()
    m_all = gates[:, :, 3 * H :] * tanh_c  # m_t = o ⊙ tanh c_t (padded rows: dH is 0 there)
    da = x.new_empty(T, B, 4 * H)
    dhs = x.new_empty(T, B, P)  # dL/dh_t of every step (the projection's output gradient)
    dh, dc = ghn.clone(), gcn.clone()
    for t in range(T) if reverse else range(T - 1, -1, -1):
        prev = t + 1 if reverse else t
        dh = dh + gy[t]
        i, f, g, o = gates[t].chunk(4, dim=1)
        tc = tanh_c[t]
        dm = dh @ w_hr
        dct = torch.addcmul(dc, dm * o, 1 - tc * tc)
        da_t = lstm_gate_grads(dct, dm, i, f, g, o, tc, cbuf[prev])
        dc_new = dct * f
        dh_t = dh
        if mask is not None:
            da_t = da_t * mask[t]
            dh_t = dh * mask[t]
        da[t], dhs[t] = da_t, dh_t
        dh_new = da_t @ w_hh
        if mask is not None:
            dh_new = torch.where(mask[t], dh_new, dh)
            dc_new = torch.where(mask[t], dc_new, dc)
        dh, dc = dh_new, dc_new
    da2 = da.view(T * B, 4 * H)
    h_prev = (hbuf[1:] if reverse else hbuf[:T]).reshape(T * B, P)
    dx = (da2 @ w_ih).view(T, B, -1)
    dw_ih = da2.t() @ x.reshape(T * B, -1)
    dw_hh = da2.t() @ h_prev
    db_ih = da2.sum(0) if has_b_ih else x.new_empty(0)
    db_hh = da2.sum(0) if has_b_hh else x.new_empty(0)  # its own tensor: autograd may keep it
    dw_hr = dhs.view(T * B, P).t() @ m_all.reshape(T * B, H)
    return dx, dh, dc, dw_ih, dw_hh, db_ih, db_hh, dw_hr


class ProjKernel:
    """:class:`~seqlab.engine.function.Kernel` of :data:`~seqlab.functional.proj.LSTM_PROJ`
    over a ``forward``/``backward`` pair with this module's argument lists (the native
    kernel's ops take the same). ``available()``: whether it may run now."""

    def __init__(
        self,
        name: str,
        forward_fn: Callable,
        backward_fn: Callable,
        available: Callable[[], bool] = lambda: True,
    ) -> None:
        self.name, self.forward_fn, self.backward_fn = name, forward_fn, backward_fn
        self.available = available

    def covers(self, spec: CellSpec) -> bool:
        return spec is LSTM_PROJ and self.available()

    def forward(self, spec, x, state, params, lengths, reverse, save):
        y, h_n, c_n, *saved = self.forward_fn(x, *state, *params, lengths, reverse, save)
        return y, (h_n, c_n), tuple(saved)

    def backward(self, spec, x, params, lengths, reverse, saved, gy, gstate):
        w_ih, w_hh, b_ih, b_hh, w_hr = params
        ghn, gcn = (g.contiguous() for g in gstate)
        dx, dh0, dc0, *dparams = self.backward_fn(
            x, w_ih, w_hh, w_hr, b_ih is not None, b_hh is not None, lengths, reverse,
            *saved, gy, ghn, gcn,
        )  # fmt: skip
        pairs = zip(dparams, params, strict=True)
        return dx, (dh0, dc0), tuple([d if p is not None else None for d, p in pairs])


#: the fused backend's projected-LSTM kernel
KERNEL = ProjKernel("fused", forward, backward)
