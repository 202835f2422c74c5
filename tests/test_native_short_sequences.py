"""Short sequences (one-token generation) on the native engine take the unprepared-weight
GEMM path (W is packed/paneled only when enough rows meet it): float32 results and gradients
equal torch.nn's with the same weights, below and above that threshold."""

from __future__ import annotations

import pytest
import torch

from helpers import assert_native_layer_equals_torch_nn
from seqlab.engine import native

pytestmark = pytest.mark.skipif(native.load() is None, reason="native backend unavailable")


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize(("T", "B"), [(1, 1), (3, 2), (40, 8)])  # 1, 6 and 320 rows
def test_short_and_long_sequences_equal_torch_nn(cls, T, B):
    torch.manual_seed(0)
    H, I = 96, 40  # products above the tiny-GEMM loop, so BLAS/packing decide
    assert_native_layer_equals_torch_nn(cls, T, B, I, H)
