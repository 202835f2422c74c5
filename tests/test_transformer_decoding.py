"""The Transformers under seqlab.decoding (greedy / sample / beam_search).

seqlab.decoding is written on another branch; these tests skip until both are merged. The
oracle is a full forward pass without any cache: tokens chosen by the decoders and the
log-probabilities they report must agree with it (which also checks reorder_state in beam
search, since a wrongly reordered cache changes the log-probabilities).
"""

import pytest
import torch

from seqlab.transformer import TransformerLM, TransformerSeq2Seq

decoding = pytest.importorskip("seqlab.decoding")

BOS, EOS = 1, 2


def _sharpen(model):
    # Freshly initialised models predict almost the same token everywhere; a larger output
    # layer makes the argmax depend on the context, so the comparisons below can fail.
    torch.nn.init.normal_(model.output.weight, std=2.0)
    return model


def _lm():
    return _sharpen(
        TransformerLM(9, d_model=16, nhead=2, num_layers=2, dim_feedforward=24, dropout=0.0)
    )


def _s2s():
    return _sharpen(
        TransformerSeq2Seq(
            11, 9, d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=2, dropout=0.0
        )
    )


def _full_greedy_lm(lm, prompt, steps):
    """Greedy continuation of ``prompt`` (B, P), re-running the whole sequence every step."""
    seq = prompt
    for _ in range(steps):
        nxt = lm(seq)[:, -1].argmax(-1)
        seq = torch.cat([seq, nxt.unsqueeze(1)], 1)
    return seq[:, prompt.shape[1] :]


def _teacher_forced_log_prob(model, src, lengths, tokens, n_tokens):
    """Σ log p of tokens[:n] given BOS + tokens[:n-1], by one full forward pass."""
    tgt_in = torch.cat([torch.full((1,), BOS), tokens[: n_tokens - 1]]).unsqueeze(0)
    logp = torch.log_softmax(model(src, lengths, tgt_in)[0], -1)  # (n, V)
    return logp.gather(1, tokens[:n_tokens].unsqueeze(1)).sum()


@torch.no_grad()
def test_greedy_on_lm_equals_full_forward_greedy():
    lm = _lm().eval()
    first = torch.tensor([3, 5])
    out = decoding.greedy(lm, lm.start(batch_size=2), first, 6)
    ref = _full_greedy_lm(lm, first.unsqueeze(1), 6)
    torch.testing.assert_close(out.tokens, ref)
    prompt = torch.tensor([[4, 3, 8], [7, 5, 0]])
    gen = lm.generate(prompt, 6)
    torch.testing.assert_close(gen.tokens, _full_greedy_lm(lm, prompt, 6))
    assert len(set(gen.tokens.flatten().tolist())) > 1  # not a degenerate constant output
    with pytest.raises(ValueError, match="strategy"):
        lm.generate(torch.tensor([[4]]), 3, strategy="topk")


@torch.no_grad()
def test_beam_search_on_seq2seq_scores_match_teacher_forcing():
    model = _s2s().eval()
    src = torch.tensor([[3, 4, 5, 6], [7, 8, 0, 0]])
    lengths = torch.tensor([4, 2])
    k = 4
    beam = decoding.beam_search(
        model, model.start(src, lengths), BOS, 7, beam_size=k, eos=EOS, n_best=k
    )
    assert beam.tokens.shape[:2] == (2, k)
    for b in range(2):
        for j in range(k):  # every kept hypothesis, not only the best, must be self-consistent
            n = int(beam.lengths[b, j])
            ref = _teacher_forced_log_prob(
                model, src[b : b + 1], lengths[b : b + 1], beam.tokens[b, j], n
            )
            torch.testing.assert_close(beam.log_probs[b, j], ref, atol=1e-4, rtol=1e-4)
    one = decoding.beam_search(model, model.start(src, lengths), BOS, 7, beam_size=1, eos=EOS)
    greedy = decoding.greedy(model, model.start(src, lengths), BOS, 7, eos=EOS)
    torch.testing.assert_close(one.tokens, greedy.tokens)
    via_generate = model.generate(src, lengths, max_len=7, beam_size=k)
    best = beam.tokens[:, 0, : via_generate.tokens.shape[1]]
    torch.testing.assert_close(via_generate.tokens, best)


@torch.no_grad()
def test_sampling_runs_and_respects_vocabulary():
    model = _s2s().eval()
    src = torch.tensor([[3, 4, 5]])
    out = model.generate(src, None, max_len=5, temperature=0.7)
    assert out.tokens.shape[0] == 1 and int(out.tokens.max()) < 9
