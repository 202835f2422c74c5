"""Fused (eager torch ops) kernel of the LayerNorm LSTM and GRU with a hand-derived BPTT.

Equations and parameter order: :mod:`seqlab.functional.layernorm` (``lnlstm``: ``w_ih w_hh
b_ih b_hh g_ih g_hh g_c b_c``; ``lngru``: ``w_ih w_hh b_ih b_hh g_ih g_hh``). Layout as the
classic fused kernel (:mod:`.fused`): the input projection and its layer norm for all
steps at once (one GEMM, one batched LN), per step the recurrent GEMM, its LN and the
pointwise gates; the backward loop runs in reverse and the weight gradients are GEMMs over
all ``T·B`` rows after it. ``N = G·H`` (4H LSTM, 3H GRU).

Layer-norm backward of ``x̂ = (q − μ)·ρ`` (``ρ = 1/√(σ² + ε)``, per row over ``N``)::

    ∂L/∂q = ρ ⊙ (dx̂ − mean(dx̂) − x̂ ⊙ mean(dx̂ ⊙ x̂))

LSTM, per step in reverse (``tn = tanh(LN(c_t; g_c, b_c))``, ``ĉ``, ``q̂`` the normalised
cell and recurrent projection)::

    dn  = dh ⊙ o ⊙ (1 − tn²);  dc = dc_next + LN-backward(dn ⊙ g_c) on c_t
    da  = [dc, dc, dc, dh] ⊙ [g·i(1−i), c_{t−1}·f(1−f), i(1−g²), tn·o(1−o)]
    dq  = LN-backward(da ⊙ g_hh) on q_t = h_{t−1} W_hhᵀ;  dh_{t−1} = dq W_hh;  dc_{t−1} = dc ⊙ f
    dP  = LN-backward(da ⊙ g_ih) on P_t = x_t W_ihᵀ     (a = xw + LN(q)·g_hh + b_hh)

GRU (reset-after; ``hn = LN(q)_n·g_hh,n + b_hn``)::

    dn' = dh ⊙ (1 − z)(1 − n²)
    dhw = [dn', dh, dn'] ⊙ [hn·r(1−r), (h_{t−1} − n)·z(1−z), r]    (∂L/∂(LN(q)·g_hh + b_hh))
    dxw = [dhw_r, dhw_z, dn']                                    (∂L/∂xw)
    dq  = LN-backward(dhw ⊙ g_hh);  dh_{t−1} = dq W_hh + dh ⊙ z;  dP = LN-backward(dxw ⊙ g_ih)

Sums: ``db_ih = Σ dxw`` (LSTM: ``da``, also ``db_hh``), GRU ``db_hh = Σ dhw``,
``dg_ih = Σ dxw ⊙ x̂``, ``dg_hh = Σ dhw ⊙ q̂`` (LSTM: ``da``), ``dg_c = Σ dn ⊙ ĉ``,
``db_c = Σ dn``; GEMMs after the loop: ``dX = dP W_ih``, ``dW_ih = dPᵀ X``,
``dW_hh = dqᵀ H_prev``.

Where the work sits: the gate-derivative factors of the saved forward values are computed
for all steps at once before the loop; everything that involves the step's gradient rows
(the three LN backwards, the gain/bias sums as running ``(B, N)`` accumulators) is done per
step on rows still in cache, and ``dq``/``dP`` go to buffers for the three GEMMs. Passes
over whole ``(T, B, N)`` arrays are memory-bound and cost more than a small per-step op
(that split made the backward ~25 % faster at C1 and C2).

Lengths and reverse follow the classic kernel: a padded step keeps the state (``where``),
outputs 0, and its gradient factors are masked to 0, so its rows add nothing to any sum.

Recurrent dropout (``h_mask`` m, (B, H), one per sequence; :mod:`seqlab.functional.
regularisers`): the recurrent product reads ``hm = h_{t−1} ⊙ m``, so ``q_t = hm W_hhᵀ``;
in the backward the recurrent path's ``dh_{t−1}`` is ``(dq W_hh) ⊙ m`` and
``dW_hh = dqᵀ (H_prev ⊙ m)``; the GRU's direct term ``dh ⊙ z`` reads the plain ``h_{t−1}``
and stays unmasked, as does the cell state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from seqlab.functional.layernorm import LN_EPS, LNGRU, LNLSTM
from seqlab.functional.scan import step_mask
from seqlab.functional.spec import CellSpec


def _ln(q: Tensor, weight: Tensor | None = None, bias: Tensor | None = None):
    """``(LN(q; weight, bias), mean, rstd)`` over the last dimension (mean/rstd keep it)."""
    return torch.native_layer_norm(q, q.shape[-1:], weight, bias, LN_EPS)


def _ln_back_step(dxh: Tensor, xhat: Tensor) -> Tensor:
    """``dx̂ − mean(dx̂) − x̂ ⊙ mean(dx̂ ⊙ x̂)`` for ``(B, N)`` rows (the caller scales by ρ)."""
    n = max(dxh.shape[1], 1)  # H = 0 (as torch.nn, cells take zero sizes): empty rows
    dot = torch.linalg.vecdot(dxh, xhat).unsqueeze(1)
    return torch.addcmul(
        dxh.sub(dxh.sum(1, keepdim=True), alpha=1.0 / n), xhat, dot, value=-1.0 / n
    )


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


def _input_gemms(x: Tensor, w_ih: Tensor, dp: Tensor) -> tuple[Tensor, Tensor]:
    """``(dX, dW_ih)`` from ``dP = ∂L/∂(X W_ihᵀ)`` (T, B, N): two GEMMs over all rows."""
    T, B, N = dp.shape
    rows = dp.view(T * B, N)
    return (rows @ w_ih).view(T, B, -1), rows.t() @ x.reshape(T * B, -1)


def _state_buffer(s0: Tensor, T: int, reverse: bool) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``(buf (T+1, B, H), its rows)`` in the classic layout: forward, ``buf[0] = s0`` and
    step t writes ``buf[t+1]``; reverse, ``buf[T] = s0`` and step t writes ``buf[t]``."""
    buf = s0.new_empty((T + 1, *s0.shape))
    buf[T if reverse else 0] = s0
    return buf, buf.unbind(0)


