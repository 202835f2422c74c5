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
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from seqlab.functional.spec import CLASSIC, SPECS, CellSpec

INIT_SCHEMES = ("default", "orthogonal")


def check_init(init: str) -> None:
    if init not in INIT_SCHEMES:
        raise ValueError(f"init: expected one of {INIT_SCHEMES}, got {init!r}")


@torch.no_grad()
def init_params(
    spec: CellSpec,
    params: Mapping[str, Tensor | None],
    hidden_size: int,
    init: str = "default",
    forget_bias: float | None = None,
) -> None:
    """Initialise one cell's (or one layer direction's) parameters in place, by role.

    Roles (:class:`seqlab.functional.Param`): ``input``/``recurrent``/``bias`` as in the
    module docstring (orthogonal/Xavier per gate block of H rows); ``diagonal`` (a vector
    of recurrent weights, e.g. IndRNN's ``u``): the default bound, or ones under
    ``"orthogonal"``; ``gain``: ones; ``shift`` (a normalisation's β): zeros;
    ``forget_bias`` needs a gate named ``f``.
    """
    check_init(init)
    H = hidden_size
    bound = 1.0 / math.sqrt(H) if H > 0 else 0.0
    for p in spec.params:
        t = params.get(p.name)
        if t is None:
            continue
        if p.role == "gain":
            t.fill_(1.0)
        elif p.role == "shift":
            t.zero_()
        elif init == "default":
            nn.init.uniform_(t, -bound, bound)
        elif p.role == "bias":
            t.zero_()
        elif p.role == "diagonal":
            t.fill_(1.0)
    if init == "orthogonal":  # block by block, recurrent before input (a fixed RNG order)
        matrices = [
            (nn.init.orthogonal_ if p.role == "recurrent" else nn.init.xavier_uniform_, t)
            for role in ("recurrent", "input")
            for p in spec.params
            if p.role == role and (t := params.get(p.name)) is not None and t.dim() == 2
        ]
        for k in range(max((t.shape[0] // H for _, t in matrices), default=0) if H else 0):
            for fill, t in matrices:
                if (k + 1) * H <= t.shape[0]:
                    fill(t[k * H : (k + 1) * H])
    if forget_bias is not None:
        if "f" not in spec.gates:
            raise ValueError("forget_bias: only LSTM cells have a forget gate")
        b_ih, b_hh = params.get("b_ih"), params.get("b_hh")
        if b_ih is None or (b_hh is None and "b_hh" in spec.param_names()):
            raise ValueError("forget_bias: needs bias=True")
        f = spec.gate_slice("f", H)
        b_ih[f].fill_(forget_bias)
        if b_hh is not None:  # kinds without b_hh (minLSTM) have the whole bias in b_ih
            b_hh[f].zero_()


def init_recurrent(
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    gates: int,
    init: str = "default",
    forget_bias: float | None = None,
) -> None:
    """:func:`init_params` for the four classic tensors of a ``gates``-gate cell."""
    spec = next(s for s in SPECS.values() if s.params == CLASSIC and len(s.gates) == gates)
    params = {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}
    init_params(spec, params, w_hh.shape[1], init, forget_bias)
