import pytest
import torch

from seqlab.models import (
    ClassifierConfig,
    SequenceClassifier,
    SequenceRegressor,
    SequenceTagger,
    TaggerConfig,
)


def _fit(model, make_batch, steps, lr=1e-2):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        loss = model.loss(make_batch())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def parity_batch(B, max_len=6, generator=None):
    """Bits as tokens 1/2 (0 = pad), varied lengths; the class is the parity of the 2s."""
    n = torch.randint(1, max_len + 1, (B,), generator=generator)
    bits = torch.randint(0, 2, (B, max_len), generator=generator)
    valid = torch.arange(max_len).unsqueeze(0) < n.unsqueeze(1)
    bits = bits * valid
    tokens = (bits + 1) * valid
    return {"inputs": tokens, "lengths": n, "targets": bits.sum(1) % 2}


def test_classifier_learns_parity_with_varied_lengths():
    cfg = ClassifierConfig(num_classes=2, vocab_size=3, embed_size=8, hidden_size=24, cell="gru")
    model = _fit(SequenceClassifier(cfg), lambda: parity_batch(64), 300)
    test = parity_batch(500, generator=torch.Generator().manual_seed(7))
    acc = (model.predict(test["inputs"], test["lengths"]) == test["targets"]).float().mean()
    assert acc >= 0.97


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("cell,bidirectional", [("lstm", True), ("rnn", False), ("gru", True)])
def test_padded_batch_equals_rows_alone(pooling, cell, bidirectional):
    cfg = ClassifierConfig(
        num_classes=3,
        vocab_size=5,
        embed_size=6,
        hidden_size=7,
        cell=cell,
        bidirectional=bidirectional,
        pooling=pooling,
        num_layers=2,
    )
    model = SequenceClassifier(cfg).eval()
    tokens = torch.randint(1, 5, (3, 6))
    lengths = torch.tensor([6, 2, 4])
    out = model(tokens, lengths)
    for b in range(3):
        n = int(lengths[b])
        torch.testing.assert_close(out[b : b + 1], model(tokens[b : b + 1, :n]))


def test_pooling_against_hand_computation():
    x = torch.randn(2, 5, 3)
    lengths = torch.tensor([5, 2])
    for pooling in ["mean", "max", "attention"]:
        cfg = ClassifierConfig(num_classes=2, input_size=3, hidden_size=4, pooling=pooling)
        model = SequenceClassifier(cfg).eval()
        r = model.encode(x, lengths)
        out, _ = model.encoder(x, lengths)
        for b, n in enumerate(lengths.tolist()):
            o = out[b, :n]
            if pooling == "mean":
                want = o.mean(0)
            elif pooling == "max":
                want = o.max(0).values
            else:
                a = torch.softmax(model.attn_v(torch.tanh(model.attn_w(o))).squeeze(-1), 0)
                want = (a.unsqueeze(-1) * o).sum(0)
                assert torch.all(model.last_attention[b, n:] == 0)
            torch.testing.assert_close(r[b], want)


def test_sigmoid_head_multilabel_loss():
    cfg = ClassifierConfig(num_classes=2, input_size=3, hidden_size=4, head="sigmoid")
    model = SequenceClassifier(cfg)
    x, y = torch.randn(4, 5, 3), torch.tensor([[0, 1], [1, 1], [0, 0], [1, 0]])
    logits = model(x)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float())
    torch.testing.assert_close(model.loss({"inputs": x, "targets": y}), ref)
    assert set(model.predict(x).unique().tolist()) <= {0, 1}


def test_regressor_forecasts_next_value():
    def batch():
        # Noisy-free sinusoids of random phase/frequency; predict the value after the window.
        phase = torch.rand(64, 1) * 6.28
        freq = 0.3 + 0.4 * torch.rand(64, 1)
        t = torch.arange(13).float()
        series = torch.sin(phase + freq * t)
        return {"inputs": series[:, :12, None], "targets": series[:, 12:]}

    model = _fit(SequenceRegressor(1, 1, hidden_size=24, cell="gru"), batch, 300)
    test = batch()
    mse = torch.nn.functional.mse_loss(model.predict(test["inputs"]), test["targets"])
    baseline = torch.nn.functional.mse_loss(test["inputs"][:, -1], test["targets"])
    assert mse < 0.01 and mse < baseline / 5


def test_tagger_copies_with_delay():
    delay = 2

    def batch(B=64, T=10, generator=None):
        x = torch.randint(1, 6, (B, T), generator=generator)
        y = torch.zeros_like(x)
        y[:, delay:] = x[:, :-delay]
        n = torch.randint(delay + 1, T + 1, (B,), generator=generator)
        return {"inputs": x, "targets": y, "lengths": n}

    cfg = TaggerConfig(num_tags=6, vocab_size=6, embed_size=8, hidden_size=24, cell="lstm")
    model = _fit(SequenceTagger(cfg), batch, 300)
    test = batch(200, generator=torch.Generator().manual_seed(3))
    pred = model(test["inputs"], test["lengths"]).argmax(-1)
    valid = torch.arange(10).unsqueeze(0) < test["lengths"].unsqueeze(1)
    acc = (pred == test["targets"])[valid].float().mean()
    assert acc >= 0.99


