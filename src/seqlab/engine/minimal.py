"""The minGRU/minLSTM kernel: a parallel scan over time, or a sequential loop.

Equations and parameters: :mod:`seqlab.functional.minimal`. One layer, one direction is

1. ``xw = x @ w_ihᵀ (+ b_ih)`` for all steps (one GEMM for all gates; the native op adds
   ``b_ih`` itself, saving a broadcast pass); ``reverse`` reverses ``xw`` within each row's
   valid prefix (as the reference loop does);
2. ``h_t = a_t ⊙ h_{t−1} + b_t`` with ``a_t, b_t`` pointwise from ``xw_t``; padded steps
   get ``a = 1, b = 0`` (they keep the state); by one of the methods (:data:`METHODS`):

   * ``"scan"``: where the native engine is built (CPU float32/float64), one fused op for
     the coefficients and a chunked scan (``csrc/minimal.h``: K time chunks, each chunk's
     aggregate ``(Π a, h from 0)``, the carries between chunks, then every chunk from its
     carry; threads split chunks × columns; K = 1 is the sequential loop and is what the op
     picks unless more than 2 threads share too few B·H columns); elsewhere ``"log-scan"``;
   * ``"log-scan"``: ``(log a, log b)`` by torch ops, then the log-space parallel scan
     (:func:`.linear_scan.log_scan`: cumulative sums of ``log a`` and logcumsumexp), on any
     device (on CUDA ``logcumsumexp`` is a parallel scan);
   * ``"sequential"``: one step at a time; the native op with one chunk, else torch ops and
     a Python loop (:func:`.linear_scan.loop`);
   * ``"auto"`` (default): ``"scan"``.

3. outputs ``y_t = h_t`` on valid steps and 0 on padded ones; the final state is the last
   ``h`` (= the state after each row's last valid step).

Backward (hand-derived; ``ĝ_t = ∂L/∂h_t`` in total, ``c_t = ∂L/∂y_t`` on valid steps)::

    ĝ_t    = c_t + a_{t+1} ⊙ ĝ_{t+1},   ĝ_{T−1} = c_{T−1} + ∂L/∂h_T
    ∂L/∂h_0 = a_0 ⊙ ĝ_0

a linear recurrence backwards in time, solved by the forward's method (the native op scans
it in reverse with the same chunks; the log-space scan splits the signed ``c`` into its
positive and negative parts). Then, with ``δ_t = ĝ_t ⊙ (n_t − h_{t−1})``::

    minGRU:   ∂k = δ ⊙ z(1 − z),          ∂ĥ = ĝ ⊙ z ⊙ g'(ĥ)
    minLSTM:  ∂d = δ ⊙ f'i',  ∂k_f = −∂d ⊙ σ(−k_f),  ∂k_i = ∂d ⊙ σ(−k_i),  ∂ĥ = ĝ ⊙ i' ⊙ g'(ĥ)

(zero on padded steps), ``dX = dXW W_ih``, ``dW_ih = dXWᵀ X``, ``db_ih = Σ dXW`` (the
native op sums it in the same pass).

The kernel is registered with :func:`seqlab.engine.register_kernel` under the name
``"minimal"``. No other kernel covers these kinds, so :func:`seqlab.engine.run` uses it on
every backend (native, fused, torch) except ``"reference"`` (the plain step loop);
:func:`evaluation` picks the method for the calls made inside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import Tensor

from seqlab.engine import native
from seqlab.engine.linear_scan import log_scan, loop, signed_log_scan
from seqlab.functional.minimal import MINGRU, MINLSTM, dg, g, log_coefficients
from seqlab.functional.scan import reverse_padded, step_mask
from seqlab.functional.spec import CellSpec

__all__ = ["METHODS", "MinimalKernel", "KERNEL", "evaluation", "current_method", "resolve"]

METHODS = ("auto", "scan", "sequential", "log-scan")
_METHOD: ContextVar[str] = ContextVar("seqlab_minimal_method", default="auto")
_CHUNKS: ContextVar[int] = ContextVar("seqlab_minimal_chunks", default=0)
# how a forward ran, saved for its backward: torch log-space scan, Python loop, native
# sequential op, native chunked scan
_SCAN, _LOOP, _NATIVE, _NATIVE_SCAN = 0, 1, 2, 3


@contextmanager
def evaluation(method: str, chunks: int | None = None) -> Iterator[None]:
    """Run minGRU/minLSTM layers inside the block by ``method`` (see :data:`METHODS`).

    All compute the same function. ``"scan"``: the parallel scan over time: where the native
    engine is built, its chunked scan op (``chunks`` time chunks; ``None``: the op picks,
    1 unless the B·H columns are too few for more than 2 threads), else the log-space scan
    by torch ops; ``"sequential"``: the step-by-step loop (the native op with one chunk, else
    a Python loop); ``"log-scan"``: the log-space scan by torch ops on any device (what
    ``"scan"`` runs on CUDA); ``"auto"`` (the default): ``"scan"`` with the op's choice of
    chunks. A backward runs by the method its forward ran by.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if chunks is not None and (not isinstance(chunks, int) or chunks < 1):
        raise ValueError(f"chunks: expected a positive int or None, got {chunks!r}")
    token = _METHOD.set(method)
    token_chunks = _CHUNKS.set(chunks or 0)
    try:
        yield
    finally:
        _CHUNKS.reset(token_chunks)
        _METHOD.reset(token)


