"""Weight initialisation schemes shared by cells and layers.

``"default"``: every weight and bias ~ U(−1/√H, 1/√H), as torch.nn does.
``"orthogonal"``: each H×H gate block of ``w_hh`` orthogonal (keeps the recurrent Jacobian
well conditioned at the start, Saxe et al. 2014), each gate block of ``w_ih`` Xavier-uniform,
biases zero.
``forget_bias``: if given, the LSTM forget-gate slice of ``b_ih`` is set to it and that of
``b_hh`` to 0, so the total forget bias equals ``forget_bias`` (Jozefowicz et al. 2015
recommend 1.0: the cell starts out remembering).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

INIT_SCHEMES = ("default", "orthogonal")


def check_init(init: str) -> None:
    if init not in INIT_SCHEMES:
        raise ValueError(f"init: expected one of {INIT_SCHEMES}, got {init!r}")


@torch.no_grad()
def init_recurrent(
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    gates: int,
    init: str = "default",
    forget_bias: float | None = None,
) -> None:
    """Initialise one direction of one layer in place (layout of :mod:`seqlab.functional`)."""
    check_init(init)
    H = w_hh.shape[1]
    if init == "default":
        bound = 1.0 / math.sqrt(H) if H > 0 else 0.0
        for p in (w_ih, w_hh, b_ih, b_hh):
            if p is not None:
                nn.init.uniform_(p, -bound, bound)
    else:
        for k in range(gates):
            nn.init.orthogonal_(w_hh[k * H : (k + 1) * H])
            nn.init.xavier_uniform_(w_ih[k * H : (k + 1) * H])
        for p in (b_ih, b_hh):
            if p is not None:
                p.zero_()
    if forget_bias is not None:
        if gates != 4:
            raise ValueError("forget_bias: only LSTM cells have a forget gate")
        if b_ih is None or b_hh is None:
            raise ValueError("forget_bias: needs bias=True")
        b_ih[H : 2 * H].fill_(forget_bias)
        b_hh[H : 2 * H].zero_()
