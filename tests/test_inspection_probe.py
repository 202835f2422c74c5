"""trace=True through every model, and ‖∂L/∂h_t‖ of any model.

Oracles: the recurrent layer's own ``trace=True`` (seqlab's traced reference loop) called
directly on the model's embedded input, a seqlab layer with copied weights for torch.nn
layers and for cells, and the existing layer-level ``hidden_grad_norms`` (a step-by-step
re-run of the layer, not the probe's loop).
"""

import pytest
import torch
import torch.nn.functional as F

import seqlab
from seqlab.inspection import Probe
from seqlab.models import (
    ClassifierConfig,
    Generator,
    GeneratorConfig,
    LanguageModel,
    LanguageModelConfig,
    Seq2Seq,
    Seq2SeqConfig,
    SequenceClassifier,
    SequenceTagger,
    TaggerConfig,
)
from seqlab.training import hidden_grad_norms


def assert_close(actual, expected, atol=1e-6, rtol=1e-5):
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol)


LAYERS = {"lstm": seqlab.LSTM, "gru": seqlab.GRU, "rnn": seqlab.RNN}


def layer_oracle(layer, x, state=None, lengths=None):
    """The seqlab layer's own traces, batch-first: [{name: (B, T, H)}]; a torch.nn layer is
    first copied into a seqlab layer of the same kind."""
    if isinstance(layer, torch.nn.RNNBase):
        kind = type(layer).__mro__[2].__name__.lower()  # _TorchLSTM -> LSTM
        twin = LAYERS[kind](
            layer.input_size,
            layer.hidden_size,
            num_layers=layer.num_layers,
            batch_first=True,
            bidirectional=layer.bidirectional,
        )
        twin.load_state_dict(layer.state_dict())
        layer = twin
    out, _, traces = layer(x, state, lengths=lengths, trace=True)
    return out, [{k: v.transpose(0, 1) for k, v in tr.items()} for tr in traces]


