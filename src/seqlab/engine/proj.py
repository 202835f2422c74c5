"""The projected LSTM (torch.nn's ``proj_size``) on the engine's backends.

:func:`run_proj` is :func:`seqlab.engine.run` for :data:`~seqlab.functional.proj.LSTM_PROJ`,
whose ``h`` (B, P) and ``c`` (B, H) differ in width (the registry's kinds all have (B, H)
states, so it has its own checks). Backends, as the engine resolves them:

============  ===========================================================================
``native``    the C++ kernel (``csrc/proj_cells.h``, :mod:`.native_proj`), registered under
              the name ``native``; covers the call while the native library is loaded and
              Dynamo is not tracing (else ``fused`` runs)
``fused``     the hand-derived BPTT on eager ops (:mod:`.fused_proj`)
``torch``     torch's own fused LSTM (``torch._VF.lstm`` with ``w_hr`` in the flat weights)
``reference`` the reference loop :func:`seqlab.functional.proj.lstm_proj_run` (the oracle)
============  ===========================================================================

The kernels are found among :data:`seqlab.engine.EXTRA_KERNELS` by ``covers(LSTM_PROJ)``,
the one named like the chosen backend first. Gradients flow through
:class:`~seqlab.engine.function.RecurrenceFunction` (double backward: the reference loop).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from seqlab.engine.function import RecurrenceFunction
from seqlab.functional.proj import LSTM_PROJ
from seqlab.functional.scan import reference_run
from seqlab.validation import SeqlabTypeError, check_run_lengths

NAMES = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")


def check_proj(x: object, state: Sequence[object], params: Sequence[object], lengths) -> None:
    """Shapes, dtypes and devices of a :func:`run_proj` call (ValueError/TypeError naming the
    argument, its expected and actual shape)."""
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"x: expected a (T, B, I) tensor, got {getattr(x, 'shape', type(x))}")
    T, B, I = x.shape  # noqa: E741
    if len(state) != 2 or not all(isinstance(s, Tensor) and s.dim() == 2 for s in state):
        raise ValueError("state: expected (h0 (B, P), c0 (B, H)) tensors")
    P, H = state[0].shape[1], state[1].shape[1]
    if len(params) != len(NAMES):
        raise ValueError(f"params: expected {len(NAMES)} tensors {NAMES}, got {len(params)}")
    shapes = {
        "state.h": (B, P), "state.c": (B, H), "w_ih": (4 * H, I), "w_hh": (4 * H, P),
        "b_ih": (4 * H,), "b_hh": (4 * H,), "w_hr": (P, H),
    }  # fmt: skip
    for name, t in zip(("state.h", "state.c", *NAMES), (*state, *params), strict=True):
        if t is None and name in ("b_ih", "b_hh"):
            continue
        if not isinstance(t, Tensor) or tuple(t.shape) != shapes[name]:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected shape {shapes[name]}, got {got}")
        if t.dtype != x.dtype or t.device != x.device:
            raise SeqlabTypeError(
                f"{name}: expected dtype {x.dtype} on {x.device} (like x), "
                f"got {t.dtype} on {t.device}"
            )
    check_run_lengths(lengths, B, T)


def _kernel(name: str):
    from seqlab import engine  # the registry (this module is imported by engine itself)

    kernels = [k for k in engine.EXTRA_KERNELS if k.covers(LSTM_PROJ)]
    named = [k for k in kernels if k.name == name]
    return (named or kernels or [None])[0]


def run_proj(
    x: Tensor,
    state: Sequence[Tensor],
    params: Sequence[Tensor | None],
    lengths: Tensor | None = None,
    reverse: bool = False,
    backend: str | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One layer, one direction of the projected LSTM: ``(y (T, B, P), (h_T, c_T))``.

    ``x`` (T, B, I); ``state`` ``(h0 (B, P), c0 (B, H))``; ``params`` ``(w_ih (4H, I),
    w_hh (4H, P), b_ih, b_hh (4H,) or None, w_hr (P, H))``; ``lengths`` and ``reverse`` as
    :func:`seqlab.engine.run`. Same result as
    :func:`seqlab.functional.proj.lstm_proj_run` on every backend.
    """
    from seqlab import engine

    state, params = tuple(state), tuple(params)
    check_proj(x, state, params, lengths)
    name = engine.resolve_backend(backend, x)
    T, B = x.shape[0], x.shape[1]
    empty = T == 0 or B == 0 or state[0].shape[1] == 0 or state[1].shape[1] == 0
    if name == "torch" and not empty:
        lengths = engine._lengths(lengths, x, True)
        y, final = engine.torch_ops.run("lstm", x, state, params, lengths, reverse)
        return y, (final[0], final[1])
    kernel = None if name == "reference" or empty else _kernel(name)
    if kernel is None:
        named = dict(zip(NAMES, params, strict=True))
        y, final = reference_run(LSTM_PROJ, x, state, named, lengths, reverse)
        return y, (final[0], final[1])
    lengths = engine._lengths(lengths, x, True)
    x = x.contiguous()
    state = tuple([s.contiguous() for s in state])
    params = tuple([None if p is None else p.contiguous() for p in params])
    tensors = (x, *state, *params)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        y, h_n, c_n = RecurrenceFunction.apply(
            kernel, LSTM_PROJ, lengths, reverse, 2, None, x, *state, *params
        )
        return y, (h_n, c_n)
    y, final, _ = kernel.forward(LSTM_PROJ, x, state, params, lengths, reverse, False)
    return y, (final[0], final[1])
