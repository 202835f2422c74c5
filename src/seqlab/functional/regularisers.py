"""Recurrent regularisers: variational dropout on inputs and state, DropConnect on ``w_hh``.

Per layer and direction, one draw per forward call (so one mask per sequence, the same at
every step ``t``), with ``p`` the probability of dropping a unit:

==================  ============  ==========================================================
regulariser         mask          effect
==================  ============  ==========================================================
``input_dropout``   m_x (B, I)    the layer reads ``x_t ⊙ m_x`` (Gal & Ghahramani 2016)
``recurrent_        m_h (B, H)    the recurrent product reads ``h_{t−1} ⊙ m_h``; the state
dropout``                         itself is not masked (LSTM: ``c`` never; GRU: the
                                  ``z ⊙ h_{t−1}`` term reads the plain ``h_{t−1}``)
``weight_dropout``  M (G·H, H)    the step uses ``w_hh ⊙ M`` (DropConnect, Wan et al. 2013;
                                  AWD-LSTM's weight drop, Merity et al. 2017)
==================  ============  ==========================================================

Every mask is ``Bernoulli(1 − p) / (1 − p)`` (inverted scaling: ``E[m] = 1``, so evaluation
needs no rescaling); ``p = 1`` gives an all-zero mask, as ``torch.nn.functional.dropout``.

With ``m_h`` the steps of the classic cells read (``hm = h_{t−1} ⊙ m_h``):

* RNN:  ``h_t = φ(xw_t + hm @ w_hhᵀ + b_hh)``
* LSTM: ``[a_i a_f a_g a_o] = xw_t + hm @ w_hhᵀ + b_hh``; ``c_t``, ``h_t`` as usual
* GRU (reset after): ``[h_r h_z h_n] = hm @ w_hhᵀ + b_hh``; ``h_t = n + z ⊙ (h_{t−1} − n)``
* GRU (reset before): ``r, z`` from ``hm @ w_hrzᵀ``; ``n = tanh(x_n + (r ⊙ hm) @ w_hnᵀ + b_hn)``

A cell description's step applies ``m_h`` when its parameters mapping carries it under
:data:`H_MASK` (:func:`recurrent_input`); :attr:`CellSpec.h_mask` says the step does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor

#: the key under which a step finds the recurrent dropout mask in its parameters mapping
H_MASK = "h_mask"

#: the three regulariser arguments, in the order of :class:`DropoutMasks`
NAMES = ("input_dropout", "recurrent_dropout", "weight_dropout")


class DropoutMasks(NamedTuple):
    """The masks of one layer and direction (None: that regulariser is off).

    ``input`` (B, I), ``recurrent`` (B, H), ``weight`` (same shape as ``w_hh``); values
    0 or ``1/(1−p)``.
    """

    input: Tensor | None = None
    recurrent: Tensor | None = None
    weight: Tensor | None = None


def check_probability(name: str, p: object) -> float:
    """A drop probability in [0, 1] (as torch.nn's dropout); returns it as a float."""
    ok = isinstance(p, (int, float)) and not isinstance(p, bool)
    if not ok or not 0.0 <= float(p) <= 1.0:  # type: ignore[arg-type]
        raise ValueError(f"{name}: expected a probability in [0, 1], got {p!r}")
    return float(p)  # type: ignore[arg-type]


def dropout_mask(
    shape: tuple[int, ...],
    p: float,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``Bernoulli(1 − p) / (1 − p)`` of ``shape`` (zeros when ``p = 1``)."""
    if p >= 1.0:
        return torch.zeros(shape, dtype=dtype, device=device)
    # uniform < 1 − p in place: ~3× faster on CPU than bernoulli_ with a scalar p
    u = torch.rand(shape, dtype=dtype, device=device, generator=generator)
    return u.lt_(1.0 - p).mul_(1.0 / (1.0 - p))


def recurrent_input(h: Tensor, p: Mapping[str, Tensor | None]) -> Tensor:
    """``h ⊙ m_h`` if the parameters mapping carries a recurrent mask, else ``h``."""
    m = p.get(H_MASK)
    return h if m is None else h * m
