import pytest
import torch

from seqlab.decoding import beam_search, greedy
from seqlab.models import Generator, GeneratorConfig

PAD, BOS, EOS, V = 0, 1, 2, 9
# One fixed token sequence per one-hot code (varied lengths, shared prefixes, repeats).
SEQS = [[3, 4, 5, 6], [3, 4, 7], [8, 8, 8, 8, 5], [6]]


def code_batch():
    K = len(SEQS)
    T = max(len(s) for s in SEQS) + 2
    tgt = torch.zeros(K, T, dtype=torch.long)
    for k, s in enumerate(SEQS):
        tgt[k, : len(s) + 2] = torch.tensor([BOS, *s, EOS])
    lengths = torch.tensor([len(s) + 2 for s in SEQS])
    return {"cond": torch.eye(K), "tgt": tgt, "tgt_lengths": lengths}


@pytest.mark.parametrize(
    "feedback,condition,init_state,cell",
    [
        ("previous", "first", False, "gru"),
        ("zeros", "first", False, "gru"),
        ("zeros", "none", True, "lstm"),
        ("previous", "every", True, "rnn"),
    ],
)
def test_emits_fixed_sequence_from_one_hot_code(feedback, condition, init_state, cell):
    cfg = GeneratorConfig(
        cond_size=len(SEQS),
        vocab_size=V,
        embed_size=8,
        hidden_size=24,
        cell=cell,
        feedback=feedback,
        condition=condition,
        init_state=init_state,
    )
    model = Generator(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = code_batch()
    for _ in range(200):
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = model.eval().generate(batch["cond"], max_len=8)
    for k, s in enumerate(SEQS):
        assert out.tokens[k, : out.lengths[k]].tolist() == [*s, EOS]


@pytest.mark.parametrize("feedback", ["previous", "zeros"])
def test_incremental_equals_forward_and_feedback_semantics(feedback):
    cfg = GeneratorConfig(
        cond_size=3,
        vocab_size=V,
        embed_size=4,
        hidden_size=6,
        feedback=feedback,
        condition="first",
        num_layers=2,
        cell="lstm",
    )
    model = Generator(cfg).eval()
    cond = torch.randn(2, 3)
    tgt_in = torch.randint(0, V, (2, 5))
    logits = model(cond, tgt_in)
    state = model.start(cond)
    for t in range(5):
        z, state = model.step(tgt_in[:, t], state)
        torch.testing.assert_close(z, logits[:, t])
    other = model(cond, torch.randint(0, V, (2, 5)))
    if feedback == "zeros":  # the fed tokens must not matter at all
        torch.testing.assert_close(other, logits)
    else:
        assert not torch.allclose(other[:, 1:], logits[:, 1:])
    # The generated tokens, teacher-forced back in, are the argmax of each step.
    g = greedy(model, model.start(cond), BOS, 5)
    fed = torch.cat([torch.full((2, 1), BOS), g.tokens[:, :-1]], 1)
    assert torch.equal(model(cond, fed).argmax(-1), g.tokens)
    b = beam_search(model, model.start(cond), BOS, 5, beam_size=1)
    assert torch.equal(b.tokens, g.tokens)


def test_bad_input_raises_named_errors():
    model = Generator(GeneratorConfig(cond_size=3, vocab_size=V))
    with pytest.raises(ValueError, match="cond"):
        model.start(torch.randn(2, 4))
    with pytest.raises(ValueError, match="tgt_in"):
        model(torch.randn(2, 3), torch.full((2, 3), V))
    with pytest.raises(ValueError, match="max_len"):
        model.generate(torch.randn(2, 3), max_len=0)
    with pytest.raises(ValueError, match="beam_size"):
        model.generate(torch.randn(2, 3), max_len=3, strategy="beam", beam_size=0)
    with pytest.raises(ValueError, match="feedback"):
        Generator(GeneratorConfig(cond_size=3, vocab_size=V, feedback="output"))


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny ops: a second intra-op thread only adds synchronisation cost on a busy machine.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
