"""Fused (eager torch ops) kernel of the LayerNorm LSTM and GRU with a hand-derived BPTT.

Equations and parameter order: :mod:`seqlab.functional.layernorm` (``lnlstm``: ``w_ih w_hh
b_ih b_hh g_ih g_hh g_c b_c``; ``lngru``: ``w_ih w_hh b_ih b_hh g_ih g_hh``). Layout as the
classic fused kernel (:mod:`.fused`): the input projection and its layer norm for all
steps at once (one GEMM, one batched LN), per step the recurrent GEMM, its LN and the
pointwise gates; the backward loop runs in reverse and the weight gradients are GEMMs and
reductions over all ``T·B`` rows after it. ``N = G·H`` (4H LSTM, 3H GRU).

Layer-norm backward of ``x̂ = (q − μ)·ρ`` (``ρ = 1/√(σ² + ε)``, per row over ``N``)::

    ∂L/∂q = ρ ⊙ (dx̂ − mean(dx̂) − x̂ ⊙ mean(dx̂ ⊙ x̂))

Per step both means come from one batched product ``dx̂ @ [1, x̂]`` and the subtraction
from a second (``baddbmm``), and ``ρ`` scales rows, so it moves past the GEMM:
``dh_{t−1} = ρ ⊙ ((∂L/∂q)/ρ @ W_hh)``, ``dW_hh = Σ_t ((∂L/∂q_t)/ρ_t)ᵀ (ρ_t ⊙ h_{t−1})``.
Every factor that depends only on saved forward values (gate derivatives, LN gains, the
length mask) is computed for all steps at once before the loop.

LSTM, per step in reverse (``S`` collects the row vectors the gates multiply)::

    dĉ  = dh ⊙ o ⊙ (1 − tn²) ⊙ g_c                        tn = tanh(LN(c_t; g_c, b_c))
    dc  = dc_next + LN-backward(dĉ) on c_t
    S   = [dc, dc, dc, dh];  da = S ⊙ [g·i(1−i), c_{t−1}·f(1−f), i(1−g²), tn·o(1−o)]
    dq  = LN-backward(da ⊙ g_hh) on q_t = h_{t−1} W_hhᵀ;  dh_{t−1} = dq W_hh;  dc_{t−1} = dc ⊙ f

GRU (reset-after; ``hn = LN(q)_n·g_hh,n + b_hn``)::

    dn' = dh ⊙ (1 − z)(1 − n²);  S = [dn', dh, dn']
    dhw = S ⊙ [hn·r(1−r), (h_{t−1} − n)·z(1−z), r]    (∂L/∂ of LN(q)·g_hh + b_hh)
    dxw = [dhw_r, dhw_z, dn']
    dq  = LN-backward(dhw ⊙ g_hh);  dh_{t−1} = dq W_hh + dh ⊙ z

After the loop: ``dxw`` (the gradient of ``LN(x W_ihᵀ; g_ih) + b``) gives ``db``,
``dg_ih = Σ dxw ⊙ x̂``, the input LN backward ``dP``, ``dX = dP W_ih``, ``dW_ih = dPᵀ X``;
``dg_hh = Σ dhw ⊙ q̂``; the LSTM's ``dn = dh ⊙ o(1 − tn²)`` gives ``dg_c = Σ dn ⊙ ĉ``,
``db_c = Σ dn``.

Lengths and reverse follow the classic kernel: a padded step keeps the state (``where``),
outputs 0, and its gradient factors are masked to 0, so its rows add nothing to any sum.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from seqlab.functional.layernorm import LN_EPS, LNGRU, LNLSTM
from seqlab.functional.scan import step_mask
from seqlab.functional.spec import CellSpec

KINDS = ("lnlstm", "lngru")


def _ln(q: Tensor, weight: Tensor | None = None, bias: Tensor | None = None):
    """``(LN(q; weight, bias), mean, rstd)`` over the last dimension (mean/rstd keep it)."""
    return torch.native_layer_norm(q, q.shape[-1:], weight, bias, LN_EPS)


def _aug(xhat: Tensor) -> Tensor:
    """``[1, x̂]`` as ``(..., N, 2)``: one bmm with it gives ``Σ dx̂`` and ``Σ dx̂ ⊙ x̂``."""
    return torch.stack((torch.ones_like(xhat), xhat), -1)


def _ln_back_step(dxh: Tensor, aug: Tensor) -> Tensor:
    """``dx̂ − mean(dx̂) − x̂ ⊙ mean(dx̂ ⊙ x̂)`` for ``(B, N)`` rows (the caller scales by ρ)."""
    sums = torch.bmm(dxh.unsqueeze(1), aug)  # (B, 1, 2)
    out = torch.baddbmm(dxh.unsqueeze(2), aug, sums.transpose(1, 2), alpha=-1.0 / dxh.shape[1])
    return out.squeeze(2)


def _ln_back(dxh: Tensor, xhat: Tensor, rstd: Tensor) -> Tensor:
    """The layer-norm backward for many rows at once (after the loop)."""
    mean_d = dxh.mean(-1, keepdim=True)
    mean_dx = (dxh * xhat).mean(-1, keepdim=True)
    return (dxh - mean_d - xhat * mean_dx) * rstd


def _sum_rows(t: Tensor) -> Tensor:
    return t.sum((0, 1))


def _time_order(items: list[Tensor], backwards: bool) -> Tensor:
    """Stack per-step tensors collected in processing order into time order."""
    return torch.stack(items[::-1] if backwards else items)


def _project(x: Tensor, w_ih: Tensor, g_ih: Tensor, bias: Tensor | None):
    """``xw = LN(x W_ihᵀ; g_ih) + bias`` for all steps, with ``x̂`` and ρ for the backward."""
    xhat, _, rstd = _ln(torch.nn.functional.linear(x, w_ih))
    xw = xhat * g_ih if bias is None else torch.addcmul(bias, xhat, g_ih)
    return xw, xhat, rstd


def _input_grads(x, w_ih, g_ih, xhat, rstd_in, dxw):
    """``(dX, dW_ih, dg_ih)`` from ``dxw = ∂L/∂(LN(x W_ihᵀ; g_ih) + b)``."""
    T, B, N = dxw.shape
    dg_ih = _sum_rows(dxw * xhat)
    dp = _ln_back(dxw * g_ih, xhat, rstd_in).view(T * B, N)
    return (dp @ w_ih).view(T, B, -1), dp.t() @ x.reshape(T * B, -1), dg_ih


def _states(hs: list[Tensor], reverse: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(buf, y_raw, prev)``: all states in the classic layout (forward: ``buf[0]`` is the
    initial state and step t writes ``buf[t+1]``; reverse: ``buf[T]`` initial, step t
    writes ``buf[t]``), the states after each step and before each step (T, B, H)."""
    buf = torch.stack(hs[::-1] if reverse else hs)
    return (buf, buf[:-1], buf[1:]) if reverse else (buf, buf[1:], buf[:-1])


