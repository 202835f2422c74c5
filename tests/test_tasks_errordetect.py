"""Per-word error detection: the corruption rules by hand, P/R/F0.5 known answers, the n-gram
surprise, and the ``errordetect`` task through the real CLI."""

import json
import math
import random

import pytest
from click.testing import CliRunner

from seqlab.cli import main
from seqlab.data import Vocab
from seqlab.models import NGramLM
from seqlab.tasks.errordetect import (
    Corrupted,
    ErrorDetectConfig,
    ErrorDetectTask,
    applicable,
    apply_error,
    best_threshold,
    corrupt,
    prf,
)


def cli(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize(
    ("kind", "words", "i", "want", "tags"),
    [
        ("swap", "a b c d", 1, "a c b d", [0, 1, 1, 0]),
        ("deletion", "a b c d", 1, "a c d", [0, 1, 0]),
        ("duplication", "a b c d", 1, "a b b c d", [0, 0, 1, 0, 0]),
        ("frequent", "a b c d", 2, "a b the d", [0, 0, 1, 0]),
        ("agreement", "it is fun", 1, "it are fun", [0, 1, 0]),
        ("confusable", "over their heads", 1, None, [0, 1, 0]),
    ],
)
def test_each_error_kind_by_hand(kind, words, i, want, tags):
    out, t = words.split(), [0] * len(words.split())
    assert kind in applicable(out, t, i, ["the"])
    apply_error(kind, out, t, i, random.Random(0), ["the"])
    if want is None:  # their -> there or they're
        assert out[1] in ("there", "they're") and out[::2] == ["over", "heads"]
    else:
        assert out == want.split()
    assert t == tags


def test_kinds_apply_only_where_they_can():
    assert applicable(["b", "b"], [0, 0], 0, ["x"]) == ["duplication", "frequent"]  # equal pair
    assert "deletion" not in applicable(["a", "b"], [0, 0], 0, ["x"])  # would leave one word
    assert "swap" not in applicable(["a", "b", "c"], [0, 1, 0], 0, ["x"])  # neighbour tagged
    assert set(applicable(["is", "x", "y"], [0, 0, 0], 0, [])) == {
        "swap", "deletion", "duplication", "agreement",
    }  # fmt: skip


def test_corrupt_keeps_words_and_tags_consistent():
    rng = random.Random(3)
    words = [
        "the",
        "film",
        "is",
        "a",
        "sort",
        "of",
        "epiphany",
        "about",
        "their",
        "lives",
        "and",
        "its",
        "end",
    ]
    seen = set()
    for _ in range(300):
        out, tags, kinds = corrupt(words, rng, 0.15, ["the", "a", "of"])
        seen |= set(kinds)
        assert (
            len(out)
            == len(tags)
            == len(words) + kinds.count("duplication") - kinds.count("deletion")
        )
        assert sum(tags) >= len(kinds)  # every error tags at least one word
        assert (sum(tags) == 0) == (out == words)
    assert seen == {"swap", "deletion", "duplication", "frequent", "confusable", "agreement"}


def test_prf_and_threshold_known_answers():
    got = prf([0.9, 0.8, 0.1, 0.7], [1, 0, 1, 1], 0.5)  # tp 2, fp 1, fn 1
    assert got["precision"] == pytest.approx(2 / 3) and got["recall"] == pytest.approx(2 / 3)
    assert got["f05"] == pytest.approx(2 / 3)
    got = prf([0.9, 0.2, 0.1, 0.1], [1, 0, 1, 1], 0.5)  # P = 1, R = 1/3
    assert got["f05"] == pytest.approx(1.25 * (1 / 3) / (0.25 + 1 / 3))
    assert prf([0.1, 0.2], [1, 0], 0.5) == {"precision": 0.0, "recall": 0.0, "f05": 0.0}
    scores, tags = [0.1, 0.2, 0.3, 0.8, 0.9], [0, 0, 0, 1, 1]
    assert prf(scores, tags, best_threshold(scores, tags))["f05"] == 1.0


def test_ngram_surprise_is_minus_log_prob():
    vocab = Vocab(["a", "b", "c"])
    lm = NGramLM(len(vocab), n=2, smoothing="witten_bell").fit([vocab.encode(["a", "b", "a", "b"])])
    cfg = ErrorDetectConfig(batch_size=4, error_rate=0.01, seed=5)
    data = Corrupted([["a", "b", "c"]], vocab, cfg, [], salt=0, fixed=True)
    data.items = [(["a", "b", "c"], [0, 0, 1])]
    scores, tags = ErrorDetectTask.surprise(lm, data)
    ids = vocab.encode(["a", "b", "c"])
    want = [-math.log(lm.prob((1,), ids[0]))] + [
        -math.log(lm.prob((ids[k - 1],), ids[k])) for k in (1, 2)
    ]
    assert scores == pytest.approx(want) and tags == [0, 0, 1]
    assert scores[2] > scores[1]  # "c" never follows "b" in training: surprising


TINY = ["--limit", 300, "--set", "hidden=8", "--set", "embed=8", "--set", "layers=1",
        "--set", "eval_every=2", "--set", "baseline_steps=3", "--threads", 1, "-q"]  # fmt: skip


def test_errordetect_train_evaluate_predict(tmp_path):
    cli("train", "errordetect", *TINY, "--max-steps", 3, "--runs-dir", tmp_path / "runs")
    (run,) = (tmp_path / "runs").iterdir()
    s = json.loads((run / "summary.json").read_text())
    for k in ("test_f05", "baseline_window_f05", "baseline_ngram_f05"):
        assert 0.0 <= s[k] <= 1.0, k
    assert 0 < s["test_error_words"] < s["test_words"] and len(s["examples"]) == 6
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["kind"] == "memory"] == [2]  # eval_every=2, 3 steps
    assert s["memory_span"]["step"] == 2 and (run / "memory_span.png").is_file()
    assert (run / "grad_through_time.png").is_file()
    out = json.loads(cli("evaluate", run, "--json").output)
    assert out["test_f05"] == pytest.approx(s["test_f05"])
    lines = cli("predict", run, "this films are good good", "a fine film .").output.splitlines()
    assert len(lines) == 2
    words, probs = lines[0].split("\t")
    assert words.replace("[[", "").replace("]]", "").split() == [
        "this",
        "films",
        "are",
        "good",
        "good",
    ]
    assert len(probs.split()) == 5 and all(0.0 <= float(p) <= 1.0 for p in probs.split())
    r = cli("predict", run, "  ", ok=False)
    assert r.exit_code == 1 and "no words in" in r.output


def test_errordetect_bad_settings_and_own_file(tmp_path):
    runs = tmp_path / "runs"
    r = cli("train", "errordetect", "--set", "error_rate=0.0", "--runs-dir", runs, ok=False)
    assert r.exit_code == 1 and "error_rate: expected a value in (0, 1), got 0.0" in r.output
    r = cli("train", "errordetect", "--set", "window=4", "--runs-dir", runs, ok=False)
    assert "window: expected an odd size >= 1, got 4" in r.output
    few = tmp_path / "few.txt"
    few.write_text("one short line here\nand another one\n")
    r = cli("train", "errordetect", "--data", few, "--runs-dir", runs, ok=False)
    assert "expected at least 10 sentences of 3+ words, got 2" in r.output
    own = tmp_path / "own.txt"
    own.write_text("".join(f"the cat number {i} sat on the mat .\n" for i in range(40)))
    cli("train", "errordetect", *TINY[2:], "--data", own, "--max-steps", 2, "--runs-dir", runs)
