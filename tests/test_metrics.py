"""Metrics against hand-computed answers (worked out in the comments)."""

import math

import pytest
import torch

from seqlab import metrics as M


def test_accuracy_from_labels_and_logits():
    target = torch.tensor([0, 0, 1, 1, 2])
    pred = torch.tensor([0, 1, 1, 1, 0])  # right at positions 0, 2, 3 -> 3/5
    assert M.accuracy(pred, target) == pytest.approx(0.6)
    logits = torch.nn.functional.one_hot(pred, 3).float() * 5.0
    assert M.accuracy(logits, target) == pytest.approx(0.6)
    # ignoring class 2 leaves 4 positions, 3 right
    assert M.accuracy(pred, target, ignore_index=2) == pytest.approx(0.75)


def test_macro_f1_hand_worked():
    target = torch.tensor([0, 0, 1, 1, 2])
    pred = torch.tensor([0, 1, 1, 1, 0])
    # class 0: TP=1 FP=1 FN=1 -> 2/4 ; class 1: TP=2 FP=1 FN=0 -> 4/5 ; class 2: TP=0 FN=1 -> 0
    assert M.macro_f1(pred, target) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert M.macro_f1(target, target) == pytest.approx(1.0)


def test_perplexity_and_bits_per_char_of_uniform_model():
    V = 4
    logits = torch.zeros(3, 5, V)  # uniform: nll = ln 4 per token
    target = torch.randint(0, V, (3, 5))
    nll = M.mean_nll(logits, target)
    assert nll == pytest.approx(math.log(4))
    assert M.perplexity(nll) == pytest.approx(4.0)
    assert M.bits_per_char(nll) == pytest.approx(2.0)


def test_regression_errors():
    pred, target = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 5.0])
    # errors 1, 0, 2
    assert M.mae(pred, target) == pytest.approx(1.0)
    assert M.rmse(pred, target) == pytest.approx(math.sqrt(5 / 3))
    assert M.mape(pred, target) == pytest.approx(100 * (1 / 2 + 0 + 2 / 5) / 3)
    with pytest.raises(ValueError, match="zero targets"):
        M.mape(pred, torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="pred"):
        M.mae(pred, target[:2])


@pytest.mark.parametrize(
    ("ref", "hyp", "d"),
    [("kitten", "sitting", 3), ("flaw", "lawn", 2), ("", "abc", 3), ("abc", "", 3),
     ("same", "same", 0), ("ab", "ba", 2)],
)  # fmt: skip
def test_edit_distance_known_answers(ref, hyp, d):
    assert M.edit_distance(ref, hyp) == d


def test_word_char_phoneme_error_rates():
    # sat->sit substitution + deleted "the": 2 edits over 6 reference words
    refs, hyps = ["the cat sat on the mat"], ["the cat sit on mat"]
    assert M.word_error_rate(refs, hyps) == pytest.approx(2 / 6)
    # kitten->sitting 3 edits over 6 chars, plus "ab"->"ab" 0 over 2 -> 3/8
    assert M.char_error_rate(["kitten", "ab"], ["sitting", "ab"]) == pytest.approx(3 / 8)
    # phonemes: K AE T -> K AH T (one substitution) over 3
    assert M.error_rate([["K", "AE", "T"]], [["K", "AH", "T"]]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="hyps"):
        M.error_rate([["a"]], [])


def test_exact_match():
    assert M.exact_match([[1, 2], [3]], [[1, 2], [4]]) == pytest.approx(0.5)


def test_bleu_hand_worked():
    ref = ["the", "cat", "is", "on", "the", "mat"]
    hyp = ["the", "cat", "sat", "on", "the", "mat"]
    # unigrams 5/6 (sat unmatched), bigrams 3/5 (the cat, on the, the mat), BP = 1 (c = r = 6)
    assert M.bleu([hyp], [[ref]], max_n=2) == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    # no 4-gram matches -> 0 unsmoothed; smoothed p2..p4 = 4/6, 2/5, 1/4 -> (1/18)^(1/4)
    assert M.bleu([hyp], [[ref]]) == 0.0
    assert M.bleu([hyp], [[ref]], smooth=True) == pytest.approx((1 / 18) ** 0.25)
    # brevity penalty: c = 2, r = 6 -> exp(1 - 3); precisions 1
    assert M.bleu([["the", "cat"]], [[ref]], max_n=2) == pytest.approx(math.exp(-2))


def test_bleu_clipping_papineni_example():
    # Papineni et al.: "the" x7 against two references -> clipped unigram precision 2/7;
    # closest reference length is 7 (second ref) so BP = 1
    hyp = ["the"] * 7
    refs = [
        ["the", "cat", "is", "on", "the", "mat"],
        ["there", "is", "a", "cat", "on", "the", "mat"],
    ]
    assert M.bleu([hyp], [refs], max_n=1) == pytest.approx(2 / 7)
    assert M.bleu([hyp, hyp], [refs, refs], max_n=1) == pytest.approx(2 / 7)