# ------------------------------------------------------------------ LayerNorm LSTM
def _lstm_forward(x, state, params, mask, reverse, save):
    w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c = params
    h, c = state
    T, H = x.shape[0], h.shape[1]
    xw, xhat, rstd_in = _project(x, w_ih, g_ih, LNLSTM.projection_bias(b_ih, b_hh, H))
    hs, cs, qs, rs, mcs, rcs, tns = [h], [c], [], [], [], [], []
    w_t = w_hh.t()
    for t in range(T - 1, -1, -1) if reverse else range(T):
        q, _, r = _ln(torch.mm(h, w_t))
        a = xw[t].addcmul_(q, g_hh)  # the gates overwrite xw[t] (kept for the backward)
        a[:, : 2 * H].sigmoid_()
        a[:, 2 * H : 3 * H].tanh_()
        a[:, 3 * H :].sigmoid_()
        c_new = (a[:, H : 2 * H] * c).addcmul_(a[:, :H], a[:, 2 * H : 3 * H])
        tn, mc, rc = _ln(c_new, g_c, b_c)
        tn = tn.tanh_()
        h_new = a[:, 3 * H :] * tn
        if mask is not None:
            h_new = torch.where(mask[t], h_new, h)
            c_new = torch.where(mask[t], c_new, c)
        h, c = h_new, c_new
        hs.append(h)
        cs.append(c)
        if save:
            qs.append(q)
            rs.append(r)
            mcs.append(mc)
            rcs.append(rc)
            tns.append(tn)
    hbuf, y, _ = _states(hs, reverse)
    if mask is not None:
        y = y * mask
    if not save:
        return y, (h, c), ()
    cbuf = torch.stack(cs[::-1] if reverse else cs)
    order = [_time_order(v, reverse) for v in (qs, rs, mcs, rcs, tns)]
    return y, (h, c), (xhat, rstd_in, xw, hbuf, cbuf, *order)