def current_method() -> str:
    """The method minGRU/minLSTM layers use now (``"auto"`` unless inside :func:`evaluation`)."""
    return _METHOD.get()


def _native_ops(x: Tensor):
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return None
    ops = native.load()
    return ops if ops is not None and hasattr(ops, "minimal_forward") else None


def resolve(x: Tensor) -> int:
    """How a call on ``x`` runs now: ``_SCAN`` (torch ops), ``_LOOP`` (Python), ``_NATIVE``
    (the native op, one chunk) or ``_NATIVE_SCAN`` (the native op, chunked)."""
    method = _METHOD.get()
    if method == "log-scan":
        return _SCAN
    if _native_ops(x) is not None:
        return _NATIVE if method == "sequential" else _NATIVE_SCAN
    return _LOOP if method == "sequential" else _SCAN


def _chunks(how: int) -> int:
    """The native op's ``chunks`` argument (0: its own choice)."""
    return 1 if how == _NATIVE else _CHUNKS.get()


class MinimalKernel:
    """The :class:`~seqlab.engine.function.Kernel` of ``"mingru"`` and ``"minlstm"``.

    params ``(w_ih (G·H, I), b_ih (G·H,) | None)``, state ``(h0,)``; ``saved`` is
    ``(xw, h, h0, how)``: the projection and states in the order of processing, and which
    way the forward ran (0-d: scan, Python loop, native).
    """

    name = "minimal"
    kinds = (MINGRU.name, MINLSTM.name)

    def covers(self, spec: CellSpec) -> bool:
        return spec.name in self.kinds

    def forward(self, spec, x, state, params, lengths, reverse, save):
        w_ih, b_ih = params
        T = x.shape[0]
        how = resolve(x)
        native_op = how in (_NATIVE, _NATIVE_SCAN)
        # the native op adds the bias itself (no broadcast pass over xw), and its projection
        # goes to a reused buffer (a fresh one this big is page-faulted on every call)
        ops = _native_ops(x) if native_op else None
        xw = ops.minimal_project(x, w_ih) if ops is not None else F.linear(x, w_ih, b_ih)
        if reverse:
            xw = reverse_padded(xw, lengths)
        h0 = state[0]
        mask = _mask(lengths, T, x)
        if native_op:
            kind = self.kinds.index(spec.name)
            chunks = _chunks(how)
            h = ops.minimal_forward(kind, xw, b_ih, h0, lengths, chunks)
        else:
            chunks = 1
            log_a, log_b = log_coefficients(spec.name, xw)
            if mask is not None:
                log_a = log_a.masked_fill(~mask, 0.0)
                log_b = log_b.masked_fill(~mask, float("-inf"))
            scan = how == _SCAN
            h = log_scan(log_a, log_b, h0) if scan else loop(log_a.exp(), log_b.exp(), h0)
        final = h[-1].clone()
        y = h if mask is None else h * mask
        if reverse:
            y = reverse_padded(y, lengths)
        saved = (xw, h, h0, torch.tensor([how, chunks])) if save else ()
        return y, (final,), saved

    def backward(self, spec, x, params, lengths, reverse, saved, gy, gstate):
        w_ih, b_ih = params
        xw, h, h0, how_chunks = saved
        how, chunks = (int(v) for v in how_chunks)
        T, B, I = x.shape  # noqa: E741
        if reverse:
            gy = reverse_padded(gy, lengths)
        db_ih = None
        if how in (_NATIVE, _NATIVE_SCAN):
            # gy is read in place (any strides; padded steps are ignored by the op)
            kind = self.kinds.index(spec.name)
            dxw, dh0, db = _native_ops(x).minimal_backward(
                kind, xw, b_ih, h, h0, gy, gstate[0].contiguous(), lengths, chunks
            )
            if b_ih is not None:
                db_ih = db.sum((0, 1))
        else:
            mask = _mask(lengths, T, x)
            c = gy * mask if mask is not None else gy
            dxw, dh0 = _pointwise_backward(spec, xw, h, h0, c, gstate[0], mask, how)
        if reverse:
            dxw = reverse_padded(dxw, lengths)
        rows = dxw.reshape(T * B, -1)
        dx = (rows @ w_ih).view(T, B, I)
        dw_ih = rows.T @ x.reshape(T * B, I)
        if b_ih is not None and db_ih is None:
            db_ih = rows.sum(0)
        return dx, (dh0,), (dw_ih, db_ih)


