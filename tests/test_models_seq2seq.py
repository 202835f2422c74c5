import pytest
import torch

from seqlab.decoding import beam_search, greedy
from seqlab.functional.cells import LSTMState
from seqlab.models import Seq2Seq, Seq2SeqConfig

PAD, BOS, EOS, V = 0, 1, 2, 13  # digits are ids 3..12


def reversal_batch(B, lo=1, hi=6, generator=None):
    """Digit strings of lengths lo..hi and their reversals in the Seq2Seq batch convention."""
    n = torch.randint(lo, hi + 1, (B,), generator=generator)
    S = int(n.max())
    digits = torch.randint(3, V, (B, S), generator=generator)
    t = torch.arange(S).unsqueeze(0)
    valid = t < n.unsqueeze(1)  # (B, S)
    src = digits * valid
    # Reversed digit j of row b is digit n_b - 1 - j; gather within the valid prefix.
    rev = src.gather(1, (n.unsqueeze(1) - 1 - t).clamp(min=0)) * valid
    tgt = torch.zeros(B, S + 2, dtype=torch.long)
    tgt[:, 0] = BOS
    tgt[:, 1 : S + 1] = rev
    tgt[torch.arange(B), n + 1] = EOS
    return {"src": src, "src_lengths": n, "tgt": tgt, "tgt_lengths": n + 2}


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny ops: a second intra-op thread only adds synchronisation cost on a busy machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def exact_match(model, batch, **kw):
    out = model.generate(batch["src"], batch["src_lengths"], max_len=9, **kw)
    hits = 0
    for b in range(batch["src"].shape[0]):
        n = int(batch["tgt_lengths"][b]) - 1  # digits + EOS
        want = batch["tgt"][b, 1 : n + 1].tolist()
        hits += int(out.lengths[b]) == n and out.tokens[b, :n].tolist() == want
    return hits / batch["src"].shape[0]


def train_reversal(config, steps, batch=64):
    model = Seq2Seq(config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    # Linear decay to 0: the last steps refine instead of bouncing around at lr 1e-2.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)
    for _ in range(steps):
        loss = model.loss(reversal_batch(batch))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    return model.eval()


@pytest.mark.parametrize(
    "attention,cell,steps",
    [("additive", "gru", 300), ("dot", "lstm", 300), ("general", "gru", 300)],
)
def test_reverses_digit_strings(attention, cell, steps):
    cfg = Seq2SeqConfig(
        V,
        V,
        embed_size=16,
        hidden_size=48,
        attention=attention,
        encoder_cell=cell,
        decoder_cell=cell,
    )
    model = train_reversal(cfg, steps)
    test = reversal_batch(400, generator=torch.Generator().manual_seed(123))
    assert exact_match(model, test) >= 0.99
    if attention == "additive":  # batched beam search decodes the trained model as well
        assert exact_match(model, test, beam_size=3) >= 0.99


@pytest.mark.slow
def test_reverses_digit_strings_without_attention():
    cfg = Seq2SeqConfig(V, V, embed_size=16, hidden_size=64, attention="none")
    model = train_reversal(cfg, 1500)
    test = reversal_batch(400, generator=torch.Generator().manual_seed(123))
    assert exact_match(model, test) >= 0.99


VARIANTS = [
    dict(attention="none", encoder_cell="rnn", decoder_cell="gru"),
    dict(
        attention="additive",
        encoder_cell="lstm",
        decoder_cell="lstm",
        bidirectional=True,
        decoder_layers=2,
        encoder_layers=2,
    ),
    dict(attention="dot", encoder_cell="gru", decoder_cell="lstm", reverse_source=True),
    dict(
        attention="general",
        encoder_cell="lstm",
        decoder_cell="gru",
        bidirectional=True,
        decoder_hidden_size=24,
        bridge="linear",
    ),
]


def _model(**kw):
    return Seq2Seq(Seq2SeqConfig(V, V, embed_size=8, hidden_size=16, **kw)).eval()


@pytest.mark.parametrize("kw", VARIANTS)
def test_incremental_decoding_equals_teacher_forced_forward(kw):
    model = _model(**kw)
    batch = reversal_batch(5)
    tgt_in = batch["tgt"][:, :-1]
    logits, attn = model(batch["src"], batch["src_lengths"], tgt_in)
    state = model.start(batch["src"], batch["src_lengths"])
    for t in range(tgt_in.shape[1]):
        z, state = model.step(tgt_in[:, t], state)
        torch.testing.assert_close(z, logits[:, t])


@pytest.mark.parametrize("kw", VARIANTS)
def test_padded_batch_equals_rows_alone(kw):
    model = _model(**kw)
    batch = reversal_batch(4, lo=1, hi=5)
    logits, attn = model(batch["src"], batch["src_lengths"], batch["tgt"][:, :-1])
    for b in range(4):
        n = int(batch["src_lengths"][b])
        m = int(batch["tgt_lengths"][b]) - 1
        one, one_attn = model(batch["src"][b : b + 1, :n], None, batch["tgt"][b : b + 1, :m])
        torch.testing.assert_close(logits[b : b + 1, :m], one, atol=1e-5, rtol=1e-4)
        if attn is not None:
            torch.testing.assert_close(attn[b : b + 1, :m, :n], one_attn, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["additive", "dot", "general"])
def test_attention_weights_sum_to_one_and_zero_on_padding(kind):
    model = _model(attention=kind, reverse_source=kind == "dot")
    batch = reversal_batch(6, lo=1, hi=6)
    _, attn = model(batch["src"], batch["src_lengths"], batch["tgt"][:, :-1])
    S = batch["src"].shape[1]
    valid = torch.arange(S).unsqueeze(0) < batch["src_lengths"].unsqueeze(1)  # (B, S)
    valid = valid.unsqueeze(1).expand_as(attn)
    assert torch.all(attn[~valid] == 0.0)
    torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:2]))
    assert torch.all(attn[valid] > 0)


