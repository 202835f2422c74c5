"""The native engine's per-step panel GEMM (csrc/panels.h) at shapes that take every branch:
pairs of full 16-column panels, an odd full panel, a partial panel, and row tiles of 8, 4
and 1 (AVX-512 where the CPU has it, else AVX2). Oracle: torch.nn with the same weights,
outputs and all gradients in float32, with one thread and with a team of two."""

from __future__ import annotations

import pytest
import torch

import seqlab
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
    finally:
        torch.set_num_threads(before)
