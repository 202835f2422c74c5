"""Encoder/decoder layers and stacks vs torch.nn.TransformerEncoderLayer/DecoderLayer."""

import pytest
import torch
from torch import nn

from seqlab.attention import causal_mask, key_mask_from_torch_padding
from seqlab.transformer import (
    DecoderLayer,
    EncoderLayer,
    LayerConfig,
    TransformerDecoder,
    TransformerEncoder,
    decoder_layer_from_torch,
    decoder_layer_to_torch,
    encoder_layer_from_torch,
    encoder_layer_to_torch,
)

D, NH, FF = 16, 4, 24


def _perturb(module):
    with torch.no_grad():  # LayerNorm weights 1 / biases 0 by default would hide mix-ups
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def _param_grads(module):
    return {n: p.grad for n, p in module.named_parameters()}


def _check_grads(ours, theirs):
    g_ours, g_theirs = _param_grads(ours), _param_grads(theirs)
    assert set(g_ours) == set(g_theirs)
    for name, g in g_ours.items():
        torch.testing.assert_close(g, g_theirs[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_equals_torch(norm_first, activation):
    theirs = _perturb(
        nn.TransformerEncoderLayer(
            D, NH, FF, dropout=0.0, activation=activation, norm_first=norm_first, batch_first=True
        )
    )
    ours = encoder_layer_from_torch(theirs)
    x = torch.randn(3, 6, D)
    kpm = torch.zeros(3, 6, dtype=torch.bool)
    kpm[1, 4:] = True
    tmask = nn.Transformer.generate_square_subsequent_mask(6)
    cases = [
        ({}, {}),
        ({"src_key_padding_mask": kpm}, {"src_key_mask": key_mask_from_torch_padding(kpm)}),
        ({"src_mask": tmask, "is_causal": True}, {"is_causal": True}),
    ]
    for torch_kw, our_kw in cases:
        theirs.zero_grad()
        ours.zero_grad()
        xt = x.clone().requires_grad_(True)  # grad mode also keeps torch off its fast path
        xo = x.clone().requires_grad_(True)
        yt = theirs(xt, **torch_kw)
        yo = ours(xo, **our_kw)
        torch.testing.assert_close(yo, yt, atol=1e-5, rtol=1e-5)
        (yt**2).sum().backward()
        (yo**2).sum().backward()
        torch.testing.assert_close(xo.grad, xt.grad, atol=1e-5, rtol=1e-4)
        _check_grads(ours, theirs)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_equals_torch(norm_first):
    theirs = _perturb(
        nn.TransformerDecoderLayer(D, NH, FF, dropout=0.0, norm_first=norm_first, batch_first=True)
    )
    ours = decoder_layer_from_torch(theirs)
    tgt, mem = torch.randn(2, 5, D), torch.randn(2, 7, D)
    mpm = torch.zeros(2, 7, dtype=torch.bool)
    mpm[0, 5:] = True
    tmask = nn.Transformer.generate_square_subsequent_mask(5)
    tt, mt = tgt.clone().requires_grad_(True), mem.clone().requires_grad_(True)
    to, mo = tgt.clone().requires_grad_(True), mem.clone().requires_grad_(True)
    yt = theirs(tt, mt, tgt_mask=tmask, memory_key_padding_mask=mpm, tgt_is_causal=True)
    yo = ours(to, mo, memory_key_mask=key_mask_from_torch_padding(mpm), tgt_is_causal=True)
    torch.testing.assert_close(yo, yt, atol=1e-5, rtol=1e-5)
    (yt**2).sum().backward()
    (yo**2).sum().backward()
    torch.testing.assert_close(to.grad, tt.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mo.grad, mt.grad, atol=1e-5, rtol=1e-4)
    _check_grads(ours, theirs)
    # An explicit boolean tgt_mask (seqlab convention) is the same as tgt_is_causal.
    explicit = ours(to, mo, tgt_mask=causal_mask(5))
    torch.testing.assert_close(explicit, ours(to, mo, tgt_is_causal=True))


def test_to_torch_converters_round_trip():
    enc = _perturb(EncoderLayer(D, NH, FF, dropout=0.0, norm_first=True, activation="gelu"))
    dec = _perturb(DecoderLayer(D, NH, FF, dropout=0.0))
    x, m = torch.randn(2, 4, D), torch.randn(2, 3, D)
    with torch.no_grad():
        torch.testing.assert_close(encoder_layer_to_torch(enc).eval()(x), enc.eval()(x))
        torch.testing.assert_close(decoder_layer_to_torch(dec).eval()(x, m), dec.eval()(x, m))
    with pytest.raises(TypeError, match="layer"):
        encoder_layer_from_torch(dec)


@pytest.mark.parametrize("norm_first", [False, True])
def test_stacks_equal_torch_stacks(norm_first):
    cfg = LayerConfig(D, NH, FF, dropout=0.0, norm_first=norm_first)
    enc, dec = _perturb(TransformerEncoder(cfg, 2)), _perturb(TransformerDecoder(cfg, 2))
    t_enc = nn.TransformerEncoder(
        encoder_layer_to_torch(enc.layers[0]),
        2,
        norm=nn.LayerNorm(D) if norm_first else None,
        enable_nested_tensor=False,
    )
    t_dec = nn.TransformerDecoder(
        decoder_layer_to_torch(dec.layers[0]), 2, norm=nn.LayerNorm(D) if norm_first else None
    )
    t_enc.load_state_dict(enc.state_dict())
    t_dec.load_state_dict(dec.state_dict())
    x, y = torch.randn(2, 5, D, requires_grad=True), torch.randn(2, 4, D)
    kpm = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    mem_t = t_enc(x, src_key_padding_mask=kpm)
    mem_o = enc(x, src_key_mask=~kpm)
    torch.testing.assert_close(mem_o, mem_t, atol=1e-5, rtol=1e-5)
    out_t = t_dec(
        y,
        mem_t,
        tgt_mask=nn.Transformer.generate_square_subsequent_mask(4),
        tgt_is_causal=True,
        memory_key_padding_mask=kpm,
    )
    out_o = dec(y, mem_o, memory_key_mask=~kpm)  # decoder stacks are causal by default
    torch.testing.assert_close(out_o, out_t, atol=1e-5, rtol=1e-5)


def test_decoder_stack_is_causal_in_the_target():
    dec = TransformerDecoder(LayerConfig(D, NH, FF, dropout=0.0, norm_first=True), 2)
    y = torch.randn(2, 5, D, requires_grad=True)
    mem = torch.randn(2, 3, D)
    out = dec(y, mem)
    probe = torch.randn(D)  # not a plain sum: the final LayerNorm makes sum(out) constant
    for t in range(5):
        (g,) = torch.autograd.grad((out[:, t] * probe).sum(), y, retain_graph=True)
        assert torch.all(g[:, t + 1 :] == 0) and g[:, : t + 1].abs().sum() > 0


def test_decoder_incremental_equals_full():
    cfg = LayerConfig(D, NH, FF, dropout=0.0, norm_first=False)
    dec = TransformerDecoder(cfg, 2).eval()
    y, mem = torch.randn(2, 6, D), torch.randn(2, 4, D)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    full = dec(y, mem, memory_key_mask=mask)
    memory_kv = dec.project_memory(mem)
    past = None
    outs = []
    for t in range(6):
        out, past = dec.forward_with_cache(
            y[:, t : t + 1], memory_key_mask=mask, past_kv=past, memory_kv=memory_kv
        )
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)


def test_layer_errors():
    with pytest.raises(ValueError, match="num_heads"):
        EncoderLayer(10, 4)
    with pytest.raises(ValueError, match="activation"):
        EncoderLayer(8, 2, activation="tanh")
    with pytest.raises(ValueError, match="num_layers"):
        TransformerEncoder(LayerConfig(8, 2), 0)
    dec = DecoderLayer(8, 2)
    with pytest.raises(ValueError, match="memory"):
        dec.forward_with_cache(torch.randn(1, 2, 8))
    with pytest.raises(ValueError, match="past_kv"):
        TransformerDecoder(LayerConfig(8, 2), 2).forward_with_cache(
            torch.randn(1, 1, 8), torch.randn(1, 2, 8), past_kv=()
        )