def test_attention_scores_match_formulas():
    torch.manual_seed(1)
    from seqlab.models import Attention

    q, mem = torch.randn(2, 5), torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    add = Attention("additive", 5, 4, 6)
    e = torch.einsum(
        "a,bsa->bs",
        add.v.weight[0],
        torch.tanh((q @ add.w_q.weight.T).unsqueeze(1) + mem @ add.w_m.weight.T + add.w_m.bias),
    )
    e = e.masked_fill(~mask, -1e9)
    ctx, w = add(q, add.prepare(mem), mem, mask)
    torch.testing.assert_close(w, torch.softmax(e, -1))
    torch.testing.assert_close(ctx, (torch.softmax(e, -1).unsqueeze(-1) * mem).sum(1))
    gen = Attention("general", 5, 4)
    e = torch.einsum("bq,qm,bsm->bs", q, gen.w.weight, mem).masked_fill(~mask, -1e9)
    _, w = gen(q, gen.prepare(mem), mem, mask)
    torch.testing.assert_close(w, torch.softmax(e, -1))
    dot = Attention("dot", 4, 4)
    q4 = torch.randn(2, 4)
    _, w = dot(q4, dot.prepare(mem), mem, None)
    torch.testing.assert_close(w, torch.softmax(torch.einsum("bm,bsm->bs", q4, mem), -1))


def test_identity_bridge_copies_encoder_state_per_layer():
    model = _model(
        attention="none",
        encoder_cell="lstm",
        decoder_cell="lstm",
        bidirectional=True,
        encoder_layers=2,
        decoder_layers=2,
    )
    assert model.bridge == "identity"
    batch = reversal_batch(3)
    state = model.start(batch["src"], batch["src_lengths"])
    _, final = model.encoder(model.src_embed(batch["src"]), batch["src_lengths"])
    assert isinstance(state.rnn, LSTMState)
    for layer in range(2):
        want_h = torch.cat([final.h[2 * layer], final.h[2 * layer + 1]], -1)
        torch.testing.assert_close(state.rnn.h[layer], want_h)
        want_c = torch.cat([final.c[2 * layer], final.c[2 * layer + 1]], -1)
        torch.testing.assert_close(state.rnn.c[layer], want_c)


