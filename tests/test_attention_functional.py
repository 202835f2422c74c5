"""scaled_dot_product_attention: written-out math vs a scalar loop, fused == math, masks, errors."""

import itertools
import math

import pytest
import torch

from seqlab.attention import causal_mask, key_mask_from_lengths, scaled_dot_product_attention


def loop_attention(q, k, v, allowed=None, additive=None):
    """Independent oracle: softmax(q·k / sqrt(d)) v one (batch, query) row at a time in Python.

    q (B, T, d), k (B, S, d), v (B, S, dv); allowed/additive (B, T, S) or None.
    """
    b_, t_, d = q.shape
    s_ = k.shape[1]
    out = torch.zeros(b_, t_, v.shape[-1], dtype=torch.float64)
    for b in range(b_):
        for t in range(t_):
            logits = []
            for s in range(s_):
                if allowed is not None and not bool(allowed[b, t, s]):
                    continue
                z = float(q[b, t] @ k[b, s]) / math.sqrt(d)
                if additive is not None:
                    z += float(additive[b, t, s])
                logits.append((s, z))
            if not logits:
                continue  # fully masked row: zero output
            m = max(z for _, z in logits)
            den = sum(math.exp(z - m) for _, z in logits)
            for s, z in logits:
                out[b, t] += math.exp(z - m) / den * v[b, s].double()
    return out


def test_math_matches_scalar_loop_all_masks():
    b, t, s, d = 2, 4, 5, 3
    q, k, v = torch.randn(b, t, d), torch.randn(b, s, d), torch.randn(b, s, 2)
    bool_mask = torch.rand(t, s) > 0.3
    additive = torch.randn(t, s)
    key_mask = key_mask_from_lengths(torch.tensor([5, 3]), s)
    out, w = scaled_dot_product_attention(
        q, k, v, attn_mask=bool_mask, key_mask=key_mask, is_causal=True, need_weights=True
    )
    allowed = bool_mask & causal_mask(t, s) & key_mask[:, None, :]
    ref = loop_attention(q, k, v, allowed=allowed.expand(b, t, s))
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)
    assert w is not None and torch.all(w[~allowed.expand(b, t, s)] == 0)

    out, _ = scaled_dot_product_attention(q, k, v, attn_mask=additive, backend="math")
    ref = loop_attention(q, k, v, additive=additive.expand(b, t, s))
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_unmasked_weights_are_softmax_rows():
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    out, w = scaled_dot_product_attention(q, k, v, need_weights=True)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3))
    torch.testing.assert_close(out, w @ v)
    torch.testing.assert_close(w, torch.softmax(q @ k.transpose(1, 2) / 2.0, dim=-1))


def test_causal_is_bottom_right_aligned():
    m = causal_mask(2, 4)
    assert m.tolist() == [[True, True, True, False], [True, True, True, True]]
    assert torch.equal(causal_mask(3), torch.ones(3, 3, dtype=torch.bool).tril())


def _mask_cases(b, h, t, s, dtype):
    bool_mask = torch.rand(t, s) > 0.3
    bool_mask[:, 0] = True  # keep at least one key per row (fully masked rows tested apart)
    return {
        "attn_bool": dict(attn_mask=bool_mask),
        "attn_bool_4d": dict(attn_mask=torch.rand(b, h, t, s) > 0.5),
        "attn_float": dict(attn_mask=torch.randn(t, s, dtype=dtype)),
        "key_mask": dict(key_mask=key_mask_from_lengths(torch.tensor([s, 2]), s)),
        "causal": dict(is_causal=True),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("t,s", [(5, 5), (3, 6)])
def test_fused_equals_math_values_and_grads(dtype, t, s):
    b, h, d = 2, 3, 4
    cases = _mask_cases(b, h, t, s, dtype)
    names = list(cases)
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-9)
    combos = [()] + [(n,) for n in names] + list(itertools.combinations(names, 2))
    combos.append(tuple(n for n in names if n != "attn_bool_4d"))
    for combo in combos:
        kwargs = {}
        for n in combo:
            if n.startswith("attn") and "attn_mask" in kwargs:
                continue  # one attn_mask per call; the combination test merges the others
            kwargs.update(cases[n])
        grads = {}
        outs = {}
        for backend in ("math", "fused"):
            torch.manual_seed(1)
            q = torch.randn(b, h, t, d, dtype=dtype, requires_grad=True)
            k = torch.randn(b, h, s, d, dtype=dtype, requires_grad=True)
            v = torch.randn(b, h, s, d, dtype=dtype, requires_grad=True)
            out, _ = scaled_dot_product_attention(q, k, v, backend=backend, **kwargs)
            (out * torch.linspace(-1, 1, d, dtype=dtype)).sum().backward()
            outs[backend] = out.detach()
            grads[backend] = (q.grad, k.grad, v.grad)
        torch.testing.assert_close(outs["fused"], outs["math"], **tol, msg=str(combo))
        for gf, gm in zip(grads["fused"], grads["math"], strict=True):
            torch.testing.assert_close(gf, gm, **tol, msg=str(combo))