def test_tagger_causality_and_padding():
    causal = SequenceTagger(TaggerConfig(num_tags=3, input_size=2, hidden_size=5)).eval()
    x = torch.randn(1, 6, 2)
    x2 = x.clone()
    x2[0, 4:] += 1.0
    y, y2 = causal(x), causal(x2)
    torch.testing.assert_close(y[:, :4], y2[:, :4])  # future steps do not leak backwards
    assert not torch.allclose(y[:, 4:], y2[:, 4:])
    bi = SequenceTagger(
        TaggerConfig(num_tags=3, input_size=2, hidden_size=5, bidirectional=True, causal=False)
    ).eval()
    lengths = torch.tensor([6, 3])
    xb = torch.randn(2, 6, 2)
    out = bi(xb, lengths)
    assert torch.all(out[1, 3:] == 0)
    torch.testing.assert_close(out[1:, :3], bi(xb[1:, :3]))
    with pytest.raises(ValueError, match="bidirectional"):
        SequenceTagger(TaggerConfig(num_tags=3, input_size=2, bidirectional=True))


def test_bad_input_raises_named_errors():
    model = SequenceClassifier(ClassifierConfig(num_classes=2, vocab_size=4, hidden_size=4))
    with pytest.raises(ValueError, match="inputs"):
        model(torch.tensor([[1, 4]]))
    with pytest.raises(ValueError, match="lengths"):
        model(torch.tensor([[1, 2]]), torch.tensor([3]))
    with pytest.raises(ValueError, match="pooling"):
        SequenceClassifier(ClassifierConfig(num_classes=2, vocab_size=4, pooling="median"))
    with pytest.raises(ValueError, match="cell"):
        SequenceClassifier(ClassifierConfig(num_classes=2, vocab_size=4, cell="tcn"))
    with pytest.raises(ValueError, match="vocab_size"):
        SequenceClassifier(ClassifierConfig(num_classes=2))
    dense = SequenceRegressor(3, 1, hidden_size=4)
    with pytest.raises(ValueError, match="inputs"):
        dense(torch.randn(2, 5, 4))
    with pytest.raises(TypeError, match="inputs"):
        dense(torch.ones(2, 5, 3, dtype=torch.long))


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny ops: a second intra-op thread only adds synchronisation cost on a busy machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_transformer_encoder_ignores_padding_and_last_reads_the_last_valid_step():
    torch.manual_seed(0)
    for pooling in ("last", "mean", "max"):
        cfg = ClassifierConfig(2, vocab_size=20, embed_size=8, hidden_size=8, cell="transformer",
                               pooling=pooling, nhead=2)  # fmt: skip
        model = SequenceClassifier(cfg).eval()
        ids = torch.tensor([[4, 5, 6, 0, 0], [7, 8, 9, 10, 11]])
        both = model(ids, torch.tensor([3, 5]))
        alone = model(torch.tensor([[4, 5, 6]]), torch.tensor([3]))
        torch.testing.assert_close(both[0], alone[0], rtol=1e-5, atol=1e-6)
    # causal: the output at step t depends only on steps <= t
    cfg = ClassifierConfig(1, input_size=1, hidden_size=8, cell="transformer", nhead=2, causal=True)
    enc = SequenceClassifier(cfg).encoder.eval()
    x = torch.randn(1, 6, 1)
    y = x.clone()
    y[:, 4:] += 1.0
    torch.testing.assert_close(enc(x)[0][:, :4], enc(y)[0][:, :4])
    with pytest.raises(ValueError, match="bidirectional"):
        SequenceClassifier(
            ClassifierConfig(2, input_size=1, cell="transformer", bidirectional=True)
        )


def test_ngram_path_adds_a_padding_free_bag_of_uni_and_bigrams():
    V, K = 20, 64
    cfg = dict(vocab_size=V, embed_size=5, hidden_size=4, bidirectional=True, pooling="max")
    model = SequenceClassifier(ClassifierConfig(2, ngram_buckets=K, **cfg)).eval()
    plain = SequenceClassifier(ClassifierConfig(2, **cfg)).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    ids = torch.tensor([[4, 5, 6, 0, 0], [7, 8, 9, 10, 11]])
    lengths = torch.tensor([3, 5])
    torch.testing.assert_close(model(ids, lengths), plain(ids, lengths))  # starts at zero
    with torch.no_grad():
        model.ngrams.weight.normal_()
    U = model.ngrams.weight
    want = U[4] + U[5] + U[6] + U[V + (4 * 1_000_003 + 5) % K] + U[V + (5 * 1_000_003 + 6) % K]
    got = model(ids, lengths)
    torch.testing.assert_close(got[0], plain(ids, lengths)[0] + want)
    torch.testing.assert_close(got[0], model(ids[:1, :3], lengths[:1])[0])  # padding: no effect
    with pytest.raises(ValueError, match="ngram_buckets: needs token input"):
        SequenceClassifier(ClassifierConfig(2, input_size=3, ngram_buckets=K))
