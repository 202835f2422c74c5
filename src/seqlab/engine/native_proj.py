"""The native (C++) kernel of the projected LSTM (torch.nn's ``proj_size``).

Equations and buffers: :mod:`seqlab.engine.fused_proj` (the same algorithm on eager ops,
whose argument lists the ops share). The C++ side, ``csrc/proj_cells.h``, registers
``torch.ops.seqlab_engine.proj_forward`` / ``proj_backward``: per step the recurrent GEMM
into the precomputed input projection, the gate row kernel (``csrc/proj_kernels.h``,
compiled for the baseline and AVX2), the projection GEMM ``h = m W_hrᵀ``; the backward
mirrors it, and the weight gradients (``dW_hr = Σ dhᵀ m`` included) are GEMMs over all
``T·B`` rows after the loop.

:data:`KERNEL` is registered with :func:`seqlab.engine.register_kernel` under the name
``"native"``, so :func:`seqlab.engine.run_proj` prefers it when the chosen backend is native.
It covers the call only while the native library is loaded in this process (never with
``SEQLAB_NATIVE=0``) and not while Dynamo traces (the ops have no fake implementation; a
compiled model runs the fused kernel).
"""

from __future__ import annotations

import torch

from seqlab.engine import native
from seqlab.engine.fused_proj import ProjKernel


def _forward(*args):
    return native.loaded().proj_forward(*args)


def _backward(*args):
    return native.loaded().proj_backward(*args)


def _available() -> bool:
    return native.loaded() is not None and not torch.compiler.is_compiling()


KERNEL = ProjKernel("native", _forward, _backward, _available)