def _outputs(hbuf: Tensor, mask: Tensor | None, reverse: bool) -> Tensor:
    """``y`` (T, B, H): the state after each step (a view of ``hbuf``), 0 at padding."""
    y = hbuf[:-1] if reverse else hbuf[1:]
    return y if mask is None else y * mask


# ------------------------------------------------------------------ LayerNorm LSTM
def _recurrent_rows(h: Tensor, hm: Tensor | None) -> Tensor:
    """What the recurrent product reads: ``h ⊙ m`` under recurrent dropout, else ``h``."""
    return h if hm is None else h * hm


def _lstm_forward(x, state, params, mask, reverse, save, hm=None):
    w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c = params
    h, c = state
    T, H = x.shape[0], h.shape[1]
    xw, xhat, rstd_in = _project(x, w_ih, g_ih, LNLSTM.projection_bias(b_ih, b_hh, H))
    hbuf, hb_ = _state_buffer(h, T, reverse)
    cbuf, cb_ = _state_buffer(c, T, reverse)
    tnbuf = x.new_empty(T, *h.shape) if save else None
    tnb_ = tnbuf.unbind(0) if save else None
    qs, rs, mcs, rcs = [], [], [], []
    w_t = w_hh.t()
    # per-step views made once (a Python-side slice per step costs as much as a small op)
    a_, i_, f_, g_, o_ = (
        v.unbind(0)
        for v in (xw, xw[..., :H], xw[..., H : 2 * H], xw[..., 2 * H : 3 * H], xw[..., 3 * H :])
    )
    ifo_ = xw[..., : 2 * H].unbind(0)
    m_ = None if mask is None else mask.unbind(0)
    for t in range(T - 1, -1, -1) if reverse else range(T):
        q, _, r = _ln(torch.mm(_recurrent_rows(h, hm), w_t))
        a_[t].addcmul_(q, g_hh)  # the gates overwrite xw[t] (kept for the backward)
        ifo_[t].sigmoid_()
        g_[t].tanh_()
        o_[t].sigmoid_()
        cur = t if reverse else t + 1  # the state buffers' row written by step t
        if m_ is None:
            c_new = torch.mul(f_[t], c, out=cb_[cur]).addcmul_(i_[t], g_[t])
        else:
            c_new = (f_[t] * c).addcmul_(i_[t], g_[t])
        tn, mc, rc = _ln(c_new, g_c, b_c)
        tn = tn.tanh_() if tnb_ is None else torch.tanh(tn, out=tnb_[t])
        if m_ is None:
            h = torch.mul(o_[t], tn, out=hb_[cur])
            c = c_new
        else:
            h = torch.where(m_[t], o_[t] * tn, h, out=hb_[cur])
            c = torch.where(m_[t], c_new, c, out=cb_[cur])
        if save:
            qs.append(q)
            rs.append(r)
            mcs.append(mc)
            rcs.append(rc)
    y, final = _outputs(hbuf, mask, reverse), (h.clone(), c.clone())
    if not save:
        return y, final, ()
    order = [_time_order(v, reverse) for v in (qs, rs, mcs, rcs)]
    return y, final, (xhat, rstd_in, xw, hbuf, cbuf, *order, tnbuf)


