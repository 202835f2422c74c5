"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"), as cell descriptions.

Their gates read only the input, never ``h``, so one step is the linear recurrence
``h_t = a_t ⊙ h_{t−1} + b_t`` with ``a_t, b_t`` computed from ``x_t`` alone. The only
parameters are the input projection (no ``w_hh``, no ``b_hh``)::

    xw_t = x_t @ w_ihᵀ + b_ih                    w_ih (G·H, I), b_ih (G·H,)

minGRU (``"mingru"``, gates ``z, n``; G = 2)::

    [k, ĥ] = xw_t                                (H columns each)
    z   = σ(k)
    n   = g(ĥ)                                   the candidate (the paper's h̃)
    h_t = (1 − z) ⊙ h_{t−1} + z ⊙ n              a = 1 − z,  b = z ⊙ n

minLSTM (``"minlstm"``, gates ``f, i, n``; G = 3), with the normalised gates of the paper's
time-independent version::

    [k_f, k_i, ĥ] = xw_t
    f, i = σ(k_f), σ(k_i)
    f'  = f / (f + i),  i' = i / (f + i)          (so f' + i' = 1)
    n   = g(ĥ)
    h_t = f' ⊙ h_{t−1} + i' ⊙ n                  a = f',  b = i' ⊙ n

The candidate goes through the paper's ``g`` (its log-space version), here in both
evaluation modes, so that they compute the same function::

    g(ĥ) = ĥ + 0.5   if ĥ ≥ 0
           σ(ĥ)      otherwise

``g`` is continuous, increasing and positive, which makes every ``b_t > 0``: the parallel
scan (:mod:`seqlab.engine.minimal`) sums the ``b`` terms in log space. The initial state
``h_0`` may have any sign (it is not passed through ``g``); it enters the scan as the
separate term ``exp(A_t) ⊙ h_0``. In log space (``softplus(u) = log(1 + eᵘ)``)::

    minGRU:  log a = −softplus(k),   log z = k + log a
    minLSTM: d = softplus(−k_f) − softplus(−k_i)
             log f' = −softplus(d),  log i' = d + log f'
    log g(ĥ) = log(ĥ + 0.5) if ĥ ≥ 0 else −softplus(−ĥ)

Traced records: minGRU ``(z, n, h)``, minLSTM ``(f, i, n, h)`` with ``f, i`` the
normalised ``f', i'``. ``forget_bias`` sets the minLSTM's ``k_f`` bias block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from seqlab.functional.spec import CellSpec, Param, register

#: an input projection only: w_ih (G·H, I) and b_ih (G·H,)
MINIMAL_PARAMS = (
    Param("w_ih", "weight_ih", "G·H", "I", "input"),
    Param("b_ih", "bias_ih", "G·H", None, "bias", bias=True),
)


def g(u: Tensor) -> Tensor:
    """The paper's positive candidate map: ``u + 0.5`` for ``u ≥ 0``, else ``σ(u)``."""
    return torch.where(u >= 0, u + 0.5, torch.sigmoid(u))


def log_g(u: Tensor) -> Tensor:
    """``log g(u)``, not via ``g``: ``log(u + 0.5)`` for ``u ≥ 0``, else ``−softplus(−u)``."""
    return torch.where(u >= 0, torch.log(u.clamp(min=0) + 0.5), -F.softplus(-u))


def dg(u: Tensor) -> Tensor:
    """``g'(u)``: 1 for ``u ≥ 0``, else ``σ(u)(1 − σ(u))`` (one-sided at the kink ``u = 0``)."""
    s = torch.sigmoid(u)
    return torch.where(u >= 0, torch.ones_like(u), s * (1 - s))


def log_coefficients(spec_name: str, xw: Tensor) -> tuple[Tensor, Tensor]:
    """``(log a, log b)`` of ``h_t = a_t ⊙ h_{t−1} + b_t`` from the projection ``xw``."""
    if spec_name == "mingru":
        k, u = xw.chunk(2, dim=-1)
        log_a = -F.softplus(k)
        return log_a, k + log_a + log_g(u)
    k_f, k_i, u = xw.chunk(3, dim=-1)
    d = F.softplus(-k_f) - F.softplus(-k_i)
    log_a = -F.softplus(d)
    return log_a, d + log_a + log_g(u)


def _mingru_step(xw, state, p):
    k, u = xw.chunk(2, dim=-1)
    z, n = torch.sigmoid(k), g(u)
    h = (1 - z) * state[0] + z * n
    return (h,), (z, n, h)


def _minlstm_step(xw, state, p):
    k_f, k_i, u = xw.chunk(3, dim=-1)
    f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
    f_n, i_n = f / (f + i), i / (f + i)
    n = g(u)
    h = f_n * state[0] + i_n * n
    return (h,), (f_n, i_n, n, h)


MINGRU = register(
    CellSpec(
        "mingru",
        gates=("z", "n"),
        state=("h",),
        step=_mingru_step,
        trace=("z", "n", "h"),
        params=MINIMAL_PARAMS,
        choice="mingru",
        doc="minGRU: z = σ(k), n = g(ĥ); h' = (1 − z) ⊙ h + z ⊙ n (gates read x only)",
    )
)
MINLSTM = register(
    CellSpec(
        "minlstm",
        gates=("f", "i", "n"),
        state=("h",),
        step=_minlstm_step,
        trace=("f", "i", "n", "h"),
        params=MINIMAL_PARAMS,
        choice="minlstm",
        doc="minLSTM: f' = f/(f+i), i' = i/(f+i), n = g(ĥ); h' = f' ⊙ h + i' ⊙ n",
    )
)
