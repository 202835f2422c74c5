import itertools
import math

import pytest
import torch

from seqlab.decoding import beam_search, filter_logits, greedy, sample, select_rows


class TableModel:
    """Toy decodable model: logits = table[t, prev_token]; state = (step counter (B,), tag)."""

    def __init__(self, table):
        self.table = table  # (T, V, V)

    def start(self, batch):
        return (torch.zeros(batch, dtype=torch.long), torch.arange(batch))

    def step(self, tokens, state):
        t, tag = state
        logits = self.table[t.clamp(max=self.table.shape[0] - 1), tokens]
        return logits, (t + 1, tag)

    def reorder_state(self, state, index):
        return select_rows(state, index)


def _seq_logp(table, bos, seq):
    lp, prev = 0.0, bos
    for t, y in enumerate(seq):
        lp += torch.log_softmax(table[min(t, table.shape[0] - 1), prev], -1)[y].item()
        prev = y
    return lp


def _brute_force(table, bos, max_len, eos, alpha):
    V = table.shape[-1]
    best, best_seq = -math.inf, None
    for L in range(1, max_len + 1):
        for seq in itertools.product(range(V), repeat=L):
            if eos in seq[:-1]:
                continue
            if max_len > L and seq[-1] != eos:
                continue
            s = _seq_logp(table, bos, seq) / L**alpha
            if s > best:
                best, best_seq = s, list(seq)
    return best, best_seq


def test_greedy_matches_hand_loop():
    table = torch.randn(6, 5, 5)
    m = TableModel(table)
    out = greedy(m, m.start(3), torch.tensor([0, 1, 2]), max_len=6, eos=4, pad=0)
    for b, start in enumerate([0, 1, 2]):
        prev, seq, lp = start, [], 0.0
        for t in range(6):
            logp = torch.log_softmax(table[t, prev], -1)
            y = int(logp.argmax())
            seq.append(y)
            lp += logp[y].item()
            prev = y
            if y == 4:
                break
        assert out.lengths[b].item() == len(seq)
        assert out.tokens[b, : len(seq)].tolist() == seq
        assert torch.all(out.tokens[b, len(seq) :] == 0)
        assert out.log_probs[b].item() == pytest.approx(lp, abs=1e-5)


@pytest.mark.parametrize("eos", [None, 3])
def test_beam_one_equals_greedy(eos):
    torch.manual_seed(1)
    table = torch.randn(8, 6, 6)
    m = TableModel(table)
    bos = torch.tensor([0, 1, 2, 5])
    g = greedy(m, m.start(4), bos, max_len=8, eos=eos)
    b = beam_search(m, m.start(4), bos, max_len=8, beam_size=1, eos=eos, length_penalty=0.7)
    assert torch.equal(g.tokens, b.tokens)
    assert torch.equal(g.lengths, b.lengths)
    torch.testing.assert_close(g.log_probs, b.log_probs)


