"""TransformerLM / TransformerSeq2Seq: decoding protocol (incremental == full), padding
invariance, causality, reorder_state, training to thresholds, and input errors."""

import pytest
import torch
import torch.nn.functional as F

from seqlab.transformer import (
    TransformerLM,
    TransformerLMConfig,
    TransformerSeq2Seq,
    TransformerSeq2SeqConfig,
)

PAD, BOS, EOS = 0, 1, 2


def small_lm(**kw):
    args = dict(d_model=32, nhead=4, num_layers=2, dim_feedforward=48, dropout=0.0, max_len=64)
    args.update(kw)
    return TransformerLM(11, **args).eval()


def small_s2s(**kw):
    args = dict(
        d_model=32,
        nhead=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=48,
        dropout=0.0,
        max_len=32,
    )
    args.update(kw)
    return TransformerSeq2Seq(13, 9, **args).eval()


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_lm_incremental_steps_equal_full_forward(norm_first, positional):
    lm = small_lm(norm_first=norm_first, positional=positional)
    tokens = torch.randint(0, 11, (3, 9))
    full = lm(tokens)  # (B, T, V)
    state = lm.start(batch_size=3)
    steps = []
    for t in range(9):
        logits, state = lm.step(tokens[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)
    # Starting from a prompt consumes it in one pass, then steps continue from there.
    state = lm.start(prompt=tokens[:, :4])
    logits, state = lm.step(tokens[:, 4], state)
    torch.testing.assert_close(logits, full[:, 4], atol=1e-5, rtol=1e-5)
    assert state.position == 5 and lm.state_batch_size(state) == 3


@pytest.mark.parametrize("norm_first", [True, False])
def test_lm_is_causal_and_right_padding_is_harmless(norm_first):
    lm = small_lm(norm_first=norm_first)
    emb = torch.randn(2, 7, 32, requires_grad=True)
    h, _ = lm.body.forward_with_cache(emb, is_causal=True)
    logits = lm.output(h)
    probe = torch.randn(11)
    for t in range(7):
        (g,) = torch.autograd.grad((logits[:, t] * probe).sum(), emb, retain_graph=True)
        assert torch.all(g[:, t + 1 :] == 0) and g[:, : t + 1].abs().sum() > 0
    tokens = torch.randint(1, 11, (1, 5))
    padded = torch.cat([tokens, torch.randint(0, 11, (1, 4))], dim=1)
    torch.testing.assert_close(lm(padded)[:, :5], lm(tokens), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [True, False])
def test_seq2seq_incremental_steps_equal_teacher_forcing(norm_first):
    model = small_s2s(norm_first=norm_first)
    src = torch.randint(3, 13, (3, 6))
    lengths = torch.tensor([6, 2, 4])
    src = torch.where(torch.arange(6) < lengths[:, None], src, PAD)
    tgt_in = torch.randint(0, 9, (3, 5))
    full = model(src, lengths, tgt_in)
    state = model.start(src, lengths)
    steps = []
    for t in range(5):
        logits, state = model.step(tgt_in[:, t], state)
        steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert model.state_batch_size(state) == 3


def test_seq2seq_source_padding_never_changes_outputs():
    model = small_s2s()
    tgt_in = torch.randint(0, 9, (1, 4))
    src = torch.randint(3, 13, (1, 3))
    alone = model(src, torch.tensor([3]), tgt_in)
    for filler in (PAD, 7):  # masked padding may hold any token id
        padded = torch.cat([src, torch.full((1, 5), filler)], dim=1)
        got = model(padded, torch.tensor([3]), tgt_in)
        torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5)
    # Without lengths, the mask is src != pad_id.
    padded = torch.cat([src, torch.full((1, 5), PAD)], dim=1)
    torch.testing.assert_close(model(padded, None, tgt_in), alone, atol=1e-5, rtol=1e-5)
    # Encoder outputs at valid source positions, and right-padded targets, are unchanged too.
    memory, _ = model.encode(padded, torch.tensor([3]))
    torch.testing.assert_close(memory[:, :3], model.encode(src)[0], atol=1e-5, rtol=1e-5)
    tgt_padded = torch.cat([tgt_in, torch.full((1, 3), PAD)], dim=1)
    torch.testing.assert_close(model(src, None, tgt_padded)[:, :4], alone, atol=1e-5, rtol=1e-5)