def test_beam_search_on_seq2seq():
    model = _model(attention="additive")
    batch = reversal_batch(4)
    state = model.start(batch["src"], batch["src_lengths"])
    g = greedy(model, state, BOS, 7, eos=EOS)
    b = beam_search(model, state, BOS, 7, beam_size=1, eos=EOS)
    assert torch.equal(g.tokens, b.tokens)
    wide = model.generate(
        batch["src"], batch["src_lengths"], max_len=7, beam_size=4, length_penalty=0.0
    )
    # With α = 0 the wide beam never returns a less likely sequence than greedy.
    assert torch.all(wide.log_probs >= g.log_probs - 1e-5)
    nbest = model.generate(batch["src"], batch["src_lengths"], max_len=7, beam_size=4, n_best=3)
    assert nbest.tokens.shape[:2] == (4, 3)
    assert torch.all(nbest.scores[:, :-1] >= nbest.scores[:, 1:])


def test_scheduled_sampling_ratio():
    model = _model(attention="dot")
    batch = reversal_batch(3)
    tgt_in = batch["tgt"][:, :-1]
    full, _ = model(batch["src"], batch["src_lengths"], tgt_in, teacher_forcing=1.0)
    free, _ = model(batch["src"], batch["src_lengths"], tgt_in, teacher_forcing=0.0)
    # Ratio 0 feeds back the model's own argmax: identical to greedy decoding's logits.
    state = model.start(batch["src"], batch["src_lengths"])
    tok = tgt_in[:, 0]
    for t in range(tgt_in.shape[1]):
        z, state = model.step(tok, state)
        torch.testing.assert_close(z, free[:, t])
        tok = z.argmax(-1)
    torch.testing.assert_close(full[:, 0], free[:, 0])
    with pytest.raises(ValueError, match="teacher_forcing"):
        model(batch["src"], batch["src_lengths"], tgt_in, teacher_forcing=1.5)


def test_bad_input_raises_named_errors():
    model = _model(attention="additive")
    batch = reversal_batch(3, lo=2, hi=4)
    src, n = batch["src"], batch["src_lengths"]
    with pytest.raises(ValueError, match="src"):
        model.start(src + V, n)
    with pytest.raises(ValueError, match="src_lengths"):
        model.start(src, n + 10)
    with pytest.raises(ValueError, match="src_lengths"):
        model.start(src, n[:2])
    with pytest.raises(TypeError, match="src"):
        model.start(src.float(), n)
    with pytest.raises(ValueError, match="max_len"):
        model.generate(src, n, max_len=0)
    with pytest.raises(ValueError, match="beam_size"):
        model.generate(src, n, max_len=5, beam_size=0)
    with pytest.raises(ValueError, match="tgt_in"):
        model(src, n, torch.full((3, 4), V))
    with pytest.raises(ValueError, match="dot attention.*decoder_hidden_size"):
        Seq2Seq(Seq2SeqConfig(V, V, hidden_size=16, decoder_hidden_size=8, attention="dot"))
    with pytest.raises(ValueError, match="bridge='identity'"):
        Seq2Seq(Seq2SeqConfig(V, V, hidden_size=16, decoder_hidden_size=8, bridge="identity"))
    with pytest.raises(ValueError, match="encoder_cell"):
        Seq2Seq(Seq2SeqConfig(V, V, encoder_cell="transformer"))


def test_reverse_source_feeds_the_encoder_reversed_rows():
    model = _model(attention="additive", reverse_source=True)
    batch = reversal_batch(3, lo=2, hi=5)
    src, n = batch["src"], batch["src_lengths"]
    state = model.start(src, n)
    for b in range(3):
        k = int(n[b])
        flipped = src[b : b + 1, :k].flip(1)
        memory, _ = model.encoder(model.src_embed(flipped))
        # Memory comes back in source order: position j holds the encoding of src[b, j].
        torch.testing.assert_close(state.memory[b : b + 1, :k], memory.flip(1))


