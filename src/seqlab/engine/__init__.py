"""Recurrence engine: one layer, one direction, with a hand-derived BPTT.

Backends (all compute exactly what :func:`seqlab.functional.scan.reference_layer` computes):

============  ==========================================================================
``native``    C++ time loop (``csrc/recurrence.cpp``): a thread team over hidden units with
              per-chunk input projections and weight gradients, per-step GEMMs (AVX2 panel
              kernel or MKL), fused vectorised pointwise passes; built on first use and
              cached (see :mod:`.native`)
``fused``     the same algorithm as eager torch ops driven from Python (always available)
``torch``     PyTorch's own fused RNN kernels (``torch._VF``, what torch.nn calls; cuDNN on
              CUDA) with the same weights, for RNN tanh/relu, LSTM and the reset-after GRU;
              other kinds run on ``fused`` (see :mod:`.torch_ops`)
``reference`` the plain autograd reference loop (the oracle)
============  ==========================================================================

Choice: the ``backend`` argument, else ``SEQLAB_BACKEND``, else automatic (native when it
builds and covers the call — CPU, float32/float64 —, torch on CUDA, otherwise fused).
``SEQLAB_NATIVE=0`` simulates a machine without a compiler. :func:`backends` reports what
is in use and why.

Which cell kinds a backend covers is read from their descriptions
(:mod:`seqlab.functional.spec`): a kind with a kernel id runs on the fused and (if
``spec.native``) the native kernel; other kinds run on a kernel registered for them
(:func:`register_kernel`; e.g. the LayerNorm cells' :mod:`.fused_ln`), else on the
reference loop. The LSTM with a projection (``proj_size``) has its own entry,
:func:`run_proj` (:mod:`.proj`), with a kernel per backend registered the same way.

Forward equations per cell kind are in :mod:`seqlab.functional.cells`. The backward is, per
step and in reverse time order, ``dA_t = ∂L/∂(x_t W_ihᵀ + b)`` from the saved gates and
``dh_{t-1} = dA_t W_hh (+ direct terms)``; the input-side products ``dX = dA W_ih``,
``dW_ih = dAᵀ X``, ``dW_hh = dAᵀ H_prev``, ``db = Σ dA`` are GEMMs over many rows at once:
over all ``T·B`` rows after the loop in the fused kernel, and a chunk of steps at a time,
accumulated inside the loop, in the native one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from seqlab.engine import compiled, fused, fused_ln, native, torch_ops
from seqlab.engine.function import Kernel, RecurrenceFunction
from seqlab.functional.scan import reference_run
from seqlab.functional.spec import SPECS, CellSpec, get_spec
from seqlab.validation import SeqlabTypeError, check_run_lengths

__all__ = [
    "BACKENDS",
    "EXTRA_KERNELS",
    "Kernel",
    "backends",
    "kind_backends",
    "register_kernel",
    "resolve_backend",
    "run",
    "run_layer",
    "run_proj",
]

BACKENDS = ("native", "fused", "torch", "reference")


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
    if choice in ("fused", "torch", "reference"):
        return choice
    if choice is None and x is not None and x.device.type == "cuda":
        return "torch"  # cuDNN's kernels; kinds torch lacks run on fused
    ops = native.load()
    covered = x is None or _native_covers(x)
    if ops is not None and covered:
        return "native"
    if choice == "native":
        why = native.status()["reason"] if ops is None else "input not CPU float32/float64"
        raise RuntimeError(f"backend='native' requested but unavailable: {why}")
    return "fused"


def backends() -> dict[str, Any]:
    """Report: available backends, the default (CPU) and why, the default on CUDA tensors, and
    the native build status."""
    st = native.status() if native.disabled_reason() else (native.load(), native.status())[1]
    default = resolve_backend(None)
    if default == "native":
        why = "native extension built and loaded"
    elif _requested(None) is not None:
        why = f"forced by SEQLAB_BACKEND={os.environ.get('SEQLAB_BACKEND')}"
    else:
        why = f"native unavailable ({st['reason']})"
    forced = _requested(None)
    return {
        "default": default,
        "why": why,
        "default_cuda": forced if forced in ("fused", "torch", "reference") else "torch",
        "available": [b for b in BACKENDS if b != "native" or st["available"]],
        "native": st,
        "torch": torch.__version__,
        "kinds": kind_backends(default),
    }


def kind_backends(backend: str | None = None) -> dict[str, dict[str, Any]]:
    """Per registered cell kind: ``runs_on``, what :func:`run` uses for it under ``backend``
    (default: the automatic CPU choice) — a kernel's name or ``"reference"`` — and
    ``kernels``, every kernel that covers it (native, fused, torch, registered extras).

    Read from the registry and the kernels' ``covers`` at call time, so kinds and kernels
    registered later are listed too. The selection is :func:`run`'s for a non-empty CPU
    input: the chosen backend's kernel, else a registered kernel of that name, else any
    kernel that covers the kind, else the reference loop.
    """
    name = resolve_backend(backend)
    pool: list[Any] = [fused.KERNEL, *EXTRA_KERNELS]
    if name == "native" or (not native.disabled_reason() and native.load() is not None):
        pool.insert(0, _kernel("native"))
    out: dict[str, dict[str, Any]] = {}
    for spec in SPECS.values():
        covering = [k for k in pool if k.covers(spec)]
        names = list(dict.fromkeys(k.name for k in covering))
        if torch_ops.covers(spec.name):
            names.append("torch")
        if name == "reference":
            runs_on = "reference"
        elif name == "torch" and torch_ops.covers(spec.name):
            runs_on = "torch"
        else:
            chosen = _kernel(name) if name in ("native", "fused") else fused.KERNEL
            if not chosen.covers(spec):
                named = [k for k in covering if k.name == name]
                chosen = (named or covering or [None])[0]
            runs_on = "reference" if chosen is None else chosen.name
        out[spec.name] = {"runs_on": runs_on, "kernels": names, "choice": spec.choice}
    return out


def _check(spec: CellSpec, x, state, params, lengths) -> None:
    # hot path (every layer call): no string formatting unless something is wrong
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"x: expected a (T, B, I) tensor, got {getattr(x, 'shape', type(x))}")
    T, B, I = x.shape  # noqa: E741
    if len(state) != len(spec.state):
        raise ValueError(
            f"state: expected {len(spec.state)} tensor(s) {spec.state} for mode "
            f"{spec.name!r}, got {len(state)}"
        )
    h0 = state[0]
    if not isinstance(h0, Tensor) or h0.dim() != 2 or h0.shape[0] != B:
        got = tuple(h0.shape) if isinstance(h0, Tensor) else type(h0).__name__
        raise ValueError(f"state: expected shape ({B}, hidden), got {got}")
    H = h0.shape[1]
    if len(params) != len(spec.params):
        names = tuple(p.name for p in spec.params)
        raise ValueError(f"params: expected {len(names)} tensors {names}, got {len(params)}")
    dtype, device = x.dtype, x.device
    for name, t in zip(spec.state, state, strict=True):
        _check_tensor(f"state.{name}", t, (B, H), dtype, device)
    G = len(spec.gates)
    for p, t in zip(spec.params, params, strict=True):
        if t is None:
            if not p.bias:
                raise ValueError(f"{p.name}: expected a tensor of shape {p.shape(G, I, H)}")
            continue
        _check_tensor(p.name, t, p.shape(G, I, H), dtype, device)
    check_run_lengths(lengths, B, T)


def _check_tensor(name: str, t: Tensor, shape: tuple[int, ...], dtype, device) -> None:
    if t.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {tuple(t.shape)}")
    if t.dtype != dtype or t.device != device:
        raise SeqlabTypeError(
            f"{name}: expected dtype {dtype} on {device} (like x), got {t.dtype} on {t.device}"
        )


def _as_params(spec: CellSpec, params) -> tuple[Tensor | None, ...]:
    if isinstance(params, (tuple, list)):
        return tuple(params)
    if isinstance(params, Mapping):
        unknown = set(params) - {p.name for p in spec.params}
        if unknown:
            raise ValueError(f"params: unknown names {sorted(unknown)} for mode {spec.name!r}")
        return tuple(params.get(p.name) for p in spec.params)
    return tuple(params)


#: kernels beyond fused/native, tried in order for cell kinds those two do not cover
EXTRA_KERNELS: list[Kernel] = []


def register_kernel(kernel: Kernel) -> Kernel:
    """Make ``kernel`` available to :func:`run` for the kinds its ``covers(spec)`` accepts.

    Used when neither the native nor the fused kernel covers the kind (and the backend is
    not ``"reference"``). Returns the kernel, so it can be used as a decorator target.
    """
    EXTRA_KERNELS.append(kernel)
    return kernel


register_kernel(fused_ln.KERNEL)  # LayerNorm LSTM/GRU (hand-derived BPTT, eager ops)


def _kernel(name: str):
    if name == "native":
        ops = native.load()
        if _NATIVE.get("ops") is not ops:
            _NATIVE.update(ops=ops, kernel=native.NativeKernel(ops))
        return _NATIVE["kernel"]
    return fused.KERNEL


_NATIVE: dict[str, Any] = {}


def _lengths(lengths: Tensor | None, x: Tensor, check: bool) -> Tensor | None:
    """``lengths`` as contiguous int64 on ``x``'s device, values checked in [0, T]."""
    if lengths is None:
        return None
    T = x.shape[0]
    out = lengths.to(device=x.device, dtype=torch.int64).contiguous()
    if check and out.numel() and (out.min() < 0 or out.max() > T):
        raise ValueError(f"lengths: expected values in [0, {T}], got {lengths.tolist()}")
    return out


