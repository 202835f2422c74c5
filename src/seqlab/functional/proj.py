"""The LSTM with a projection (torch.nn's ``proj_size``), on the reference loop.

Sak et al. 2014 (LSTMP): the recurrent and output state is a projection of the cell output,
``h' = (o ⊙ tanh(c')) @ w_hrᵀ`` with ``w_hr`` (P, H), so ``h`` has P < H units while ``c``
keeps H. The gates are the LSTM's (:func:`seqlab.functional.cells.lstm_gates`) with
``w_hh`` (4·H, P). Shapes: ``x`` (T, B, I); ``h0`` (B, P); ``c0`` (B, H); outputs
(T, B, P). There is no fast kernel: the time loop is :func:`seqlab.functional.scan`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqlab.functional.cells import linear, lstm_gates
from seqlab.functional.scan import scan


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