def _lstm_backward(x, params, mask, reverse, saved, gy, gstate, hm=None):
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
    k_n = torch.mul(tn, tn).neg_().add_(1).mul_(o)  # dn = dh ⊙ k_n
    k_a = torch.empty_like(gates)  # da = [dc, dc, dc, dh] ⊙ k_a
    torch.addcmul(i, i, i, value=-1, out=k_a[..., :H]).mul_(g)
    torch.addcmul(f, f, f, value=-1, out=k_a[..., H : 2 * H]).mul_(c_prev)
    torch.mul(g, g, out=k_a[..., 2 * H : 3 * H]).neg_().add_(1).mul_(i)
    torch.addcmul(o, o, o, value=-1, out=k_a[..., 3 * H :]).mul_(tn)
    if mask is not None:
        k_n.mul_(mask)
        k_a.mul_(mask)
        gy = gy * mask
    chat = torch.sub(c_cur, mean_c).mul_(rstd_c)
    # per step, on cache-resident rows: dq (scaled by ρ) and the input-side LN backward dP
    # go to buffers for the weight GEMMs after the loop; the gain/bias sums accumulate
    dqbuf, dpbuf, dhbuf = torch.empty_like(gates), torch.empty_like(gates), torch.empty_like(tn)
    acc_ih, acc_hh = gates.new_zeros(B, N), gates.new_zeros(B, N)
    acc_b = None if b_ih is None and b_hh is None else gates.new_zeros(B, N)
    kc_, ka_, ch_, qh_, rc_, r_, f_, gy_, xh_, ri_, dq_, dp_, dh_ = (
        v.unbind(0)
        for v in (k_n * g_c, k_a, chat, qhat, rstd_c, rstd, f, gy, xhat, rstd_in)
        + (dqbuf, dpbuf, dhbuf)
    )
    m_ = None if mask is None else mask.unbind(0)
    dh, dc = gstate[0].clone(), gstate[1].clone()
    w = w_hh
    for t in range(T) if reverse else range(T - 1, -1, -1):
        dh = torch.add(dh, gy_[t], out=dh_[t])
        dc = torch.addcmul(dc, _ln_back_step(dh * kc_[t], ch_[t]), rc_[t])
        da = torch.cat((dc, dc, dc, dh), 1).mul_(ka_[t])  # ∂L/∂a_t, a = xw + LN(q)·g_hh + b_hh
        dq = torch.mul(_ln_back_step(da * g_hh, qh_[t]), r_[t], out=dq_[t])  # ∂L/∂q_t
        dh_new = torch.mm(dq, w)
        if hm is not None:  # the product read h ⊙ m
            dh_new.mul_(hm)
        torch.mul(_ln_back_step(da * g_ih, xh_[t]), ri_[t], out=dp_[t])  # ∂L/∂(x_t W_ihᵀ)
        acc_ih.addcmul_(da, xh_[t])
        acc_hh.addcmul_(da, qh_[t])
        if acc_b is not None:
            acc_b.add_(da)
        dc_new = dc * f_[t]
        if m_ is not None:
            dh_new = torch.where(m_[t], dh_new, dh)
            dc_new = torch.where(m_[t], dc_new, dc)  # dc gained 0 here (masked k_c)
        dh, dc = dh_new, dc_new
    dn = dhbuf.mul_(k_n)
    dx, dw_ih = _input_gemms(x, w_ih, dpbuf)
    db = None if acc_b is None else acc_b.sum(0)
    dparams = (
        dw_ih,
        dqbuf.view(T * B, N).t() @ _recurrent_rows(h_prev, hm).reshape(T * B, H),
        None if b_ih is None else db,
        None if b_hh is None else db,
        acc_ih.sum(0),
        acc_hh.sum(0),
        _sum_rows(dn * chat),
        None if b_c is None else _sum_rows(dn),
    )
    return dx, (dh, dc), dparams


