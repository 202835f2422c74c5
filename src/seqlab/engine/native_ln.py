"""The native (C++) kernel of the LayerNorm LSTM and LayerNorm GRU (``"lnlstm"``, ``"lngru"``).

Equations: :mod:`seqlab.functional.layernorm`. The C++ side (``csrc/layernorm_cells.h``, ops
``torch.ops.seqlab_engine.ln_forward`` / ``ln_backward``) runs the time loop in the thread team
of the classic cells, with a per-step reduction inside the team for each layer normalisation's
row statistics (see ``docs/engine.md``), and the hand-derived BPTT.

:data:`KERNEL` is registered with :func:`seqlab.engine.register_kernel` under the name
``"native"``, so ``engine.run`` prefers it when the chosen backend is native. It covers the two
kinds only while the native library is loaded in this process (never with ``SEQLAB_NATIVE=0``)
and not while Dynamo traces (the ops have no fake implementation; a compiled model uses the
other kernels).

Recurrent dropout (``h_mask`` (B, H), :mod:`seqlab.functional.regularisers`) runs on the twin
ops ``ln_forward_masked`` / ``ln_backward_masked``: the per-step product reads
``h_{t−1} ⊙ m`` (each shard writes its units of the next step's masked state once its ``h`` is
done), the backward scales the recurrent path's ``dh_{t−1}`` by ``m`` and forms ``dW_hh`` from
``H_prev ⊙ m``.

Buffers saved for the backward (``save=True``), time-major:

==========  =============  ===================================================
name        shape          content
==========  =============  ===================================================
``hbuf``    (T+1, B, H)    states, as in :mod:`seqlab.engine.fused`
``cbuf``    (T+1, B, H)    LN-LSTM raw cell states (empty for the GRU)
``gates``   (T, B, 4H)     LSTM ``i f g o``; GRU ``r z n`` and ``hw_n = γ⊙x̂_hh + b_hn``
``xih``     (T, B, G·H)    x̂ of the input projection ``x @ w_ihᵀ``
``xhh``     (T, B, G·H)    x̂ of the recurrent projection ``h_prev @ w_hhᵀ``
``ch``      (T, B, H)      LN-LSTM: ĉ (empty for the GRU)
``rs``      (T, B, K)      1/√(σ²+ε) of the input, recurrent (and cell) normalisations
==========  =============  ===================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from seqlab.engine import native
from seqlab.functional.layernorm import LNGRU, LNLSTM
from seqlab.functional.spec import CellSpec

#: mode ids of the ``ln_forward`` / ``ln_backward`` ops
MODES = {LNLSTM.name: 0, LNGRU.name: 1}


class NativeLayerNormKernel:
    """:class:`~seqlab.engine.function.Kernel` for ``lnlstm`` and ``lngru`` on the C++ ops.

    Parameters arrive in the descriptions' order: ``w_ih, w_hh, b_ih, b_hh, g_ih, g_hh``
    (and ``g_c, b_c`` for the LSTM); absent biases are None.
    """

    name = "native"

    def covers(self, spec: CellSpec) -> bool:
        ours = spec is LNLSTM or spec is LNGRU
        return ours and native.loaded() is not None and not torch.compiler.is_compiling()

    def covers_h_mask(self, spec: CellSpec) -> bool:
        """Recurrent dropout (``h_mask``) for both kinds, on the ``_masked`` ops."""
        return self.covers(spec)

    def forward(
        self,
        spec: CellSpec,
        x: Tensor,
        state: Sequence[Tensor],
        params: Sequence[Tensor | None],
        lengths: Tensor | None,
        reverse: bool,
        save: bool,
        h_mask: Tensor | None = None,
    ):
        ops = native.loaded()
        lstm = spec is LNLSTM
        w_ih, w_hh, b_ih, b_hh, g_ih, g_hh = params[:6]
        g_c, b_c = params[6:] if lstm else (None, None)
        c0 = state[1] if lstm else None
        args = (MODES[spec.name], x, state[0], c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c,
                lengths, reverse, save)  # fmt: skip
        if h_mask is None:
            y, h_n, c_n, *saved = ops.ln_forward(*args)
        else:
            y, h_n, c_n, *saved = ops.ln_forward_masked(*args, h_mask)
        return y, ((h_n, c_n) if lstm else (h_n,)), tuple(saved)

    def backward(
        self,
        spec: CellSpec,
        x: Tensor,
        params: Sequence[Tensor | None],
        lengths: Tensor | None,
        reverse: bool,
        saved: tuple[Tensor, ...],
        gy: Tensor,
        gstate: Sequence[Tensor],
        h_mask: Tensor | None = None,
    ):
        ops = native.loaded()
        lstm = spec is LNLSTM
        w_ih, w_hh, b_ih, b_hh, g_ih, g_hh = params[:6]
        g_c, b_c = params[6:] if lstm else (None, None)
        gcn = gstate[1].contiguous() if lstm else None
        args = (
            MODES[spec.name], x, w_ih, w_hh, g_ih, g_hh, g_c, b_c,
            b_ih is not None, b_hh is not None, b_c is not None, lengths, reverse,
            *saved, gy, gstate[0].contiguous(), gcn,
        )  # fmt: skip
        masked = h_mask is not None
        out = ops.ln_backward_masked(*args, h_mask) if masked else ops.ln_backward(*args)
        dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh, dg_ih, dg_hh, dg_c, db_c = out
        grads = [dw_ih, dw_hh, db_ih, db_hh, dg_ih, dg_hh] + ([dg_c, db_c] if lstm else [])
        dparams = tuple([g if p is not None else None for g, p in zip(grads, params, strict=True)])
        return dx, ((dh0, dc0) if lstm else (dh0,)), dparams


KERNEL = NativeLayerNormKernel()
