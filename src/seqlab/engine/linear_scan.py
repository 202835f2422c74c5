"""Solvers of the elementwise linear recurrence ``h_t = a_t ⊙ h_{t−1} + b_t`` over time.

All take time-major tensors ``(T, ...)`` and an initial state ``h0`` of the trailing shape,
and return every ``h_t`` (``(T, ...)``, ``h_t`` after step ``t``).

Parallel scan in log space (Feng et al. 2024, §3.3 / Heinsen 2023), for ``a_t > 0``: with
``A_t = Σ_{s≤t} log a_s`` (a cumulative sum),

    h_t = exp(A_t) ⊙ h_0 + Σ_{s≤t} exp(A_t − A_s) ⊙ b_s
        = exp(A_t) ⊙ h_0 + exp(A_t + LCSE_t(log b − A))

where ``LCSE_t(v) = log Σ_{s≤t} exp(v_s)`` is ``torch.logcumsumexp``, which is stable for
any magnitude of ``v`` (no ``exp`` of a large number is formed: products of many ``a``
never underflow before they are combined). Positive ``b`` enter by their logarithm
(``log b = −inf`` for ``b = 0``); the ``h_0`` term is kept apart so a ``h_0`` of either sign
is exact. Signed ``b`` (the backward's incoming gradients) are split as
``b = b⁺ − b⁻`` and scanned twice (:func:`signed_log_scan`).

Sequential loop (:func:`loop`): ``h_t = a_t ⊙ h_{t−1} + b_t`` one step at a time in
Python, the fallback of the sequential method where the native engine is not built (there
the whole minGRU/minLSTM step is one fused native op, ``csrc/minimal.h``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["CHUNK", "log_scan", "signed_log_scan", "loop"]


#: steps per chunk of the log-space scan (see :func:`log_scan`)
CHUNK = 256


def log_scan(log_a: Tensor, log_b: Tensor, h0: Tensor, chunk: int | None = None) -> Tensor:
    """``h_t = a_t ⊙ h_{t−1} + b_t`` for ``a = exp(log_a)``, ``b = exp(log_b) ≥ 0``, any ``h0``.

    Chunked: the scan runs over ``chunk`` steps at a time (``CHUNK`` by default), each chunk
    starting from the last state of the one before; the cumulative sums then stay within a
    chunk, so their rounding (relative to ``|A_t|``) does not grow with ``T``.
    """
    return _chunked(_log_scan, log_a, log_b, h0, chunk)


def signed_log_scan(log_a: Tensor, b: Tensor, h0: Tensor, chunk: int | None = None) -> Tensor:
    """:func:`log_scan` for ``b`` of either sign: ``b = b⁺ − b⁻``, each scanned in log space."""
    return _chunked(_signed_log_scan, log_a, b, h0, chunk)


def _chunked(scan, log_a: Tensor, b: Tensor, h0: Tensor, chunk: int | None) -> Tensor:
    T, C = log_a.shape[0], chunk or CHUNK
    if T <= C:
        return scan(log_a, b, h0)
    out = torch.empty_like(b)
    h = h0
    for s in range(0, T, C):
        part = out[s : s + C]
        part.copy_(scan(log_a[s : s + C], b[s : s + C], h))
        h = part[-1]
    return out


def _log_scan(log_a: Tensor, log_b: Tensor, h0: Tensor) -> Tensor:
    A = torch.cumsum(log_a, 0)
    L = torch.logcumsumexp(log_b - A, 0)
    return torch.exp(A + L).addcmul_(torch.exp(A), h0)


def _signed_log_scan(log_a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    A = torch.cumsum(log_a, 0)
    pos = torch.logcumsumexp(torch.log(b.clamp(min=0)) - A, 0)
    neg = torch.logcumsumexp(torch.log((-b).clamp(min=0)) - A, 0)
    return torch.exp(A + pos).sub_(torch.exp(A + neg)).addcmul_(torch.exp(A), h0)


def loop(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """``h_t = a_t ⊙ h_{t−1} + b_t`` one step at a time (a Python loop of ``addcmul``)."""
    out = torch.empty_like(b)
    h = h0
    for t in range(a.shape[0]):
        h = torch.addcmul(b[t], a[t], h, out=out[t])
    return out
