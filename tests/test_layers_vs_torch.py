"""Acceptance 1: seqlab layers equal torch.nn with the same state_dict (values and grads)."""

import itertools

import pytest
import torch

from helpers import TORCH_TWINS, assert_close, state_tensors

COMBOS = list(itertools.product(TORCH_TWINS, [1, 2], [False, True], [False, True], [True, False]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind,layers,bidir,batch_first,bias", COMBOS)
def test_layer_equals_torch_nn(kind, layers, bidir, batch_first, bias, dtype):
    ours_cls, torch_cls, kw = TORCH_TWINS[kind]
    args = dict(num_layers=layers, bidirectional=bidir, batch_first=batch_first, bias=bias, **kw)
    ref = torch_cls(5, 7, **args).to(dtype)
    ours = ours_cls(5, 7, **args).to(dtype)
    ours.load_state_dict(ref.state_dict())
    T, B, D = 6, 3, 2 if bidir else 1
    x = torch.randn((B, T, 5) if batch_first else (T, B, 5), dtype=dtype)
    n_state = 2 if kind == "lstm" else 1
    s0 = [torch.randn(layers * D, B, 7, dtype=dtype) for _ in range(n_state)]

    results = []
    for module in (ref, ours):
        xi = x.clone().requires_grad_(True)
        si = [s.clone().requires_grad_(True) for s in s0]
        out, final = module(xi, tuple(si) if n_state == 2 else si[0])
        finals = state_tensors(final)
        # a loss touching every output and every final state with distinct weights
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum()
        loss = loss + sum((f * (k + 2)).sum() for k, f in enumerate(finals))
        loss.backward()
        grads = [xi.grad] + [s.grad for s in si] + [p.grad for p in module.parameters()]
        results.append((out, finals, grads))
    (o_r, f_r, g_r), (o_s, f_s, g_s) = results
    assert_close(o_s, o_r, dtype, "outputs")
    for a, b in zip(f_s, f_r, strict=True):
        assert_close(a, b, dtype, "final state")
    names = ["x"] + [f"state{k}" for k in range(n_state)] + [n for n, _ in ours.named_parameters()]
    assert len(g_s) == len(g_r)
    for name, a, b in zip(names, g_s, g_r, strict=True):
        assert_close(a, b, dtype, f"grad {name}")


@pytest.mark.parametrize("kind", list(TORCH_TWINS))
def test_state_none_equals_zeros_and_unbatched(kind):
    ours_cls, _, kw = TORCH_TWINS[kind]
    m = ours_cls(3, 4, num_layers=2, **kw).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    zeros = torch.zeros(2, 2, 4, dtype=torch.float64)
    out_none, _ = m(x)
    out_zero, _ = m(x, (zeros, zeros) if kind == "lstm" else zeros)
    assert torch.equal(out_none, out_zero)
    out_unbatched, final_unbatched = m(x[:, 0])
    assert torch.allclose(out_unbatched, out_none[:, 0], atol=1e-12)
    assert state_tensors(final_unbatched)[0].shape == (2, 4)
