"""The ``translate`` task on a small made-up TSV, through the real CLI."""

import json
import random

import pytest
from click.testing import CliRunner

from seqlab.cli import main
from seqlab.tasks.translate import scores

# A made-up "English -> pseudo-French" grammar: determiner, adjective, noun, verb; the target
# puts the adjective after the noun, so word order changes (what attention must learn).
DET = {"the": "le", "a": "un"}
ADJ = {"red": "rouge", "big": "grand", "old": "vieux", "small": "petit"}
NOUN = {"cat": "chat", "dog": "chien", "house": "maison", "car": "voiture"}
VERB = {"sleeps": "dort", "runs": "court", "waits": "attend"}


def toy_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = set()
    while len(out) < n:
        d, a, o, v = (rng.choice(list(m)) for m in (DET, ADJ, NOUN, VERB))
        out.add((f"{d} {a} {o} {v}", f"{DET[d]} {NOUN[o]} {ADJ[a]} {VERB[v]}"))
    return sorted(out)


def write_tsv(path, pairs, header=True):
    rows = "".join(f"{s}\t{t}\n" for s, t in pairs)
    path.write_text(("source\ttarget\n" if header else "") + rows)
    return path


def cli(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


TINY = ["--set", "hidden=16", "--set", "embed=8", "--set", "eval_every=3", "--threads", 1, "-q"]


def train(tmp_path, data, *extra, steps=4):
    cli("train", "translate", "--data", data, *TINY, "--max-steps", steps,
        "--runs-dir", tmp_path / "runs", *extra)  # fmt: skip
    (run,) = (tmp_path / "runs").iterdir()
    return run


def test_scores_known_answers():
    ref = [["le", "chat", "rouge", "dort"]]
    perfect = scores([ref[0]], [ref])
    assert perfect == {"bleu": 1.0, "exact": 1.0, "token_error_rate": 0.0}
    # one substitution in 4 tokens: TER 1/4; unigram precision 3/4, bigrams 1/3, trigrams 0
    # -> BLEU-4 is 0 without smoothing
    one = scores([["le", "chien", "rouge", "dort"]], [ref])
    assert one["token_error_rate"] == 0.25 and one["exact"] == 0.0 and one["bleu"] == 0.0
    # the closest of several references counts
    two = scores([list("abcd")], [[list("xyz"), list("abcd")]])
    assert two["exact"] == 1.0 and two["bleu"] == 1.0


def test_translate_word_level_train_evaluate_predict(tmp_path):
    data = write_tsv(tmp_path / "pairs.tsv", toy_pairs(80))
    run = train(tmp_path, data)
    for name in ("config.toml", "metrics.jsonl", "model.safetensors", "summary.json", "loss.png"):
        assert (run / name).is_file(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_items"] == 4  # 5 % of 80 distinct source lines
    assert 0.0 <= summary["test_bleu"] <= 1.0
    # the copy baseline: source and target share no word in this grammar
    assert summary["baseline_copy_bleu"] == 0.0
    assert (run / "attention.png").is_file() and (run / "grad_through_time.png").is_file()
    # evaluate recomputes the held-out numbers from the saved checkpoint
    out = json.loads(cli("evaluate", run, "--json").output)
    assert out["test_bleu"] == pytest.approx(summary["test_bleu"])
    assert out["test_token_error_rate"] == pytest.approx(summary["test_token_error_rate"])
    meta = json.loads((run / "model.json").read_text())
    lines = cli("predict", run, "the red cat sleeps", "a dog runs", "--beam", 2).output
    lines = lines.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["the red cat sleeps", "a dog runs"]
    assert all(set(ln.split("\t")[1].split()) <= set(meta["tgt_vocab"]) for ln in lines)


def test_translate_character_level(tmp_path):
    data = write_tsv(tmp_path / "pairs.tsv", toy_pairs(40), header=False)
    run = train(tmp_path, data, "--set", "src_tokens=chars", "--set", "tgt_tokens=chars", steps=2)
    meta = json.loads((run / "model.json").read_text())
    assert " " in meta["src_vocab"] and all(len(t) == 1 for t in meta["tgt_vocab"][4:])
    (line,) = cli("predict", run, "a big car waits").output.splitlines()
    assert line.startswith("a big car waits\t")


def test_translate_bad_inputs(tmp_path):
    runs = tmp_path / "runs"
    r = cli("train", "translate", "--runs-dir", runs, ok=False)
    assert r.exit_code == 1 and "translate needs your own corpus" in r.output
    bad = tmp_path / "bad.tsv"
    bad.write_text("the cat\tle chat\nno tab here\n")
    r = cli("train", "translate", "--data", bad, "--runs-dir", runs, ok=False)
    assert r.exit_code == 1 and f"{bad}:2: expected 2 tab-separated fields" in r.output
    few = write_tsv(tmp_path / "few.tsv", toy_pairs(2))
    r = cli("train", "translate", "--data", few, "--runs-dir", runs, ok=False)
    assert "at least 3 distinct source lines" in r.output and "got 2" in r.output
    data = write_tsv(tmp_path / "pairs.tsv", toy_pairs(20))
    r = cli("train", "translate", "--data", data, "--set", "beam=0", "--runs-dir", runs, ok=False)
    assert "beam: expected a size >= 1, got 0" in r.output
    r = cli("train", "translate", "--data", data, "--set", "src_tokens=bytes", "--runs-dir", runs,
            ok=False)  # fmt: skip
    assert "'src_tokens': expected one of 'chars', 'words', got 'bytes'" in r.output


@pytest.mark.slow
def test_translate_learns_the_toy_grammar(tmp_path):
    """All 96 sentences of the grammar, held-out ones included: reordering must be learnt."""
    data = write_tsv(tmp_path / "pairs.tsv", toy_pairs(96))
    run = train(tmp_path, data, "--set", "hidden=64", "--set", "embed=32",
                "--set", "eval_every=100", "--set", "dropout=0.0", steps=600)  # fmt: skip
    assert json.loads((run / "summary.json").read_text())["test_bleu"] >= 0.9
