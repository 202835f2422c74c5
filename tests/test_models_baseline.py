import math

import pytest
import torch

from seqlab.decoding import beam_search, greedy
from seqlab.models import NGramLM, SequenceTagger, TaggerConfig, WindowConfig, WindowMLP


def test_window_mlp_matches_hand_window():
    model = WindowMLP(WindowConfig(output_size=2, window=3, input_size=4, hidden_size=5))
    x = torch.randn(2, 6, 4)
    y = model(x)
    padded = torch.cat([torch.zeros(2, 2, 4), x], 1)
    for t in range(6):
        w = padded[:, t : t + 3].reshape(2, 12)  # x_{t-2}, x_{t-1}, x_t
        want = model.out(torch.tanh(model.hidden(w)))
        torch.testing.assert_close(y[:, t], want)


def test_window_sees_exactly_k_steps():
    model = WindowMLP(WindowConfig(output_size=1, window=2, input_size=1, task="regress"))
    x = torch.randn(1, 6, 1)
    x2 = x.clone()
    x2[0, 2] += 1.0  # touches outputs at t = 2, 3 only
    diff = (model(x) - model(x2)).abs()[0, :, 0]
    assert torch.all(diff[[0, 1, 4, 5]] == 0) and torch.all(diff[[2, 3]] > 0)


def test_window_last_pooling_and_token_input():
    model = WindowMLP(WindowConfig(output_size=3, window=2, vocab_size=5, pooling="last"))
    tokens = torch.randint(0, 5, (3, 7))
    lengths = torch.tensor([7, 2, 4])
    out = model(tokens, lengths)
    model.config.pooling = "none"
    full = model(tokens)
    torch.testing.assert_close(out, full[torch.arange(3), lengths - 1])


def _fit(model, batch_fn, steps):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = model.loss(batch_fn())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _delay_batch(delay, B=64, T=12, generator=None):
    x = torch.randint(0, 4, (B, T), generator=generator)
    y = torch.zeros_like(x)
    y[:, delay:] = x[:, :-delay]
    return {"inputs": x, "targets": y}


def _accuracy(model, delay):
    test = _delay_batch(delay, B=200, generator=torch.Generator().manual_seed(5))
    pred = model(test["inputs"]).argmax(-1)
    return (pred == test["targets"])[:, delay:].float().mean().item()


def test_window_solves_short_memory_but_rnn_beats_it_beyond_the_window():
    # Delay 1 fits in a window of 2: the baseline solves it.
    short = WindowMLP(WindowConfig(output_size=4, window=2, vocab_size=4, hidden_size=32))
    assert _accuracy(_fit(short, lambda: _delay_batch(1), 150), 1) >= 0.99
    # Delay 4 does not: the window model is at chance (~1/4), the RNN is not.
    far = WindowMLP(WindowConfig(output_size=4, window=2, vocab_size=4, hidden_size=32))
    rnn = SequenceTagger(TaggerConfig(num_tags=4, vocab_size=4, hidden_size=24, cell="gru"))
    acc_window = _accuracy(_fit(far, lambda: _delay_batch(4), 150), 4)
    acc_rnn = _accuracy(_fit(rnn, lambda: _delay_batch(4), 250), 4)
    assert acc_window < 0.4 and acc_rnn > 0.95


def test_ngram_probabilities_match_counts():
    corpus = [[3, 4, 3, 4, 5], [3, 5]]
    lm = NGramLM(vocab_size=6, n=2, delta=0.5, bos=1).fit(corpus)
    # Bigram counts after 3: 4 twice, 5 once. p(4|3) = (2 + .5) / (3 + .5·6).
    lp = lm.log_probs((3,))
    assert lp[4].item() == pytest.approx(math.log(2.5 / 6.0))
    assert lp[0].item() == pytest.approx(math.log(0.5 / 6.0))
    assert torch.exp(lp).sum().item() == pytest.approx(1.0)
    # Sequence-start context is BOS: 3 starts both sequences.
    assert lm.log_probs((1,))[3].item() == pytest.approx(math.log(2.5 / 5.0))
    # forward(tokens)[t] scores the token after tokens[t].
    seq = torch.tensor([[3, 4, 5]])
    logp = lm(seq)
    torch.testing.assert_close(logp[0, 0], lm.log_probs((3,)).float())
    nll = lm.nll(seq)
    want = -(lm.log_probs((3,))[4] + lm.log_probs((4,))[5]).item() / 2
    assert nll.item() == pytest.approx(want, rel=1e-5)


def test_ngram_decodes_with_generic_decoders():
    text = [3, 4, 5, 6, 2]  # deterministic trigram chain ending in EOS=2
    lm = NGramLM(vocab_size=7, n=3, bos=1).fit([text] * 5)
    out = greedy(lm, lm.start(2), 1, max_len=10, eos=2)
    assert out.tokens[0, : out.lengths[0]].tolist() == text
    b = beam_search(lm, lm.start(2), 1, max_len=10, beam_size=3, eos=2)
    assert b.tokens[1, : b.lengths[1]].tolist() == text


def test_bad_input_raises_named_errors():
    with pytest.raises(ValueError, match="window"):
        WindowMLP(WindowConfig(output_size=2, window=0, input_size=3))
    model = WindowMLP(WindowConfig(output_size=2, window=2, input_size=3))
    with pytest.raises(ValueError, match="inputs"):
        model(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="lengths"):
        model(torch.randn(2, 4, 3), torch.tensor([5, 1]))
    with pytest.raises(ValueError, match="sequences"):
        NGramLM(vocab_size=4).fit([[1, 4]])
    with pytest.raises(ValueError, match="delta"):
        NGramLM(vocab_size=4, delta=0)


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny ops: a second intra-op thread only adds synchronisation cost on a busy machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_ngram_witten_bell_matches_hand_computation():
    a, b, c = 0, 1, 2  # V = 4 with BOS = 3
    m = NGramLM(vocab_size=4, n=2, bos=3, smoothing="witten_bell").fit([[a, b, a, b]])
    # unigram: C(a)=2, C(b)=2, total 4, 2 types -> P1(a) = (2 + 2·(1/4)) / 6
    p1_a = (2 + 2 * (1 / 4)) / 6
    assert m.prob((), a) == pytest.approx(p1_a)
    # bigram after b: C(ba)=1, C(b•)=1, N1+(b•)=1 -> (1 + P1(a)) / 2
    assert m.prob((b,), a) == pytest.approx((1 + p1_a) / 2)
    # an unseen context keeps the lower order; c was never seen: only the uniform share
    assert m.prob((c,), a) == pytest.approx(p1_a)
    assert m.prob((), c) == pytest.approx(2 * (1 / 4) / 6)
    assert torch.exp(m.log_probs((a,))).sum().item() == pytest.approx(1.0)
    want = -(math.log(m.prob((a,), b)) + math.log(m.prob((b,), a))) / 2
    assert m.stream_nll([b, a], context=[a]) == pytest.approx(want)
    with pytest.raises(ValueError, match="smoothing"):
        NGramLM(vocab_size=4, smoothing="kneser_ney")