def _pointwise_backward(spec, xw, h, h0, c, ghn, mask, how):
    """``(dxw, dh0)`` by torch ops (the module docstring's equations); ĝ by ``how``."""
    if spec.name == MINGRU.name:
        k, u = xw.chunk(2, dim=-1)
        log_a = -F.softplus(k)
    else:
        k_f, k_i, u = xw.chunk(3, dim=-1)
        d = F.softplus(-k_f) - F.softplus(-k_i)
        log_a = -F.softplus(d)
    if mask is not None:
        log_a = log_a.masked_fill(~mask, 0.0)
    # ĝ_t = c_t + a_{t+1} ĝ_{t+1}: a recurrence on the time-flipped sequences
    log_alpha = torch.cat([log_a[1:], log_a.new_zeros((1,) + log_a.shape[1:])])
    if how == _SCAN:
        gh = signed_log_scan(log_alpha.flip(0), c.flip(0), ghn).flip(0)
    else:
        gh = loop(log_alpha.exp().flip(0), c.flip(0), ghn).flip(0)
    dh0 = log_a[0].exp() * gh[0]
    h_prev = torch.cat([h0.unsqueeze(0), h[:-1]])
    delta = gh * (g(u) - h_prev)
    if spec.name == MINGRU.name:
        z = torch.sigmoid(k)
        dxw = torch.cat([delta * z * torch.sigmoid(-k), gh * z * dg(u)], dim=-1)
    else:
        i_n = torch.sigmoid(d)  # i' (f' = σ(−d))
        dd = delta * torch.sigmoid(-d) * i_n
        dxw = torch.cat(
            [-dd * torch.sigmoid(-k_f), dd * torch.sigmoid(-k_i), gh * i_n * dg(u)], dim=-1
        )
    if mask is not None:
        dxw = dxw * mask
    return dxw, dh0


def _mask(lengths: Tensor | None, T: int, x: Tensor) -> Tensor | None:
    """``(T, B, 1)`` bool, True on valid steps (None without lengths)."""
    m = step_mask(lengths, T, x.device)
    return None if m is None else m.unsqueeze(-1)


KERNEL = MinimalKernel()
