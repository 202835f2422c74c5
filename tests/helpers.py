"""Shared test utilities: comparisons and torch.nn twins of seqlab layers."""

from __future__ import annotations

import torch
from torch import nn

import seqlab

# (seqlab kind, torch.nn class, constructor kwargs) for every torch.nn-comparable layer
TORCH_TWINS = {
    "rnn_tanh": (seqlab.RNN, nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (seqlab.RNN, nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (seqlab.LSTM, nn.LSTM, {}),
    "gru": (seqlab.GRU, nn.GRU, {}),
}


def assert_close(actual, expected, dtype, what=""):
    """float64: absolute 1e-10; float32: 1e-5 relative to the expected tensor's magnitude."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = (actual - expected).abs().max().item() if actual.numel() else 0.0
    if dtype == torch.float64:
        tol = 1e-10
    else:
        tol = 1e-5 * max(1.0, expected.abs().max().item() if expected.numel() else 0.0)
    assert err <= tol, f"{what}: max abs error {err:.3e} > {tol:.1e}"


def state_tensors(state):
    return [state] if isinstance(state, torch.Tensor) else list(state)


def assert_native_layer_equals_torch_nn(cls: str, T: int, B: int, I: int, H: int) -> None:  # noqa: E741
    """seqlab.<cls> on the native backend vs torch.nn.<cls> with the same weights (float32):
    outputs, ∂L/∂x and every parameter's gradient for a random upstream gradient."""
    ours = getattr(seqlab, cls)(I, H, backend="native")
    ref = getattr(nn, cls)(I, H)
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
