"""Short sequences (one-token generation) on the native engine take the unprepared-weight
GEMM path (W is packed/paneled only when enough rows meet it): float32 results and gradients
equal torch.nn's with the same weights, below and above that threshold."""

from __future__ import annotations

import pytest
import torch

import seqlab
from seqlab.engine import native

pytestmark = pytest.mark.skipif(native.load() is None, reason="native backend unavailable")


@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize(("T", "B"), [(1, 1), (3, 2), (40, 8)])  # 1, 6 and 320 rows
def test_short_and_long_sequences_equal_torch_nn(cls, T, B):
    torch.manual_seed(0)
    H, I = 96, 40  # products above the tiny-GEMM loop, so BLAS/packing decide
    ours = getattr(seqlab, cls)(I, H, backend="native")
    ref = getattr(torch.nn, cls)(I, H)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, I, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, _ = ours(x)
    want, _ = ref(x_ref)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
    g = torch.randn_like(out)
    out.backward(g)
    want.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-4, msg=name)