# ------------------------------------------------------------------ LayerNorm GRU
def _gru_forward(x, state, params, mask, reverse, save, hm=None):
    w_ih, w_hh, b_ih, b_hh, g_ih, g_hh = params
    (h,) = state
    T, H = x.shape[0], h.shape[1]
    # b_hn stays inside r ⊙ (hw_n + b_hn); the rest of b_hh joins the projection's bias
    xw, xhat, rstd_in = _project(x, w_ih, g_ih, LNGRU.projection_bias(b_ih, b_hh, H))
    b_hn = None if b_hh is None else b_hh[2 * H :]
    g_rz, g_n = g_hh[: 2 * H], g_hh[2 * H :]
    hbuf, hb_ = _state_buffer(h, T, reverse)
    qs, rs, hns = [], [], []
    w_t = w_hh.t()
    # the gates r, z, n overwrite xw (kept for the backward); per-step views made once
    rz_, r_, z_, n_ = (
        v.unbind(0) for v in (xw[..., : 2 * H], xw[..., :H], xw[..., H : 2 * H], xw[..., 2 * H :])
    )
    m_ = None if mask is None else mask.unbind(0)
    for t in range(T - 1, -1, -1) if reverse else range(T):
        q, _, r = _ln(torch.mm(_recurrent_rows(h, hm), w_t))
        rz_[t].addcmul_(q[:, : 2 * H], g_rz).sigmoid_()
        q_n = q[:, 2 * H :]
        hn = q_n * g_n if b_hn is None else torch.addcmul(b_hn, q_n, g_n)
        n = n_[t].addcmul_(r_[t], hn).tanh_()
        cur = t if reverse else t + 1  # the state buffer's row written by step t
        if m_ is None:
            h = torch.addcmul(n, z_[t], h - n, out=hb_[cur])
        else:
            h = torch.where(m_[t], torch.addcmul(n, z_[t], h - n), h, out=hb_[cur])
        if save:
            qs.append(q)
            rs.append(r)
            hns.append(hn)
    y, final = _outputs(hbuf, mask, reverse), (h.clone(),)
    if not save:
        return y, final, ()
    order = [_time_order(v, reverse) for v in (qs, rs, hns)]
    return y, final, (xhat, rstd_in, xw, hbuf, *order)