def test_loss_methods_match_cross_entropy_with_ignore_index():
    model = TransformerSeq2Seq(13, 13, d_model=16, nhead=2, dropout=0.0)
    src, lengths, tgt = reversal_batch(5, 1, 4, torch.Generator().manual_seed(0))
    tgt_lengths = lengths + 2  # BOS + digits + EOS
    logits = model(src, lengths, tgt[:, :-1])
    want = F.cross_entropy(logits.reshape(-1, 13), tgt[:, 1:].reshape(-1), ignore_index=PAD)
    batch = {"src": src, "src_lengths": lengths, "tgt": tgt, "tgt_lengths": tgt_lengths}
    torch.testing.assert_close(model.loss(batch), want)
    tgt_junk = tgt.masked_fill(tgt == PAD, 5)  # padded ids may hold anything with lengths
    torch.testing.assert_close(model.loss({**batch, "tgt": tgt_junk}), want)

    lm = small_lm()
    inputs, targets = torch.randint(0, 11, (3, 6)), torch.randint(0, 11, (3, 6))
    n = torch.tensor([6, 2, 4])
    logits = lm(inputs)
    ref = torch.stack(
        [-torch.log_softmax(logits[b, t], -1)[targets[b, t]] for b in range(3) for t in range(n[b])]
    ).mean()
    got = lm.loss({"inputs": inputs, "targets": targets, "lengths": n, "state": None})
    torch.testing.assert_close(got, ref)


def test_reorder_state_follows_rows():
    model = small_s2s()
    src = torch.randint(3, 13, (2, 4))
    lengths = torch.tensor([4, 3])
    state = model.start(src, lengths)
    _, state = model.step(torch.tensor([1, 1]), state)
    index = torch.tensor([1, 0, 1])
    logits, _ = model.step(torch.tensor([5, 6, 7]), model.reorder_state(state, index))
    ref_state = model.start(src[index], lengths[index])
    _, ref_state = model.step(torch.tensor([1, 1, 1]), ref_state)
    ref, _ = model.step(torch.tensor([5, 6, 7]), ref_state)
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)

    lm = small_lm()
    st = lm.start(prompt=torch.randint(0, 11, (2, 3)))
    got, _ = lm.step(torch.tensor([4, 4, 4]), lm.reorder_state(st, index))
    want, _ = lm.step(torch.tensor([4, 4]), st)
    torch.testing.assert_close(got, want[index], atol=1e-6, rtol=1e-5)


def test_configs_rebuild_the_models():
    lm = TransformerLM.from_config(TransformerLMConfig(vocab_size=7, d_model=16, nhead=2))
    assert lm(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, 7)
    cfg = TransformerSeq2SeqConfig(src_vocab_size=5, tgt_vocab_size=6, d_model=16, nhead=2)
    s2s = TransformerSeq2Seq.from_config(cfg)
    ones = torch.ones(2, 4, dtype=torch.long)
    assert s2s(ones, None, ones[:, :3]).shape == (2, 3, 6)
    tied = TransformerLM(7, d_model=16, nhead=2, tie_weights=True)
    assert tied.output.weight is tied.embedding.embed.weight


def test_model_input_errors_name_the_argument():
    lm = small_lm(positional="learned", max_len=8)
    with pytest.raises(ValueError, match="tokens.*max_len=8"):
        lm(torch.zeros(1, 9, dtype=torch.long))
    state = lm.start(prompt=torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="tokens.*max_len=8"):
        lm.step(torch.zeros(1, dtype=torch.long), state)
    with pytest.raises(TypeError, match="tokens"):
        lm(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="tokens"):
        lm(torch.full((1, 3), 11))
    with pytest.raises(ValueError, match="num_heads"):
        TransformerLM(5, d_model=30, nhead=4)
    with pytest.raises(ValueError, match="positional"):
        TransformerLM(5, d_model=8, nhead=2, positional="rotary")
    s2s = small_s2s(positional="learned", max_len=6)
    with pytest.raises(ValueError, match="src.*max_len=6"):
        s2s(torch.ones(1, 7, dtype=torch.long), None, torch.ones(1, 2, dtype=torch.long))
    src, tgt_in = torch.ones(2, 3, dtype=torch.long), torch.ones(2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="src_lengths"):
        s2s(src, torch.tensor([3]), tgt_in)
    with pytest.raises(ValueError, match="src_lengths"):
        s2s(src, torch.tensor([4, 1]), tgt_in)
    with pytest.raises(ValueError, match="batch_size"):
        small_lm().start()


