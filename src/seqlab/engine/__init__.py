"""Recurrence engine: one layer, one direction, with a hand-derived BPTT.

Backends (all compute exactly what :func:`seqlab.functional.scan.reference_layer` computes):

============  ==========================================================================
``native``    C++ time loop (``csrc/recurrence.cpp``): a thread team over hidden units with
              per-chunk input projections and weight gradients, per-step GEMMs (AVX2 panel
              kernel or MKL), fused vectorised pointwise passes; built on first use and
              cached (see :mod:`.native`)
``fused``     the same algorithm as eager torch ops driven from Python (always available)
``reference`` the plain autograd reference loop (the oracle)
============  ==========================================================================

Choice: the ``backend`` argument, else ``SEQLAB_BACKEND``, else automatic (native when it
builds and covers the call — CPU, float32/float64 — otherwise fused). ``SEQLAB_NATIVE=0``
simulates a machine without a compiler. :func:`backends` reports what is in use and why.

Forward equations per cell kind are in :mod:`seqlab.functional.cells`. The backward is, per
step and in reverse time order, ``dA_t = ∂L/∂(x_t W_ihᵀ + b)`` from the saved gates and
``dh_{t-1} = dA_t W_hh (+ direct terms)``; after the loop, over all ``T·B`` rows at once:
``dX = dA W_ih``, ``dW_ih = dAᵀ X``, ``dW_hh = dAᵀ H_prev``, ``db = Σ dA``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from seqlab.engine import fused, native
from seqlab.engine.function import RecurrenceFunction
from seqlab.functional.scan import reference_layer

__all__ = ["BACKENDS", "backends", "resolve_backend", "run_layer"]

BACKENDS = ("native", "fused", "reference")


def _requested(backend: str | None) -> str | None:
    choice = backend if backend is not None else os.environ.get("SEQLAB_BACKEND") or None
    if choice is not None and choice not in BACKENDS + ("auto",):
        raise ValueError(f"backend: expected one of {BACKENDS} or None/'auto', got {choice!r}")
    return None if choice == "auto" else choice


def _native_covers(x: Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def resolve_backend(backend: str | None = None, x: Tensor | None = None) -> str:
    """The backend a call would use. A forced ``native`` that cannot run raises RuntimeError."""
    choice = _requested(backend)
    if choice in ("fused", "reference"):
        return choice
    ops = native.load()
    covered = x is None or _native_covers(x)
    if ops is not None and covered:
        return "native"
    if choice == "native":
        why = native.status()["reason"] if ops is None else "input not CPU float32/float64"
        raise RuntimeError(f"backend='native' requested but unavailable: {why}")
    return "fused"


def backends() -> dict[str, Any]:
    """Report: available backends, the default and why, and the native build directory."""
    st = native.status() if native.disabled_reason() else (native.load(), native.status())[1]
    default = resolve_backend(None)
    if default == "native":
        why = "native extension built and loaded"
    elif _requested(None) is not None:
        why = f"forced by SEQLAB_BACKEND={os.environ.get('SEQLAB_BACKEND')}"
    else:
        why = f"native unavailable ({st['reason']})"
    return {
        "default": default,
        "why": why,
        "available": [b for b in BACKENDS if b != "native" or st["available"]],
        "native": st,
        "torch": torch.__version__,
    }


def _check(mode, x, state, w_ih, w_hh, b_ih, b_hh, lengths) -> None:
    if mode not in fused.MODE_IDS:
        raise ValueError(f"mode: expected one of {sorted(fused.MODE_IDS)}, got {mode!r}")
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"x: expected a (T, B, I) tensor, got {getattr(x, 'shape', type(x))}")
    T, B, I = x.shape
    G = fused.GATE_COUNT[fused.MODE_IDS[mode]]
    H = w_hh.shape[-1]
    want = 2 if mode == "lstm" else 1
    if len(state) != want:
        raise ValueError(f"state: expected {want} tensor(s) for mode {mode!r}, got {len(state)}")
    for name, t, shape in [
        ("w_ih", w_ih, (G * H, I)),
        ("w_hh", w_hh, (G * H, H)),
        ("b_ih", b_ih, (G * H,)),
        ("b_hh", b_hh, (G * H,)),
        ("state", state[0], (B, H)),
        ("state", state[-1], (B, H)),
    ]:
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")
    for name, t in [("w_ih", w_ih), ("w_hh", w_hh), ("b_ih", b_ih), ("b_hh", b_hh)] + [
        ("state", s) for s in state
    ]:
        if t is not None and (t.dtype != x.dtype or t.device != x.device):
            raise TypeError(
                f"{name}: expected dtype {x.dtype} on {x.device} (like x), "
                f"got {t.dtype} on {t.device}"
            )
    if lengths is not None and tuple(lengths.shape) != (B,):
        raise ValueError(f"lengths: expected shape ({B},), got {tuple(lengths.shape)}")


def run_layer(
    mode: str,
    x: Tensor,
    state: tuple[Tensor, ...],
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    lengths: Tensor | None = None,
    reverse: bool = False,
    backend: str | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Run one layer in one direction; same contract as ``reference_layer``.

    ============  ==========  ============================================
    argument      shape       notes
    ============  ==========  ============================================
    ``x``         (T, B, I)   time-major, dropout already applied
    ``state``     (B, H) ×k   ``(h0,)``, or ``(h0, c0)`` for LSTM
    ``w_ih``      (G·H, I)    torch.nn layout; ``w_hh`` (G·H, H)
    ``lengths``   (B,)        optional valid steps per row (int)
    returns       (T, B, H)   outputs, and the final state tuple
    ============  ==========  ============================================
    """
    state = tuple(state)
    _check(mode, x, state, w_ih, w_hh, b_ih, b_hh, lengths)
    name = resolve_backend(backend, x)
    T, B = x.shape[0], x.shape[1]
    if name == "reference" or T == 0 or B == 0:
        return reference_layer(mode, x, state, w_ih, w_hh, b_ih, b_hh, lengths, reverse)
    mode_id = fused.MODE_IDS[mode]
    lengths_cpu = None
    if lengths is not None:
        lengths_cpu = lengths.to(device=x.device, dtype=torch.int64).contiguous()
        if lengths_cpu.numel() and (lengths_cpu.min() < 0 or lengths_cpu.max() > T):
            raise ValueError(f"lengths: expected values in [0, {T}], got {lengths.tolist()}")
    kernel = native.NativeKernel(native.load()) if name == "native" else fused
    c0 = state[1].contiguous() if mode == "lstm" else None
    args = (
        x.contiguous(),
        state[0].contiguous(),
        c0,
        w_ih.contiguous(),
        w_hh.contiguous(),
        None if b_ih is None else b_ih.contiguous(),
        None if b_hh is None else b_hh.contiguous(),
    )
    tensors = [t for t in args if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        y, h_n, c_n = RecurrenceFunction.apply(kernel, mode_id, lengths_cpu, reverse, *args)
    else:
        y, h_n, c_n = kernel.forward(mode_id, *args, lengths_cpu, reverse, False)[:3]
    return y, ((h_n, c_n) if mode == "lstm" else (h_n,))