def test_auto_uses_fused_only_when_math_is_the_same(monkeypatch):
    import seqlab.attention.functional as fn

    calls = []
    real = fn.F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs.get("dropout_p", 0.0))
        return real(*args, **kwargs)

    monkeypatch.setattr(fn.F, "scaled_dot_product_attention", spy)
    q = torch.randn(1, 2, 3, 4)
    scaled_dot_product_attention(q, q, q)
    assert len(calls) == 1
    scaled_dot_product_attention(q, q, q, need_weights=True)
    scaled_dot_product_attention(q, q, q, dropout_p=0.5, training=True)
    assert len(calls) == 1  # weights requested / active dropout -> math path
    scaled_dot_product_attention(q, q, q, dropout_p=0.5, training=False)
    assert len(calls) == 2


def test_fully_masked_rows_are_zero_without_nan():
    q = torch.randn(2, 3, 4, requires_grad=True)
    k, v = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    allowed = torch.ones(3, 5, dtype=torch.bool)
    allowed[1] = False
    additive = torch.zeros(3, 5)
    additive[2] = float("-inf")
    for backend in ("math", "fused"):
        for mask in (allowed, additive):
            q.grad = None
            out, _ = scaled_dot_product_attention(q, k, v, attn_mask=mask, backend=backend)
            row = 1 if mask.dtype == torch.bool else 2
            assert torch.all(out[:, row] == 0)
            out.sum().backward()
            assert torch.isfinite(q.grad).all() and torch.all(q.grad[:, row] == 0)


def test_dropout_drops_and_rescales_weights():
    q, k, v = torch.randn(2, 6, 4), torch.randn(2, 7, 4), torch.randn(2, 7, 3)
    p = 0.4
    _, w_ref = scaled_dot_product_attention(q, k, v, need_weights=True)
    torch.manual_seed(3)
    out, w = scaled_dot_product_attention(q, k, v, dropout_p=p, training=True, need_weights=True)
    kept = w != 0
    assert 0 < kept.float().mean() < 1
    torch.testing.assert_close(w[kept], w_ref[kept] / (1 - p))
    torch.testing.assert_close(out, w @ v)
    out_eval, _ = scaled_dot_product_attention(q, k, v, dropout_p=p, training=False)
    torch.testing.assert_close(out_eval, w_ref @ v)


def test_explicit_fused_backend_applies_dropout_in_training_only():
    q = torch.randn(2, 2, 8, 4)
    ref, _ = scaled_dot_product_attention(q, q, q, backend="math")
    dropped, _ = scaled_dot_product_attention(q, q, q, dropout_p=0.5, backend="fused")
    assert not torch.allclose(dropped, ref)
    kept, _ = scaled_dot_product_attention(q, q, q, dropout_p=0.5, training=False, backend="fused")
    torch.testing.assert_close(kept, ref, atol=1e-6, rtol=1e-5)


def test_gradcheck_math_float64():
    q = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 2, 4, 2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, 4, dtype=torch.float64)

    def f(q, k, v):
        return scaled_dot_product_attention(
            q, k, v, attn_mask=bias, is_causal=True, backend="math"
        )[0]

    assert torch.autograd.gradcheck(f, (q, k, v))


def test_bad_inputs_name_the_argument():
    q, k, v = torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match="attn_mask"):
        scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask"):
        scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(3, 3, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="attn_mask"):
        scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(3, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="attn_mask"):
        scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="key_mask"):
        scaled_dot_product_attention(q, k, v, key_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="key_mask"):
        scaled_dot_product_attention(q, k, v, key_mask=torch.ones(2, 5))
    with pytest.raises(ValueError, match="key"):
        scaled_dot_product_attention(q, torch.randn(2, 5, 3), v)
    with pytest.raises(ValueError, match="value"):
        scaled_dot_product_attention(q, k, torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match="is_causal"):
        scaled_dot_product_attention(k, q, q, is_causal=True)
    with pytest.raises(ValueError, match="dropout_p"):
        scaled_dot_product_attention(q, k, v, dropout_p=1.5)
    with pytest.raises(ValueError, match="backend"):
        scaled_dot_product_attention(q, k, v, backend="cuda")
    with pytest.raises(ValueError, match="need_weights"):
        scaled_dot_product_attention(q, k, v, need_weights=True, backend="fused")
