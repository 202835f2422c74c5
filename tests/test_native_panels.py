"""The native engine's per-step panel GEMM (csrc/panels.h) at shapes that take every branch:
pairs of full 16-column panels, an odd full panel, a partial panel, and row tiles of 8, 4
and 1 (AVX-512 where the CPU has it, else AVX2). Oracle: torch.nn with the same weights,
outputs and all gradients in float32, with one thread and with a team of two."""

from __future__ import annotations

import pytest
import torch

from helpers import assert_native_layer_equals_torch_nn
from seqlab.engine import native

pytestmark = pytest.mark.skipif(native.load() is None, reason="native backend unavailable")


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize(("B", "H"), [(13, 40), (8, 64), (29, 24)])
def test_panel_shapes_equal_torch_nn(cls, B, H, threads):
    # G·H columns: LSTM 160 (10 full panels), GRU 120 (7 full + 8), RNN 40 (2 full + 8); the
    # backward's dh product has H columns; 30 steps × B rows put W into panels
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        T, I = 30, 24
        assert_native_layer_equals_torch_nn(cls, T, B, I, H)
    finally:
        torch.set_num_threads(before)
