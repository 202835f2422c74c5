"""LayerNorm LSTM and LayerNorm GRU (Ba, Kiros & Hinton 2016, "Layer Normalization", §3.1).

Layer normalisation of a row vector ``a`` of ``N`` numbers with gain ``γ`` and shift ``β``::

    LN(a; γ, β) = γ ⊙ (a − μ) / √(σ² + ε) + β,   μ = mean(a),  σ² = mean((a − μ)²),  ε = 1e−5

(the biased variance, as ``torch.nn.functional.layer_norm``). Statistics are per batch row,
over all ``G·H`` gate pre-activations of a projection (or the ``H`` units of the cell state).

LayerNorm LSTM (``"lnlstm"``; the formulation of haste's ``LayerNormLSTM``: LN on the input
projection, on the recurrent projection and on the cell state)::

    xw_t = LN(x_t @ w_ihᵀ; g_ih) + b_ih                      (G·H = 4H, all steps at once)
    a_t  = xw_t + LN(h_{t−1} @ w_hhᵀ; g_hh) + b_hh          split into a_i, a_f, a_g, a_o
    i, f, o = σ(a_i), σ(a_f), σ(a_o);  g = tanh(a_g)
    c_t  = f ⊙ c_{t−1} + i ⊙ g
    h_t  = o ⊙ tanh(LN(c_t; g_c, b_c))

LayerNorm GRU (``"lngru"``; reset-after, torch.nn's bias layout)::

    xw_t = LN(x_t @ w_ihᵀ; g_ih) + b_ih                      (G·H = 3H)
    hw_t = LN(h_{t−1} @ w_hhᵀ; g_hh)
    r = σ(xw_r + hw_r + b_hr);  z = σ(xw_z + hw_z + b_hz)
    n = tanh(xw_n + r ⊙ (hw_n + b_hn))
    h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}

The state ``c_t`` carried by the LSTM is the raw cell (normalised only on its way to ``h``).
Gains start at 1, the cell-state shift ``b_c`` at 0. Without bias (``bias=False``) the
cells have no ``b_ih``, ``b_hh`` nor ``b_c``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from seqlab.functional.cells import LSTMState
from seqlab.functional.regularisers import recurrent_input
from seqlab.functional.spec import CLASSIC, CellSpec, Param, Params, register

#: ε of every layer normalisation in these cells (torch.nn.LayerNorm's default)
LN_EPS = 1e-5

LN_GAINS = (
    Param("g_ih", "ln_weight_ih", "G·H", None, "gain"),
    Param("g_hh", "ln_weight_hh", "G·H", None, "gain"),
)
LNLSTM_PARAMS = (
    CLASSIC
    + LN_GAINS
    + (
        Param("g_c", "ln_weight_c", "H", None, "gain"),
        Param("b_c", "ln_bias_c", "H", None, "shift", bias=True),
    )
)
LNGRU_PARAMS = CLASSIC + LN_GAINS


def layer_norm(a: Tensor, gain: Tensor, shift: Tensor | None = None) -> Tensor:
    """``LN(a; gain, shift)`` over the last dimension (see the module docstring)."""
    return F.layer_norm(a, a.shape[-1:], gain, shift, LN_EPS)


def project_ln(x: Tensor, p: Params) -> Tensor:
    """``xw = LN(x @ w_ihᵀ; g_ih) + b_ih`` for all steps at once."""
    xw = layer_norm(x @ p["w_ih"].T, p["g_ih"])
    b_ih = p.get("b_ih")
    return xw if b_ih is None else xw + b_ih


def _recurrent(h: Tensor, p: Params) -> Tensor:
    # recurrent dropout (if on) masks h before the product: LN(h ⊙ m_h @ w_hhᵀ; g_hh)
    return layer_norm(recurrent_input(h, p) @ p["w_hh"].T, p["g_hh"])


def _lnlstm_step(xw, state, p):
    h, c = state
    a = xw + _recurrent(h, p)
    b_hh = p.get("b_hh")
    if b_hh is not None:
        a = a + b_hh
    a_i, a_f, a_g, a_o = a.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
    c = f * c + i * g
    h = o * torch.tanh(layer_norm(c, p["g_c"], p.get("b_c")))
    return (h, c), (i, f, g, o, c, h)


def _lngru_step(xw, state, p):
    h = state[0]
    hw = _recurrent(h, p)
    b_hh = p.get("b_hh")
    if b_hh is not None:
        hw = hw + b_hh
    x_r, x_z, x_n = xw.chunk(3, dim=-1)
    h_r, h_z, h_n = hw.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    h = n + z * (h - n)  # = z ⊙ h + (1 − z) ⊙ n
    return (h,), (r, z, n, h)


LNLSTM = register(
    CellSpec(
        "lnlstm",
        gates=("i", "f", "g", "o"),
        state=("h", "c"),
        step=_lnlstm_step,
        trace=("i", "f", "g", "o", "c", "h"),
        params=LNLSTM_PARAMS,
        project=project_ln,
        choice="lnlstm",
        state_type=LSTMState,
        h_mask=True,
        doc="LayerNorm LSTM: a = LN(x W_ihᵀ) + LN(h W_hhᵀ) + b; h' = o ⊙ tanh(LN(c'))",
    )
)
LNGRU = register(
    CellSpec(
        "lngru",
        gates=("r", "z", "n"),
        state=("h",),
        step=_lngru_step,
        trace=("r", "z", "n", "h"),
        params=LNGRU_PARAMS,
        project=project_ln,
        choice="lngru",
        kept_bias=("n",),
        h_mask=True,
        doc="LayerNorm GRU: as the GRU on LN(x W_ihᵀ) and LN(h W_hhᵀ)",
    )
)