# ---------------------------------------------------------------------- training to thresholds
@pytest.fixture
def one_thread():
    """Training tests are many tiny ops: one thread avoids OpenMP sync cost on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def reversal_batch(n, lo, hi, generator):
    """Random digit strings (ids 3..12) of length lo..hi; target = BOS reversed EOS, PAD after."""
    lengths = torch.randint(lo, hi + 1, (n,), generator=generator)
    s = int(lengths.max())
    digits = torch.randint(3, 13, (n, s), generator=generator)
    valid = torch.arange(s) < lengths[:, None]
    src = torch.where(valid, digits, PAD)
    tgt = torch.full((n, s + 2), PAD)
    tgt[:, 0] = BOS
    for i, n_i in enumerate(lengths.tolist()):
        tgt[i, 1 : n_i + 1] = src[i, :n_i].flip(0)
        tgt[i, n_i + 1] = EOS
    return src, lengths, tgt


def greedy_by_steps(model, state, first, steps):
    """Reference greedy loop over the protocol (independent of seqlab.decoding)."""
    tok, out = first, []
    for _ in range(steps):
        logits, state = model.step(tok, state)
        tok = logits.argmax(-1)
        out.append(tok)
    return torch.stack(out, 1)


def train_reversal(lo, hi, steps, d_model, lr):
    model = TransformerSeq2Seq(
        13,
        13,
        d_model=d_model,
        nhead=4,
        num_encoder_layers=2,
        num_decoder_layers=2,
        dim_feedforward=2 * d_model,
        dropout=0.0,
        max_len=32,
        pad_id=PAD,
    )
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        src, lengths, tgt = reversal_batch(64, lo, hi, gen)
        logits = model(src, lengths, tgt[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 13), tgt[:, 1:].reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    src, lengths, tgt = reversal_batch(400, lo, hi, torch.Generator().manual_seed(99))
    with torch.no_grad():
        pred = greedy_by_steps(
            model, model.start(src, lengths), torch.full((400,), BOS), tgt.shape[1] - 1
        )
    exact = [
        torch.equal(pred[i, : n + 1], tgt[i, 1 : n + 2]) for i, n in enumerate(lengths.tolist())
    ]
    return sum(exact) / len(exact)


def test_seq2seq_reverses_digit_strings(one_thread):
    # Lengths 1..6, ~300 Adam steps: about 15 s on one core.
    assert train_reversal(1, 6, 300, 32, 3e-3) >= 0.99


@pytest.mark.slow
def test_seq2seq_reverses_longer_digit_strings(one_thread):
    assert train_reversal(1, 8, 600, 48, 2e-3) >= 0.99


def test_lm_memorises_a_short_text(one_thread):
    text = "the cell state is a highway: gradients survive long spans."
    chars = sorted(set(text))
    ids = torch.tensor([[chars.index(c) for c in text]])  # (1, T)
    lm = TransformerLM(
        len(chars), d_model=48, nhead=4, num_layers=2, dim_feedforward=96, dropout=0.0, max_len=64
    )
    opt = torch.optim.Adam(lm.parameters(), lr=3e-3)
    for _ in range(150):
        logits = lm(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, len(chars)), ids[0, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    lm.eval()
    with torch.no_grad():
        assert F.cross_entropy(lm(ids[:, :-1])[0], ids[0, 1:]).item() < 0.05
        out = greedy_by_steps(lm, lm.start(batch_size=1), ids[:, 0], ids.shape[1] - 1)
    assert "".join(chars[i] for i in out[0].tolist()) == text[1:]