def test_beam_beats_greedy_on_constructed_case():
    # From BOS=0: token 1 (p=.6) then a flat distribution over 10 tokens; token 2 (p=.4) then
    # EOS=3 with p≈1. Greedy takes 1 → log(.6·.1); beam finds 2,3 → log(.4).
    V = 10
    table = torch.full((3, V, V), -30.0)
    table[0, 0, 1], table[0, 0, 2] = math.log(0.6), math.log(0.4)
    table[1, 1, :] = 0.0  # uniform after token 1
    table[1, 2, 3] = 0.0  # EOS after token 2
    table[2, :, 3] = 0.0
    m = TableModel(table)
    g = greedy(m, m.start(1), 0, max_len=3, eos=3)
    b = beam_search(m, m.start(1), 0, max_len=3, beam_size=2, eos=3, length_penalty=0.0)
    assert g.tokens[0, 0].item() == 1
    assert b.tokens[0].tolist()[:2] == [2, 3]
    assert b.log_probs[0].item() > g.log_probs[0].item() + 0.5
    assert b.log_probs[0].item() == pytest.approx(math.log(0.4), abs=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_is_exhaustive(alpha):
    torch.manual_seed(2)
    V, L, eos = 4, 4, 3
    table = torch.randn(L, V, V) * 2
    m = TableModel(table)
    res = beam_search(m, m.start(1), 0, max_len=L, beam_size=V**L, eos=eos, length_penalty=alpha)
    best, seq = _brute_force(table, 0, L, eos, alpha)
    assert res.scores[0].item() == pytest.approx(best, abs=1e-4)
    assert res.tokens[0, : res.lengths[0]].tolist() == seq


def test_beam_batched_equals_per_row_and_n_best_sorted():
    torch.manual_seed(3)
    table = torch.randn(7, 6, 6)
    m = TableModel(table)
    bos = torch.tensor([0, 4, 2])
    full = beam_search(m, m.start(3), bos, max_len=7, beam_size=3, eos=5, n_best=3)
    assert full.tokens.shape[:2] == (3, 3)
    assert torch.all(full.scores[:, :-1] >= full.scores[:, 1:])
    for i in range(3):
        one = beam_search(m, m.start(1), bos[i : i + 1], max_len=7, beam_size=3, eos=5, n_best=3)
        torch.testing.assert_close(one.scores[0], full.scores[i])
        for k in range(3):
            n = one.lengths[0, k]
            assert one.tokens[0, k, :n].tolist() == full.tokens[i, k, :n].tolist()
            # Score bookkeeping is the true log-probability of the returned sequence.
            lp = _seq_logp(table, int(bos[i]), full.tokens[i, k, :n].tolist())
            assert full.log_probs[i, k].item() == pytest.approx(lp, abs=1e-4)
            assert full.scores[i, k].item() == pytest.approx(lp / int(n), abs=1e-4)


def test_sampling_top_k_one_is_greedy_and_frequencies_match():
    torch.manual_seed(4)
    table = torch.randn(5, 4, 4)
    m = TableModel(table)
    g = greedy(m, m.start(2), torch.tensor([0, 1]), max_len=5)
    s = sample(m, m.start(2), torch.tensor([0, 1]), max_len=5, top_k=1)
    assert torch.equal(g.tokens, s.tokens)
    s = sample(m, m.start(2), torch.tensor([0, 1]), max_len=5, top_p=1e-6)
    assert torch.equal(g.tokens, s.tokens)
    # First-token frequencies with temperature 2 follow softmax(z / 2).
    n = 20000
    gen = torch.Generator().manual_seed(0)
    s = sample(m, m.start(n), 0, max_len=1, temperature=2.0, generator=gen)
    freq = torch.bincount(s.tokens[:, 0], minlength=4).float() / n
    expected = torch.softmax(table[0, 0] / 2.0, -1)
    torch.testing.assert_close(freq, expected, atol=0.015, rtol=0)


def test_filter_logits_against_hand_computation():
    z = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    k2 = filter_logits(z, top_k=2)
    assert torch.isinf(k2[0, [0, 3]]).all() and torch.equal(k2[0, [1, 2]], z[0, [1, 2]])
    p = torch.softmax(z, -1)[0]  # sorted: idx1 .665, idx2 .245, idx0 .09, idx3 .03
    keep = filter_logits(z, top_p=float(p[1] + 0.01))
    assert torch.isfinite(keep[0]).tolist() == [False, True, True, False]
    keep = filter_logits(z, top_p=float(p[1] - 0.01))
    assert torch.isfinite(keep[0]).tolist() == [False, True, False, False]


def test_eos_freezes_rows_and_stops():
    table = torch.zeros(4, 3, 3)
    table[:, :, 2] = 10.0  # always EOS=2
    m = TableModel(table)
    g = greedy(m, m.start(2), 0, max_len=10, eos=2)
    assert g.tokens.shape == (2, 1) and g.lengths.tolist() == [1, 1]
    b = beam_search(m, m.start(2), 0, max_len=10, beam_size=2, eos=2)
    assert b.lengths.tolist() == [1, 1] and b.tokens[:, 0].tolist() == [2, 2]


def test_bad_arguments_name_themselves():
    m = TableModel(torch.randn(2, 3, 3))
    with pytest.raises(ValueError, match="max_len"):
        greedy(m, m.start(1), 0, max_len=0)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(m, m.start(1), 0, max_len=3, beam_size=0)
    with pytest.raises(ValueError, match="n_best"):
        beam_search(m, m.start(1), 0, max_len=3, beam_size=2, n_best=3)
    with pytest.raises(ValueError, match="temperature"):
        sample(m, m.start(1), 0, max_len=3, temperature=0.0)
    with pytest.raises(ValueError, match="top_k"):
        sample(m, m.start(1), 0, max_len=3, top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        sample(m, m.start(1), 0, max_len=3, top_p=1.5)
    with pytest.raises(ValueError, match="bos"):
        greedy(m, m.start(1), torch.zeros(1, 1, dtype=torch.long), max_len=3)


def test_normalised_ranking_keeps_longer_hypotheses_alive():
    # K = 2, α = 1. Step 1: EOS (p=.26) or 2 (p=.74). Step 2 from 2: 4 (p=.333), 5 (p=.301).
    # Ranked by raw log-prob the early EOS (−1.35) would push out "2 5" (−1.5), whose
    # continuation EOS (p≈1) is the best normalised hypothesis: −1.5 / 3 = −0.5.
    V, eos = 6, 1
    table = torch.full((3, V, V), -30.0)
    table[0, 0, eos], table[0, 0, 2] = math.log(0.26), math.log(0.74)
    for tok, p in ((4, 0.333), (5, 0.301), (eos, 0.2), (3, 0.166)):
        table[1, 2, tok] = math.log(p)
    table[2, 4, :] = 0.0  # uniform after 4
    table[2, 5, eos] = 0.0  # EOS after 5
    m = TableModel(table)
    res = beam_search(m, m.start(1), 0, max_len=3, beam_size=2, eos=eos, length_penalty=1.0)
    best, seq = _brute_force(table, 0, 3, eos, 1.0)
    assert seq == [2, 5, eos]
    assert res.tokens[0, : res.lengths[0]].tolist() == seq
    assert res.scores[0].item() == pytest.approx(best, abs=1e-4)