def run(
    mode: str | CellSpec,
    x: Tensor,
    state: Sequence[Tensor],
    params: Mapping[str, Tensor | None] | Sequence[Tensor | None],
    lengths: Tensor | None = None,
    reverse: bool = False,
    backend: str | None = None,
    h_mask: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Run one layer in one direction of any registered cell kind.

    ============  ==========  =====================================================
    argument      shape       notes
    ============  ==========  =====================================================
    ``x``         (T, B, I)   time-major, dropout already applied
    ``state``     (B, H) ×k   the kind's state parts, e.g. ``(h0,)`` or ``(h0, c0)``
    ``params``    per spec    by name, or a sequence in ``spec.params`` order
    ``lengths``   (B,)        optional valid steps per row (int, 0..T)
    ``h_mask``    (B, H)      optional recurrent dropout mask: the recurrent product
                              reads ``h_{t−1} ⊙ h_mask`` at every step (a constant)
    returns       (T, B, H)   outputs, and the final state tuple
    ============  ==========  =====================================================

    Same contract as :func:`seqlab.functional.reference_run`. Kinds without a kernel, and
    empty inputs, run on the reference loop; so do masked calls (``h_mask``) of a kind whose
    kernels do not take the mask (the torch backend never does: masked calls run on fused).
    """
    spec = get_spec(mode)
    state = tuple(state)
    params = _as_params(spec, params)
    _check(spec, x, state, params, lengths)
    if h_mask is not None:
        _check_h_mask(spec, h_mask, state[0])
    name = resolve_backend(backend, x)
    T, B = x.shape[0], x.shape[1]
    # zero-size inputs or states (packing rejects them) run on the kernels below
    # (torch's kernels take no recurrent mask: masked calls run on fused)
    torch_ok = name == "torch" and h_mask is None and torch_ops.covers(spec.name)
    if torch_ok and x.numel() and state[0].numel():
        return torch_ops.run(spec.name, x, state, params, _lengths(lengths, x, True), reverse)
    kernel = None if name == "reference" or T == 0 or B == 0 else _kernel(name)
    if kernel is not None and not kernel.covers(spec):
        # a registered kernel named like the chosen backend first, then any that covers
        kernels = [k for k in (fused.KERNEL, *EXTRA_KERNELS) if k.covers(spec)]
        named = [k for k in kernels if getattr(k, "name", None) == name]
        kernel = (named or kernels or [None])[0]
    if kernel is not None and h_mask is not None and not _takes_h_mask(kernel, spec):
        # another kernel of the kind that takes the mask (one named like the backend first,
        # then fused), else the reference loop
        takers = [k for k in (fused.KERNEL, *EXTRA_KERNELS) if k.covers(spec)]
        takers = [k for k in takers if _takes_h_mask(k, spec)]
        named = [k for k in takers if getattr(k, "name", None) == name]
        kernel = (named or takers or [None])[0]
    if kernel is None:
        named = {p.name: t for p, t in zip(spec.params, params, strict=True)}
        return reference_run(spec, x, state, named, lengths, reverse, h_mask)
    # compiling for native: the C++ op checks the values (a Python check would break the
    # graph on a data-dependent branch)
    traced = kernel.name == "native" and torch.compiler.is_compiling()
    if traced and h_mask is not None:  # the masked ops have no traceable twin: fused traces
        kernel, traced = fused.KERNEL, False
    lengths_cpu = _lengths(lengths, x, not traced)
    x = x.contiguous()
    state = tuple([s.contiguous() for s in state])
    params = tuple([None if p is None else p.contiguous() for p in params])
    needs_grad = x.requires_grad or any([s.requires_grad for s in state])
    needs_grad = needs_grad or any([p is not None and p.requires_grad for p in params])
    if traced:
        # traceable custom ops with fake shapes and a registered gradient (see .compiled)
        c0 = state[1] if len(state) == 2 else None
        save = needs_grad and torch.is_grad_enabled()
        y, h_n, c_n, *_ = compiled.recurrence(
            spec.kernel, x, state[0], c0, *params, lengths_cpu, reverse, save
        )
        return y, ((h_n, c_n) if len(state) == 2 else (h_n,))
    if h_mask is not None:
        h_mask = h_mask.detach().contiguous()
    if needs_grad and torch.is_grad_enabled():
        y, *final = RecurrenceFunction.apply(
            kernel, spec, lengths_cpu, reverse, len(state), h_mask, x, *state, *params
        )
        return y, tuple(final)
    masked = {} if h_mask is None else {"h_mask": h_mask}
    y, final, _ = kernel.forward(spec, x, state, params, lengths_cpu, reverse, False, **masked)
    return y, final


def _takes_h_mask(kernel: Kernel, spec: CellSpec) -> bool:
    covers = getattr(kernel, "covers_h_mask", None)
    return covers is not None and covers(spec)


def _check_h_mask(spec: CellSpec, h_mask: object, h0: Tensor) -> None:
    if not spec.h_mask:
        raise ValueError(
            f"recurrent_dropout: cell kind {spec.name!r} does not take a recurrent mask "
            f"(its step has no h_(t-1) @ w_hh product to drop on)"
        )
    if not isinstance(h_mask, Tensor):
        raise TypeError(f"h_mask: expected a Tensor of shape {tuple(h0.shape)}, got {h_mask!r}")
    _check_tensor("h_mask", h_mask, tuple(h0.shape), h0.dtype, h0.device)


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
    h_mask: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """:func:`run` for a classic cell given ``(w_ih (G·H, I), w_hh (G·H, H), b_ih, b_hh)``."""
    return run(mode, x, state, (w_ih, w_hh, b_ih, b_hh), lengths, reverse, backend, h_mask)


# minGRU/minLSTM: the parallel-scan kernel (a module of its own, registered like any other)
from seqlab.engine import minimal as _minimal  # noqa: E402

register_kernel(_minimal.KERNEL)


# the native LayerNorm LSTM/GRU kernel (covers them only while the native library is loaded)
from seqlab.engine.native_ln import KERNEL as _NATIVE_LN  # noqa: E402

register_kernel(_NATIVE_LN)


# the projected LSTM (proj_size): its fused kernel, and the native one while the library is loaded
from seqlab.engine import fused_proj as _fused_proj  # noqa: E402
from seqlab.engine import native_proj as _native_proj  # noqa: E402
from seqlab.engine.proj import run_proj  # noqa: E402

register_kernel(_native_proj.KERNEL)
register_kernel(_fused_proj.KERNEL)