def _gru_backward(x, params, mask, reverse, saved, gy, gstate, hm=None):
    w_ih, w_hh, b_ih, b_hh, g_ih, g_hh = params
    xhat, rstd_in, gates, hbuf, qhat, rstd, hn = saved
    T, B, N = gates.shape
    H = N // 3
    r, z, n = gates.chunk(3, 2)
    h_prev = hbuf[1:] if reverse else hbuf[:-1]
    k_n = torch.mul(n, n).neg_().add_(1).mul_(1 - z)  # dn' = dh ⊙ k_n
    k_hw = torch.empty_like(gates)  # dhw = S ⊙ k_hw, S = [dn', dh, dn']
    torch.addcmul(r, r, r, value=-1, out=k_hw[..., :H]).mul_(hn)
    torch.addcmul(z, z, z, value=-1, out=k_hw[..., H : 2 * H]).mul_(h_prev - n)
    k_hw[..., 2 * H :] = r
    if mask is not None:
        k_n.mul_(mask)
        k_hw.mul_(mask)
        gy = gy * mask
    dqbuf, dpbuf = torch.empty_like(gates), torch.empty_like(gates)
    acc_ih, acc_hh = gates.new_zeros(B, N), gates.new_zeros(B, N)
    acc_bih = None if b_ih is None else gates.new_zeros(B, N)
    acc_bhh = None if b_hh is None else gates.new_zeros(B, N)
    kn_, kh_, qh_, r_, z_, gy_, xh_, ri_, dq_, dp_ = (
        v.unbind(0) for v in (k_n, k_hw, qhat, rstd, z, gy, xhat, rstd_in, dqbuf, dpbuf)
    )
    m_ = None if mask is None else mask.unbind(0)
    dh = gstate[0].clone()
    w = w_hh
    for t in range(T) if reverse else range(T - 1, -1, -1):
        dh = dh + gy_[t]
        dn = dh * kn_[t]
        dhw = torch.cat((dn, dh, dn), 1).mul_(kh_[t])  # ∂L/∂(LN(q)·g_hh + b_hh)
        dxw = torch.cat((dhw[:, : 2 * H], dn), 1)  # ∂L/∂xw: n is outside r ⊙ (·)
        dq = torch.mul(_ln_back_step(dhw * g_hh, qh_[t]), r_[t], out=dq_[t])  # ∂L/∂q_t
        dh_rec = torch.mm(dq, w)  # the recurrent path (read h ⊙ m); dh ⊙ z read plain h
        dh_new = torch.addcmul(dh_rec if hm is None else dh_rec.mul_(hm), dh, z_[t])
        torch.mul(_ln_back_step(dxw * g_ih, xh_[t]), ri_[t], out=dp_[t])  # ∂L/∂(x_t W_ihᵀ)
        acc_ih.addcmul_(dxw, xh_[t])
        acc_hh.addcmul_(dhw, qh_[t])
        if acc_bih is not None:
            acc_bih.add_(dxw)
        if acc_bhh is not None:
            acc_bhh.add_(dhw)
        if m_ is not None:
            dh_new = torch.where(m_[t], dh_new, dh)
        dh = dh_new
    dx, dw_ih = _input_gemms(x, w_ih, dpbuf)
    dparams = (
        dw_ih,
        dqbuf.view(T * B, N).t() @ _recurrent_rows(h_prev, hm).reshape(T * B, H),
        None if acc_bih is None else acc_bih.sum(0),
        None if acc_bhh is None else acc_bhh.sum(0),
        acc_ih.sum(0),
        acc_hh.sum(0),
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

    def covers_h_mask(self, spec: CellSpec) -> bool:
        """Recurrent dropout (``h_mask``) for both kinds (module docstring)."""
        return self.covers(spec)

    def forward(
        self,
        spec: CellSpec,
        x: Tensor,
        state: Sequence[Tensor],
        params: Sequence[Tensor | None],
        lengths: Tensor | None,
        reverse: bool,
        save: bool,
        h_mask: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor, ...]]:
        mask = _mask(lengths, x)
        return _STEPS[spec.name][0](x, tuple(state), tuple(params), mask, reverse, save, h_mask)

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
        h_mask: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor, ...], tuple[Tensor | None, ...]]:
        mask = _mask(lengths, x)
        fn = _STEPS[spec.name][1]
        return fn(x, tuple(params), mask, reverse, saved, gy, tuple(gstate), h_mask)


def _mask(lengths: Tensor | None, x: Tensor) -> Tensor | None:
    m = step_mask(lengths, x.shape[0], x.device)
    return None if m is None else m.unsqueeze(-1)  # (T, B, 1)


#: the LayerNorm cells' fused kernel (registered by :mod:`seqlab.engine`)
KERNEL = LayerNormKernel()
