"""The LSTM with a projection (torch.nn's ``proj_size``): the reference loop and its description.

Sak et al. 2014 (LSTMP): the recurrent and output state is a projection of the cell output,
``h' = (o ⊙ tanh(c')) @ w_hrᵀ`` with ``w_hr`` (P, H), so ``h`` has P < H units while ``c``
keeps H. The gates are the LSTM's (:func:`seqlab.functional.cells.lstm_gates`) with
``w_hh`` (4·H, P). Shapes: ``x`` (T, B, I); ``h0`` (B, P); ``c0`` (B, H); outputs
(T, B, P). Here is the reference loop (:func:`seqlab.functional.scan`), the oracle of the
engine's kernels (:mod:`seqlab.engine.proj`), and :data:`LSTM_PROJ`, the description those
kernels and the engine's double backward read (not a registered cell kind: its ``h`` and
``c`` differ in width, which the registry's ``(B, H)`` states cannot say).
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqlab.functional.cells import LSTMState, linear, lstm_gates
from seqlab.functional.scan import scan
from seqlab.functional.spec import CLASSIC, CellSpec, Param, Params


def _proj_step(xw: Tensor, state: tuple[Tensor, ...], p: Params):
    h, c = state
    i, f, g, o = lstm_gates(xw, h, p["w_hh"], p.get("b_hh"))
    c = f * c + i * g
    m = o * torch.tanh(c)
    h = m @ p["w_hr"].t()
    return (h, c), (i, f, g, o, c, m, h)


#: the projected LSTM's description for :func:`seqlab.functional.scan.reference_run` and the
#: engine's kernels: parameters ``w_ih (4H, I), w_hh (4H, P), b_ih, b_hh (4H,), w_hr (P, H)``
#: (``Param`` shapes do not apply: only its names and order are read); state ``(h (B, P),
#: c (B, H))``
LSTM_PROJ = CellSpec(
    "lstm_proj",
    gates=("i", "f", "g", "o"),
    state=("h", "c"),
    step=_proj_step,
    trace=("i", "f", "g", "o", "c", "m", "h"),
    params=CLASSIC + (Param("w_hr", "weight_hr", "P", "H", "recurrent"),),
    state_type=LSTMState,
    doc="c' = f ⊙ c + i ⊙ g; m = o ⊙ tanh(c'); h' = m @ w_hrᵀ",
)


def lstm_proj_run(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    w_hr: Tensor,
    lengths: Tensor | None = None,
    reverse: bool = False,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One layer, one direction: ``(y (T, B, P), (h_T (B, P), c_T (B, H)))``.

    ``xw = x @ w_ihᵀ + b_ih`` for all steps at once; per step ``i, f, g, o`` from
    ``xw_t + h @ w_hhᵀ + b_hh``, ``c' = f ⊙ c + i ⊙ g``, ``h' = (o ⊙ tanh(c')) @ w_hrᵀ``.
    Lengths and ``reverse`` follow :func:`seqlab.functional.scan`.
    """

    def step(xw_t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, c = state
        i, f, g, o = lstm_gates(xw_t, h, w_hh, b_hh)
        c = f * c + i * g
        h = (o * torch.tanh(c)) @ w_hr.t()
        return h, (h, c)

    return scan(step, linear(x, w_ih, b_ih), (h0, c0), lengths, reverse)