def assert_traces(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for k in g:
            assert_close(g[k], w[k], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("impl", ["seqlab", "torch"])
def test_language_model_traces_equal_the_layers_own(cell, impl):
    lm = LanguageModel(LanguageModelConfig(20, 6, 8, num_layers=2, cell=cell, impl=impl)).eval()
    ids = torch.randint(0, 20, (3, 7))
    logits, state = lm(ids)
    logits2, state2, traces = lm(ids, trace=True)
    assert_close(logits2, logits, atol=1e-5, rtol=1e-5)  # the probe leaves the result alone
    assert set(traces) == {"rnn"} and traces["rnn"][0]["h"].shape == (3, 7, 8)
    with torch.no_grad():
        _, want = layer_oracle(lm.rnn.rnn, lm.embed(ids))
    assert_traces(traces["rnn"], want)


def test_language_model_traces_join_chunks_and_resets():
    lm = LanguageModel(LanguageModelConfig(12, 4, 5, cell="lstm")).eval()
    ids = torch.randint(0, 12, (2, 6))
    resets = torch.zeros(2, 6, dtype=torch.bool)
    resets[0, 3] = True
    _, _, traces = lm(ids, resets=resets, trace=True)
    assert traces["rnn"][0]["c"].shape == (2, 6, 5)
    # Row 1 never resets: its trace equals the layer run over the whole row.
    with torch.no_grad():
        _, want = layer_oracle(lm.rnn.rnn, lm.embed(ids[1:]))
    assert_close(traces["rnn"][0]["f"][1:], want[0]["f"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_traces_with_lengths(bidirectional):
    cfg = ClassifierConfig(
        3, vocab_size=15, embed_size=5, hidden_size=6, num_layers=2, cell="lstm",
        bidirectional=bidirectional, pooling="max",
    )  # fmt: skip
    model = SequenceClassifier(cfg).eval()
    ids = torch.randint(1, 15, (4, 9))
    lengths = torch.tensor([9, 4, 1, 6])
    plain = model(ids, lengths)
    logits, traces = model(ids, lengths, trace=True)
    assert_close(logits, plain, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        _, want = layer_oracle(model.encoder.rnn, model.embed(ids), lengths=lengths)
    assert len(traces["encoder"]) == 2 * (2 if bidirectional else 1)
    assert_traces(traces["encoder"], want)


def test_tagger_traces():
    model = SequenceTagger(TaggerConfig(4, vocab_size=10, embed_size=3, hidden_size=5)).eval()
    ids = torch.randint(0, 10, (2, 5))
    plain = model(ids)
    logits, traces = model(ids, trace=True)
    assert_close(logits, plain)
    with torch.no_grad():
        _, want = layer_oracle(model.encoder.rnn, model.embed(ids))
    assert_traces(traces["encoder"], want)


def test_seq2seq_traces_encoder_and_layer_decoder():
    cfg = Seq2SeqConfig(
        11, 9, embed_size=4, hidden_size=5, encoder_cell="lstm", decoder_cell="lstm",
        bidirectional=True, attention="general", bridge="identity", input_feeding=False,
    )  # fmt: skip
    model = Seq2Seq(cfg).eval()
    src, src_len = torch.randint(3, 11, (2, 6)), torch.tensor([6, 4])
    tgt = torch.randint(3, 9, (2, 5))
    plain, attn = model(src, src_len, tgt)
    logits, attn2, traces = model(src, src_len, tgt, trace=True)
    assert_close(logits, plain, atol=1e-5, rtol=1e-5)
    assert_close(attn2, attn, atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        _, enc = layer_oracle(model.encoder.rnn, model.src_embed(src), lengths=src_len)
        state = model.start(src, src_len)
        _, dec = layer_oracle(model.decoder.rnn, model.tgt_embed(tgt), state=state.rnn)
    assert_traces(traces["encoder"], enc)
    assert_traces(traces["decoder"], dec)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_generator_cell_traces_equal_a_layer_with_the_cells_weights(cell):
    cfg = GeneratorConfig(cond_size=3, vocab_size=8, embed_size=4, hidden_size=5, cell=cell)
    model = Generator(cfg).eval()
    cond, tgt_in = torch.randn(2, 3), torch.randint(0, 8, (2, 6))
    plain = model(cond, tgt_in)
    logits, traces = model(cond, tgt_in, trace=True)
    assert_close(logits, plain, atol=1e-5, rtol=1e-5)
    # The cell's inputs, built by hand from the model's equations (condition at t = 0 only).
    with torch.no_grad():
        u = model.cond_in(cond)
        x = torch.stack(
            [torch.cat([u * (t == 0), model.embed(tgt_in[:, t])], -1) for t in range(6)], 1
        )
        h0 = torch.tanh(model.cond_state(cond))[None]
        layer = LAYERS[cell](8, 5, batch_first=True)
        c = model.rnn.cells[0]
        layer.load_state_dict(
            {f"{k}_l0": v for k, v in c.state_dict().items() if k.startswith(("weight", "bias"))}
        )
        state = (h0, torch.zeros_like(h0)) if cell == "lstm" else h0
        _, want = layer_oracle(layer, x, state=state)
    assert_traces(traces["rnn"], want)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_hidden_grad_norms_of_a_model_equal_the_layer_measurement(cell):
    lm = LanguageModel(LanguageModelConfig(16, 5, 7, cell=cell)).eval()
    ids = torch.randint(0, 16, (2, 10))
    y = torch.randint(0, 16, (2,))

    def loss(logits, _state):
        return F.cross_entropy(logits[:, -1], y)

    got = hidden_grad_norms(lm, ids, loss)
    want = hidden_grad_norms(
        lm.rnn.rnn,
        lm.embed(ids).detach(),
        lambda out, _s: F.cross_entropy(lm.out(out[:, -1]), y),
        batch_first=True,
    )
    assert_close(got.h, want.h, atol=1e-6, rtol=1e-4)
    assert got.loss == pytest.approx(want.loss, rel=1e-5)
    # (c is not compared: the layer-level measurement routes c_t only into the next step, the
    # probe also through h_t = o_t ⊙ tanh(c_t); the probe's c at the last step is not 0.)
    if cell == "lstm":
        assert float(got.c[-1]) > 0 and float(want.c[-1]) == 0
    assert float(got.h[0]) < float(got.h[-1])  # the loss is at the last step


def test_bidirectional_grad_norms_by_finite_differences():
    """‖∂L/∂h_t‖ of the backward direction, checked against a perturbation of h_t: adding
    ε·u to the backward state at step t changes L by ε·⟨∂L/∂h_t, u⟩ (float64)."""
    torch.manual_seed(1)
    layer = seqlab.GRU(3, 4, batch_first=True, bidirectional=True).double()
    x = torch.randn(1, 5, 3, dtype=torch.float64)
    w = torch.randn(8, dtype=torch.float64)

    class Model(torch.nn.Module):
        config = None

        def __init__(self):
            super().__init__()
            self.rnn = layer

        def forward(self, x):
            return self.rnn(x)[0]

    def loss(out, _):
        return (out @ w).pow(2).sum()

    model = Model()
    with Probe(model) as probe:
        out = model(x)
    norms = probe.grad_norms(loss(out, None))["rnn"]
    # Finite differences through the step function: perturb the backward state after step
    # s (original position t = 4 - s) and re-run the rest by hand.
    from seqlab.functional.cells import gru_step

    wi, wh, bi, bh = layer.weights("_l0_reverse")
    fwd = layer(x)[0][..., :4]
    eps = 1e-6
    for t in range(5):
        g = torch.zeros(4, dtype=torch.float64)
        for j in range(4):
            vals = []
            for sign in (1, -1):
                h = torch.zeros(1, 4, dtype=torch.float64)
                outs = [None] * 5
                for tt in range(4, -1, -1):
                    h = gru_step(F.linear(x[:, tt], wi, bi), h, wh, bh)
                    if tt == t:
                        h = h + sign * eps * torch.eye(4, dtype=torch.float64)[j]
                    outs[tt] = h
                o = torch.cat([fwd, torch.stack(outs, 1)], -1)
                vals.append(float(loss(o, None).detach()))
            g[j] = (vals[0] - vals[1]) / (2 * eps)
        assert float(norms[1]["h"][t]) == pytest.approx(float(g.norm()), rel=1e-5)


def test_attention_probe_records_each_heads_weights_like_torch():
    """Weights recorded inside a Transformer model equal torch.nn.MultiheadAttention's, with
    the same parameters, on the input that layer received; the model's output is unchanged."""
    from seqlab.attention.convert import mha_to_torch
    from seqlab.inspection.probe import AttentionProbe
    from seqlab.transformer import TransformerSeq2Seq

    model = TransformerSeq2Seq(9, 7, d_model=8, nhead=2, num_encoder_layers=1,
                               num_decoder_layers=1, dim_feedforward=16, dropout=0.0)  # fmt: skip
    model.eval()
    src, tgt = torch.randint(3, 9, (2, 5)), torch.randint(3, 7, (2, 4))
    plain = model(src, None, tgt)
    seen = {}
    cross = model.decoder.layers[0].multihead_attn
    hook = cross.register_forward_pre_hook(
        lambda m, args, kwargs: seen.update(q=args[0], kv=args[1]), with_kwargs=True
    )
    with AttentionProbe(model) as probe:
        out = model(src, None, tgt)
    hook.remove()
    assert_close(out, plain, atol=1e-6, rtol=1e-5)
    name = "decoder.layers.0.multihead_attn"
    assert set(probe.weights) >= {name, "encoder.layers.0.self_attn"}
    (w,) = probe.weights[name]
    assert w.shape == (2, 2, 4, 5)  # (B, heads, T, S)
    ref = mha_to_torch(cross)
    _, want = ref(seen["q"], seen["kv"], seen["kv"], need_weights=True,
                  average_attn_weights=False)  # fmt: skip
    assert_close(w, want.detach(), atol=1e-6, rtol=1e-5)
    assert "forward" not in cross.__dict__  # unpatched on exit


def test_hidden_grad_norms_through_recurrent_wrapper_with_part():
    """Recurrent(seqlab cell) is measured with part= naming the cell; the oracle is the
    existing cell-level measurement (a separate step-by-step implementation)."""
    cell = seqlab.GRUCell(3, 4)
    x = torch.randn(6, 2, 3)
    got = hidden_grad_norms(
        seqlab.Recurrent(cell), x, lambda o, _s: o[-1].pow(2).sum(), part="cell"
    )
    want = hidden_grad_norms(cell, x, lambda o, _s: o[-1].pow(2).sum())
    assert_close(got.h, want.h, atol=1e-6, rtol=1e-5)


class _ClampedGRUCell(seqlab.GRUCell):
    def forward(self, x, hx=None):
        return super().forward(x, hx).clamp(-0.1, 0.1)


def test_cell_subclass_with_its_own_forward_is_not_replaced_by_the_probe():
    """The probe's instrumented step is the kind's math; a subclass's own forward is left to
    run, so the model's result is unchanged (the plain cell beside it is still probed)."""
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"own": _ClampedGRUCell(3, 4), "plain": seqlab.GRUCell(3, 4)})
    x = torch.randn(2, 3) * 3
    want = model["own"](x)
    with Probe(model) as probe:
        got = model["own"](x)
        model["plain"](x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert set(probe.order) == {"plain"}