def _lstm_backward(x, params, mask, reverse, saved, gy, gstate):
    w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c = params
    xhat, rstd_in, gates, hbuf, cbuf, qhat, rstd, mean_c, rstd_c, tn = saved
    T, B, N = gates.shape
    H = N // 4
    i, f, g, o = gates.chunk(4, 2)
    if reverse:
        c_prev, c_cur, h_prev = cbuf[1:], cbuf[:-1], hbuf[1:]
    else:
        c_prev, c_cur, h_prev = cbuf[:-1], cbuf[1:], hbuf[:-1]
    # factors of the saved forward values, all steps at once (masked: padding adds nothing)
    k_n = o * (1 - tn * tn)  # dn = dh ⊙ k_n
    k_a = torch.cat([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g), tn * o * (1 - o)], 2)
    if mask is not None:
        k_n, k_a, gy = k_n * mask, k_a * mask, gy * mask
    k_c = k_n * g_c
    k_q = k_a * g_hh
    chat = (c_cur - mean_c) * rstd_c
    aug_c, aug_q = _aug(chat), _aug(qhat)
    dh, dc = gstate[0].clone(), gstate[1].clone()
    ss, dqs, dhs = [], [], []
    w = w_hh
    for t in range(T) if reverse else range(T - 1, -1, -1):
        dh = dh + gy[t]
        dc = torch.addcmul(dc, _ln_back_step(dh * k_c[t], aug_c[t]), rstd_c[t])
        s = torch.cat((dc, dc, dc, dh), 1)
        dq = _ln_back_step(s * k_q[t], aug_q[t])  # ∂L/∂q_t divided by ρ_t
        dh_new = torch.mm(dq, w).mul_(rstd[t])
        dc_new = dc * f[t]
        dhs.append(dh)
        ss.append(s)
        dqs.append(dq)
        if mask is not None:
            dh_new = torch.where(mask[t], dh_new, dh)
            dc_new = torch.where(mask[t], dc_new, dc)  # dc gained 0 here (masked k_c)
        dh, dc = dh_new, dc_new
    back = not reverse
    da = _time_order(ss, back) * k_a  # ∂L/∂a_t, a = xw + LN(q)·g_hh (+ b_hh folded in xw)
    dq_all = _time_order(dqs, back).view(T * B, N)
    dn = _time_order(dhs, back) * k_n
    dx, dw_ih, dg_ih = _input_grads(x, w_ih, g_ih, xhat, rstd_in, da)
    dw_hh = dq_all.t() @ (h_prev * rstd).reshape(T * B, H)
    db = _sum_rows(da) if b_ih is not None or b_hh is not None else None
    dparams = (
        dw_ih,
        dw_hh,
        None if b_ih is None else db,
        None if b_hh is None else db,
        dg_ih,
        _sum_rows(da * qhat),
        _sum_rows(dn * chat),
        None if b_c is None else _sum_rows(dn),
    )
    return dx, (dh, dc), dparams


# ------------------------------------------------------------------ LayerNorm GRU
def _gru_forward(x, state, params, mask, reverse, save):
    w_ih, w_hh, b_ih, b_hh, g_ih, g_hh = params
    (h,) = state
    T, H = x.shape[0], h.shape[1]
    # b_hn stays inside r ⊙ (hw_n + b_hn); the rest of b_hh joins the projection's bias
    xw, xhat, rstd_in = _project(x, w_ih, g_ih, LNGRU.projection_bias(b_ih, b_hh, H))
    b_hn = None if b_hh is None else b_hh[2 * H :]
    g_rz, g_n = g_hh[: 2 * H], g_hh[2 * H :]
    hs, qs, rs, hns = [h], [], [], []
    w_t = w_hh.t()
    for t in range(T - 1, -1, -1) if reverse else range(T):
        q, _, r = _ln(torch.mm(h, w_t))
        a = xw[t]  # the gates r, z, n overwrite xw[t] (kept for the backward)
        rz = a[:, : 2 * H].addcmul_(q[:, : 2 * H], g_rz).sigmoid_()
        q_n = q[:, 2 * H :]
        hn = q_n * g_n if b_hn is None else torch.addcmul(b_hn, q_n, g_n)
        n = a[:, 2 * H :].addcmul_(rz[:, :H], hn).tanh_()
        h_new = torch.addcmul(n, rz[:, H:], h - n)
        if mask is not None:
            h_new = torch.where(mask[t], h_new, h)
        h = h_new
        hs.append(h)
        if save:
            qs.append(q)
            rs.append(r)
            hns.append(hn)
    hbuf, y, _ = _states(hs, reverse)
    if mask is not None:
        y = y * mask
    if not save:
        return y, (h,), ()
    order = [_time_order(v, reverse) for v in (qs, rs, hns)]
    return y, (h,), (xhat, rstd_in, xw, hbuf, *order)


