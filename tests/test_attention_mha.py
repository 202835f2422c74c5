"""MultiHeadAttention vs torch.nn.MultiheadAttention (copied weights), KV cache, causality,
padding, positional encodings, converters and error messages."""

import math

import pytest
import torch
from torch import nn

from seqlab.attention import (
    LearnedPositionalEncoding,
    MultiHeadAttention,
    SinusoidalPositionalEncoding,
    from_torch_attn_mask,
    key_mask_from_torch_padding,
    mha_from_torch,
    mha_state_dict_from_torch,
    mha_to_torch,
)

E, H = 12, 3


def _pair(bias=True):
    theirs = nn.MultiheadAttention(E, H, bias=bias, batch_first=True)
    with torch.no_grad():  # non-zero biases so a mix-up of b_q/b_k/b_v would show
        for p in theirs.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return theirs, mha_from_torch(theirs)


def _grads(module, *inputs):
    return [x.grad for x in inputs] + [p.grad for _, p in sorted(module.named_parameters())]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode", ["self", "cross"])
@pytest.mark.parametrize("mask_kind", ["none", "padding", "bool2d", "bool3d", "float", "causal"])
def test_equals_torch_multihead_values_and_grads(bias, mode, mask_kind):
    theirs, ours = _pair(bias)
    b, t = 2, 5
    s = t if mode == "self" or mask_kind == "causal" else 7
    x = torch.randn(b, t, E)
    mem = x if mode == "self" else torch.randn(b, s, E)
    torch_kw, our_kw = {}, {}
    if mask_kind == "padding":
        kpm = torch.zeros(b, s, dtype=torch.bool)
        kpm[1, 3:] = True  # torch: True = padding
        torch_kw["key_padding_mask"] = kpm
        our_kw["key_mask"] = key_mask_from_torch_padding(kpm)
    elif mask_kind in ("bool2d", "bool3d", "float"):
        shape = (t, s) if mask_kind != "bool3d" else (b * H, t, s)
        if mask_kind == "float":
            m = torch.randn(shape)
        else:
            m = torch.rand(shape) > 0.6
            m[..., 0] = False  # torch: True = masked; leave one key per row
        torch_kw["attn_mask"] = m
        our_kw["attn_mask"] = from_torch_attn_mask(m, b, H)
    elif mask_kind == "causal":
        torch_kw["attn_mask"] = nn.Transformer.generate_square_subsequent_mask(t)
        our_kw["is_causal"] = True
    outs, grads = [], []
    for module, kw, call in (
        (theirs, torch_kw, lambda m, q, k, kw: m(q, k, k, need_weights=True, **kw)),
        (ours, our_kw, lambda m, q, k, kw: m(q, k, k, need_weights=True, **kw)[:2]),
    ):
        q = x.clone().requires_grad_(True)
        k = q if mode == "self" else mem.clone().requires_grad_(True)
        out, w = call(module, q, k, kw)
        (out**2).sum().backward()
        outs.append((out.detach(), w.detach()))
        grads.append(_grads(module, q) if mode == "self" else _grads(module, q, k))
    torch.testing.assert_close(outs[1][0], outs[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(outs[1][1], outs[0][1], atol=1e-6, rtol=1e-5)
    for g_ours, g_torch in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(g_ours, g_torch, atol=1e-5, rtol=1e-4)


def test_matches_docstring_equations_head_by_head():
    """out = concat_i softmax(Q_i K_iᵀ / √d) V_i · W_oᵀ + b_o, from the packed weights."""
    _, attn = _pair()
    x, mem = torch.randn(2, 3, E, dtype=torch.float64), torch.randn(2, 4, E, dtype=torch.float64)
    attn = attn.double()
    w, b = attn.in_proj_weight, attn.in_proj_bias
    q = x @ w[:E].T + b[:E]
    k = mem @ w[E : 2 * E].T + b[E : 2 * E]
    v = mem @ w[2 * E :].T + b[2 * E :]
    d = E // H
    heads = []
    for i in range(H):
        cols = slice(i * d, (i + 1) * d)
        scores = q[..., cols] @ k[..., cols].transpose(1, 2) / math.sqrt(d)
        heads.append(torch.softmax(scores, -1) @ v[..., cols])
    want = torch.cat(heads, -1) @ attn.out_proj.weight.T + attn.out_proj.bias
    torch.testing.assert_close(attn(x, mem, mem).output, want)


def test_distinct_key_and_value_tensors_equal_torch():
    theirs, ours = _pair()
    q, k, v = torch.randn(2, 3, E), torch.randn(2, 5, E), torch.randn(2, 5, E)
    torch.testing.assert_close(ours(q, k, v).output, theirs(q, k, v)[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="value"):
        ours(q, k, torch.randn(2, 4, E))


def test_per_head_weights_and_no_weights_path_agree():
    theirs, ours = _pair()
    x = torch.randn(2, 4, E)
    _, w_t = theirs(x, x, x, need_weights=True, average_attn_weights=False)
    r = ours(x, need_weights=True, average_attn_weights=False)
    assert r.weights.shape == (2, H, 4, 4)
    torch.testing.assert_close(r.weights, w_t, atol=1e-6, rtol=1e-5)
    fast = ours(x)  # fused path, no weights
    assert fast.weights is None
    torch.testing.assert_close(fast.output, r.output, atol=1e-6, rtol=1e-5)


def test_converter_round_trip_and_state_dict_keys():
    _, ours = _pair()
    back = mha_to_torch(ours)
    for (n1, p1), (n2, p2) in zip(
        sorted(ours.state_dict().items()), sorted(back.state_dict().items()), strict=True
    ):
        assert n1 == n2 and torch.equal(p1, p2)
    sd = {"attn." + k: v for k, v in back.state_dict().items()}
    assert set(mha_state_dict_from_torch(sd, prefix="attn.")) == set(ours.state_dict())
    with pytest.raises(ValueError, match="kdim"):
        mha_from_torch(nn.MultiheadAttention(E, H, kdim=5, vdim=5))
    with pytest.raises(ValueError, match="in_proj_weight"):
        mha_state_dict_from_torch({"out_proj.weight": torch.zeros(E, E)})


@pytest.mark.parametrize("backend", ["math", "fused"])
def test_causality_gradient_exactly_zero(backend):
    attn = MultiHeadAttention(E, H, backend=backend)
    t = 6
    x = torch.randn(2, t, E, requires_grad=True)
    out = attn(x, is_causal=True).output
    for pos in range(t):
        (g,) = torch.autograd.grad(out[:, pos].sum(), x, retain_graph=True)
        assert torch.all(g[:, pos + 1 :] == 0), f"output {pos} depends on a later input"
        assert g[:, : pos + 1].abs().sum() > 0


def test_kv_cache_incremental_equals_full_forward():
    attn = MultiHeadAttention(E, H).eval()
    x = torch.randn(3, 7, E)
    full = attn(x, is_causal=True).output
    cache = attn.empty_cache(3)
    steps = []
    for t in range(7):
        r = attn(x[:, t : t + 1], past_kv=cache)
        cache = r.kv
        steps.append(r.output)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-6, rtol=1e-5)
    assert cache.length == 7
    # Chunks of several queries use the bottom-right aligned causal mask.
    r1 = attn(x[:, :3], is_causal=True)
    r2 = attn(x[:, 3:], is_causal=True, past_kv=r1.kv)
    torch.testing.assert_close(torch.cat([r1.output, r2.output], 1), full, atol=1e-6, rtol=1e-5)


def test_static_kv_equals_cross_attention_and_reorder():
    attn = MultiHeadAttention(E, H).eval()
    y, mem = torch.randn(2, 3, E), torch.randn(2, 5, E)
    kv = attn.project_kv(mem)
    torch.testing.assert_close(attn(y, static_kv=kv).output, attn(y, mem, mem).output)
    index = torch.tensor([1, 1, 0])
    got = attn(y[index], static_kv=kv.index_select(index)).output
    torch.testing.assert_close(got, attn(y[index], mem[index], mem[index]).output)


def test_padding_never_changes_valid_outputs():
    attn = MultiHeadAttention(E, H).eval()
    y, mem = torch.randn(1, 4, E), torch.randn(1, 3, E)
    ref = attn(y, mem, mem).output
    padded = torch.cat([mem, 100 * torch.randn(1, 5, E)], dim=1)
    key_mask = torch.tensor([[True] * 3 + [False] * 5])
    for backend in ("math", "fused"):
        attn.backend = backend
        got = attn(y, padded, padded, key_mask=key_mask).output
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


def test_attention_weight_dropout_only_in_training():
    attn = MultiHeadAttention(E, H, dropout=0.5)
    x = torch.randn(2, 5, E)
    w_train = attn(x, need_weights=True, average_attn_weights=False).weights
    assert (w_train == 0).any()
    attn.eval()
    w_eval = attn(x, need_weights=True, average_attn_weights=False).weights
    torch.testing.assert_close(w_eval.sum(-1), torch.ones(2, H, 5))


def test_sinusoidal_encoding_matches_formula():
    d = 6
    pe = SinusoidalPositionalEncoding(d, max_len=8)
    x = torch.zeros(1, 12, d)  # beyond the cached table too
    got = pe(x)[0]
    for p in range(12):
        for i in range(d // 2):
            angle = p / 10000 ** (2 * i / d)
            assert got[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert got[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    torch.testing.assert_close(pe(x[:, :3], offset=5), got[5:8].unsqueeze(0))
    odd = SinusoidalPositionalEncoding(5, max_len=4)(torch.zeros(1, 4, 5))
    assert odd.shape == (1, 4, 5) and odd[0, 1, 4].item() == pytest.approx(math.sin(1 / 10000**0.8))


def test_learned_encoding_adds_rows_and_rejects_long_sequences():
    pe = LearnedPositionalEncoding(4, max_len=5)
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(pe(x, offset=2), x + pe.weight[2:5])
    with pytest.raises(ValueError, match="max_len=5"):
        pe(torch.randn(1, 6, 4))
    with pytest.raises(ValueError, match="max_len=5"):
        pe(x, offset=3)


def test_bad_input_errors_name_the_argument():
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadAttention(10, 3)
    attn = MultiHeadAttention(E, H)
    x = torch.randn(2, 4, E)
    with pytest.raises(ValueError, match="query"):
        attn(torch.randn(2, 4, E + 1))
    with pytest.raises(ValueError, match="attn_mask"):
        attn(x, attn_mask=torch.ones(4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask"):
        attn(x, attn_mask=torch.ones(2 * H, 4, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="attn_mask"):
        attn(x, attn_mask=torch.ones(4, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match="key_mask"):
        attn(x, key_mask=torch.ones(2, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="key_mask"):
        attn(x, key_mask=torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="past_kv"):
        attn(x, past_kv=MultiHeadAttention(E, 2).empty_cache(2))
    with pytest.raises(ValueError, match="x"):
        SinusoidalPositionalEncoding(4)(torch.zeros(2, 3, 5))