@pytest.mark.parametrize("kind", ["none", "additive", "general"])
def test_decoder_matches_hand_written_equations(kind):
    """An independent re-implementation of the module docstring's equations with torch.nn
    (GRU encoder, GRUCell decoder, weights copied) gives the same logits and weights."""
    model = _model(attention=kind)
    E, H = 8, 16
    enc = torch.nn.GRU(E, H, batch_first=True)
    enc.load_state_dict(model.encoder.rnn.state_dict())
    extra = {"none": 0, "additive": H, "general": H}[kind]
    cell = torch.nn.GRUCell(E + extra, H)
    cell.load_state_dict(model.decoder.cells[0].state_dict())
    batch = reversal_batch(1, lo=4, hi=4)
    src, tgt_in = batch["src"], batch["tgt"][:, :-1]
    logits, attn = model(src, None, tgt_in)
    with torch.no_grad():
        memory, h = enc(model.src_embed(src))  # (1, S, H), (1, 1, H)
        m, s, o = memory[0], h[0], torch.zeros(1, H)
        for t in range(tgt_in.shape[1]):
            e = model.tgt_embed(tgt_in[:, t])
            if kind == "none":
                s = cell(e, s)
                o = s
            elif kind == "additive":
                a = model.attention
                score = a.v(torch.tanh(a.w_q(s) + a.w_m(m))).T  # (1, S): vᵀ tanh(W_q s + W_m m)
                w = torch.softmax(score, -1)
                c = w @ m
                s = cell(torch.cat([e, c], -1), s)
                o = torch.tanh(model.combine(torch.cat([s, c], -1)))
            else:
                s = cell(torch.cat([e, o], -1), s)
                score = s @ model.attention.w.weight @ m.T  # sᵀ W m_j
                w = torch.softmax(score, -1)
                c = w @ m
                o = torch.tanh(model.combine(torch.cat([s, c], -1)))
            torch.testing.assert_close(logits[:, t], model.out(o))
            if kind != "none":
                torch.testing.assert_close(attn[:, t], w)


@pytest.mark.parametrize(
    ("cell", "attention"), [("lstm", "general"), ("gru", "dot"), ("rnn", "none")]
)
def test_without_input_feeding_steps_equal_teacher_forcing_and_impls_agree(cell, attention):
    """input_feeding=False runs the decoder layer over all steps at once; stepping it one token
    at a time must give the same logits, and torch.nn's layers (impl="torch") loaded with the
    same state_dict must give the same outputs as seqlab's."""
    outs, weights = [], {}
    for impl in ("seqlab", "torch"):
        torch.manual_seed(0)
        cfg = Seq2SeqConfig(9, 7, 6, 4, encoder_cell=cell, decoder_cell=cell, bidirectional=True,
                            attention=attention, input_feeding=False, impl=impl)  # fmt: skip
        model = Seq2Seq(cfg).eval()
        if outs:
            model.load_state_dict(weights)
        weights = model.state_dict()
        src = torch.tensor([[4, 5, 6, 7], [8, 4, 0, 0]])
        lengths = torch.tensor([4, 2])
        tgt = torch.tensor([[1, 3, 4, 5], [1, 6, 3, 4]])
        full, attn = model(src, lengths, tgt)
        state = model.start(src, lengths)
        for t in range(4):
            logits, state = model.step(tgt[:, t], state)
            torch.testing.assert_close(logits, full[:, t])
        if attention != "none":
            assert torch.all(attn[1, :, 2:] == 0)  # padded source steps get no weight
        outs.append(full)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="input_feeding"):
        Seq2Seq(Seq2SeqConfig(9, 7, attention="additive", input_feeding=False))