def _gru_backward(x, params, mask, reverse, saved, gy, gstate):
    w_ih, w_hh, b_ih, b_hh, g_ih, g_hh = params
    xhat, rstd_in, gates, hbuf, qhat, rstd, hn = saved
    T, B, N = gates.shape
    H = N // 3
    r, z, n = gates.chunk(3, 2)
    h_prev = hbuf[1:] if reverse else hbuf[:-1]
    k_n = (1 - z) * (1 - n * n)  # dn' = dh ⊙ k_n
    k_z = (h_prev - n) * z * (1 - z)
    if mask is not None:
        k_n, k_z, gy = k_n * mask, k_z * mask, gy * mask
    k_hw = torch.cat([hn * r * (1 - r), k_z, r], 2)  # dhw = S ⊙ k_hw, S = [dn', dh, dn']
    k_q = k_hw * g_hh
    aug_q = _aug(qhat)
    dh = gstate[0].clone()
    ss, dqs = [], []
    w = w_hh
    for t in range(T) if reverse else range(T - 1, -1, -1):
        dh = dh + gy[t]
        dn = dh * k_n[t]
        s = torch.cat((dn, dh, dn), 1)
        dq = _ln_back_step(s * k_q[t], aug_q[t])  # ∂L/∂q_t divided by ρ_t
        dh_new = torch.addcmul(dh * z[t], torch.mm(dq, w), rstd[t])
        ss.append(s)
        dqs.append(dq)
        if mask is not None:
            dh_new = torch.where(mask[t], dh_new, dh)
        dh = dh_new
    back = not reverse
    s_all = _time_order(ss, back)
    dhw = s_all * k_hw  # ∂L/∂(LN(q)·g_hh + b_hh)
    dxw = torch.cat([dhw[..., : 2 * H], s_all[..., 2 * H :]], 2)  # n: dn' (outside r ⊙ ·)
    dq_all = _time_order(dqs, back).view(T * B, N)
    dx, dw_ih, dg_ih = _input_grads(x, w_ih, g_ih, xhat, rstd_in, dxw)
    dparams = (
        dw_ih,
        dq_all.t() @ (h_prev * rstd).reshape(T * B, H),
        None if b_ih is None else _sum_rows(dxw),
        None if b_hh is None else _sum_rows(dhw),
        dg_ih,
        _sum_rows(dhw * qhat),
    )
    return dx, (dh,), dparams


_STEPS = {"lnlstm": (_lstm_forward, _lstm_backward), "lngru": (_gru_forward, _gru_backward)}


class LayerNormKernel:
    """:class:`~seqlab.engine.function.Kernel` for ``lnlstm`` and ``lngru`` (module docstring).

    Named ``"fused"``: the engine uses it on the fused backend and, until a kernel named
    like the chosen backend is registered for these kinds, on the others (not reference).
    """

    name = "fused"

    def covers(self, spec: CellSpec) -> bool:
        return spec.name in _STEPS

    def forward(
        self,
        spec: CellSpec,
        x: Tensor,
        state: Sequence[Tensor],
        params: Sequence[Tensor | None],
        lengths: Tensor | None,
        reverse: bool,
        save: bool,
    ) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, ...]]:
        mask = _mask(lengths, x)
        return _STEPS[spec.name][0](x, tuple(state), tuple(params), mask, reverse, save)

    def backward(
        self,
        spec: CellSpec,
        x: Tensor,
        params: Sequence[Tensor | None],
        lengths: Tensor | None,
        reverse: bool,
        saved: tuple[Tensor, ...],
        gy: Tensor,
        gstate: Sequence[Tensor],
    ) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor | None, ...]]:
        mask = _mask(lengths, x)
        return _STEPS[spec.name][1](x, tuple(params), mask, reverse, saved, gy, tuple(gstate))


def _mask(lengths: Tensor | None, x: Tensor) -> Tensor | None:
    m = step_mask(lengths, x.shape[0], x.device)
    return None if m is None else m.unsqueeze(-1)  # (T, B, 1)


#: the LayerNorm cells' fused kernel (registered by :mod:`seqlab.engine`)
KERNEL = LayerNormKernel()
