"""seqlab.load, seqlab inspect / runs / compare / sweep on tiny real runs through the CLI.

Each test trains its own tiny run (a few steps on a slice of the real data), like
tests/test_cli.py. Oracles: the task's own CLI paths (predict, evaluate) for ``load``; for the
page, the files on disk and the PNG bytes embedded in it.
"""

import base64
import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import seqlab
from seqlab.cli import main

# Task names as the CLI accepts them (the first names stay valid as aliases).
TINY = {
    "shakespeare": ["--limit", 1, "--set", "hidden=16", "--set", "embed=8", "--set",
                    "batch_size=4", "--set", "bptt=16", "--set", "eval_every=3", "--set",
                    "eval_chars=400", "--set", "baseline_order=2", "--set", "sample_chars=20"],
    "sentiment": ["--limit", 160, "--set", "hidden=8", "--set", "embed=8", "--set",
                  "eval_every=3"],
    "g2p": ["--limit", 200, "--set", "hidden=16", "--set", "embed=8", "--set", "eval_every=3",
            "--set", "eval_words=20"],
    "sunspots": ["--set", "hidden=8", "--set", "eval_every=3"],
}  # fmt: skip


def cli(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def train(root: Path, task: str, *extra, steps: int = 4) -> Path:
    before = set(root.iterdir()) if root.exists() else set()
    cli("train", task, *TINY[task], "--max-steps", steps, "--threads", 1, "-q",
        "--runs-dir", root, *extra)  # fmt: skip
    (run,) = set(root.iterdir()) - before
    return run


def check_page(run: Path, out: str, expect_pngs: list[str]) -> str:
    page = Path(out.strip().splitlines()[-1])
    assert page == run / "inspect.html" and page.is_file()
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    # self-contained: no network reference of any kind
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert "//" not in text and "url(" not in text and "@import" not in text
    assert "<script" not in html
    pngs = sorted((run / "inspect").glob("*.png"))
    names = {p.stem for p in pngs}
    for stem in expect_pngs:
        assert stem in names, (stem, names)
    for p in pngs:  # every PNG written is the one embedded
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert base64.b64encode(data).decode() in html
    return html


def test_shakespeare_load_and_inspect(tmp_path):
    run = train(tmp_path, "shakespeare")
    lr = seqlab.load(run)
    assert lr.kind == "shakespeare" and not lr.model.training
    # Same predictions as the task's own path: seqlab evaluate's held-out nats/char.
    from seqlab.tasks.shakespeare import load_text, nats_per_char

    want = json.loads(cli("evaluate", run, "--json").output)["val_nats"]
    _, valid = load_text(lr.config)
    got = nats_per_char(lr.model, lr.encode(valid)[0], lr.config.bptt)
    assert got == pytest.approx(want, rel=1e-6)
    assert lr.decode(lr.encode("ROMEO")[0]) == list("ROMEO")

    out = cli("inspect", run, "--text", "ROMEO:\\nWhat light").output
    want = ["saliency", "rnn-k0-gates", "rnn-k0-saturation", "rnn-grad-through-time"]
    html = check_page(run, out, [f"inspect-{w}" for w in want])
    assert "predicted next character" in html and "most saturated unit" in html
    for gate in ("i", "f", "g", "o"):
        assert f"<td>{gate}</td>" in html  # a saturation row per gate


def test_sentiment_load_and_inspect_bidirectional(tmp_path):
    run = train(tmp_path, "sentiment")
    lr = seqlab.load(run)
    text = "a wonderful, moving film"
    label, prob, _ = cli("predict", run, text).output.strip().split("\t")
    with torch.no_grad():
        ids = lr.encode(text)
        p = torch.softmax(lr.model(ids, torch.tensor([ids.shape[1]])), -1)[0]
    assert lr.labels[int(p.argmax())] == label and f"{float(p.max()):.3f}" == prob

    out = cli("inspect", run, "--text", "dull , lifeless and far too long").output
    want = ["encoder-k0-gates", "encoder-k1-gates", "encoder-grad-through-time", "saliency"]
    html = check_page(run, out, [f"inspect-{w}" for w in want])
    assert "encoder, layer 0, backward" in html and "predicted" in html


def test_g2p_load_and_inspect_attention_and_beams(tmp_path):
    run = train(tmp_path, "g2p")
    lr = seqlab.load(run)
    word, phones = cli("predict", run, "hello").output.strip().split("\t")
    with torch.no_grad():
        found = lr.model.generate(lr.encode(word), max_len=lr.config.max_len)
    ids = found.tokens[0, : int(found.lengths[0])].tolist()
    from seqlab.data import EOS

    assert " ".join(lr.decode(ids[:-1] if ids and ids[-1] == EOS else ids)) == phones

    inp = tmp_path / "word.txt"
    inp.write_text("speech\n")
    out = cli("inspect", run, "--input", inp, "--beam", 3).output
    want = ["attention", "decoder-k0-gates", "encoder-k1-gates", "decoder-grad-through-time"]
    html = check_page(run, out, [f"inspect-{w}" for w in want])
    assert "beam search (beam size 3)" in html
    assert html.count("<tr><td>") >= 3  # the beams table has 3 rows (plus other tables)


def test_g2p_transformer_inspect_shows_every_attention_layer(tmp_path):
    run = train(tmp_path, "g2p", "--model", "transformer", steps=2)
    out = cli("inspect", run, "--text", "speech", "--beam", 2).output
    layers = ["encoder.layers.0.self_attn", "decoder.layers.0.self_attn",
              "decoder.layers.0.multihead_attn"]  # fmt: skip
    html = check_page(run, out, [f"inspect-{n}-{k}" for n in layers for k in ("mean", "heads")])
    assert "beam search (beam size 2)" in html and "greedy transcription" in html


def test_sunspots_load_and_inspect_forecast(tmp_path):
    run = train(tmp_path, "sunspots", "--model", "gru")
    lr = seqlab.load(run)
    history = [str(10.0 + 3 * (i % 11)) for i in range(30)]
    (line,) = cli("predict", run, *history, "--steps", 1).output.strip().splitlines()
    with torch.no_grad():
        z = lr.encode(" ".join(history[-lr.config.window :]))
        value = float(lr.model(z)[0]) * lr.std + lr.mean
    assert line == f"+1\t{value:.2f}"

    out = cli("inspect", run).output
    html = check_page(run, out, ["inspect-forecast", "inspect-saliency"])
    assert "seasonal naive" in html and "AR(9)" in html and "<td>z</td>" in html


def test_inspect_bad_input(tmp_path):
    r = cli("inspect", tmp_path, ok=False)
    assert r.exit_code == 1 and "model.json" in r.output
    r = cli("inspect", tmp_path, "--text", "x", "--input", __file__, ok=False)
    assert r.exit_code == 1 and "not both" in r.output


def test_sweep_compare_and_runs(tmp_path):
    root = tmp_path / "runs"
    tiny = ["--set", "hidden=8", "--set", "eval_every=3", "--max-steps", 3, "--threads", 1]
    out = cli("sweep", "sunspots", "--models", "rnn,lstm", *tiny, "-q", "--runs-dir", root).output
    page = Path(out.strip().splitlines()[-1])
    assert (
        page.name == "compare.html" and page.is_file() and (page.parent / "compare.png").is_file()
    )
    runs = sorted(p for p in root.iterdir() if (p / "config.toml").is_file())
    assert len(runs) == 2
    cfgs = [(p / "config.toml").read_text() for p in runs]
    assert {re.search(r'model = "(\w+)"', c).group(1) for c in cfgs} == {"rnn", "lstm"}
    # same budget and seed for both, only the model differs
    assert [re.sub(r'model = "\w+"', "", c) for c in cfgs][0] == re.sub(
        r'model = "\w+"', "", cfgs[1]
    )
    html = page.read_text()
    assert "ar_rmse" in html and "memory span" in html

    listing = cli("runs", root).output.splitlines()
    assert listing[0].split()[:4] == ["run", "task", "model", "metric"]
    assert sorted(line.split()[2] for line in listing[1:]) == ["lstm", "rnn"]
    rows = [json.loads(line) for line in cli("runs", root, "--json").output.splitlines()]
    summaries = {r["model"]: json.loads((Path(r["path"]) / "summary.json").read_text())
                 for r in rows}  # fmt: skip
    for r in rows:
        assert r["value"] == pytest.approx(summaries[r["model"]]["test_rmse"])
        assert r["steps"] == 3 and r["status"].startswith("finished")

    out2 = tmp_path / "cmp"
    cli("compare", *runs, "--out", out2)
    assert (out2 / "compare.html").is_file() and (out2 / "compare.png").is_file()


def test_compare_refuses_runs_of_different_tasks(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    for d, task in ((a, "sunspots"), (b, "shakespeare")):
        d.mkdir()
        (d / "config.toml").write_text('model = "lstm"\n')
        (d / "summary.json").write_text(json.dumps({"task": task}))
    r = cli("compare", a, b, ok=False)
    assert r.exit_code == 1 and "one task" in r.output


def test_train_with_a_list_of_models_is_a_sweep(tmp_path):
    """`seqlab train TASK --model rnn,gru` trains one run per kind with the same settings and
    seed, and writes the compare page (issue 15: the sweep through the train command)."""
    root = tmp_path / "runs"
    tiny = ["--set", "hidden=8", "--set", "eval_every=3", "--max-steps", 3, "--threads", 1]
    out = cli("train", "forecast", "--model", "rnn,gru", *tiny, "-q", "--runs-dir", root).output
    page = Path(out.strip().splitlines()[-1])
    assert page.name == "compare.html" and page.is_file()
    runs = sorted(p for p in root.iterdir() if (p / "config.toml").is_file())
    cfgs = [(p / "config.toml").read_text() for p in runs]
    assert sorted(re.search(r'model = "(\w+)"', c).group(1) for c in cfgs) == ["gru", "rnn"]
    assert re.sub(r'model = "\w+"', "", cfgs[0]) == re.sub(r'model = "\w+"', "", cfgs[1])
    bad = cli("train", "forecast", "--model", "rnn,rnn", "--runs-dir", root, ok=False)
    assert bad.exit_code == 2 and "distinct" in bad.output
    bad = cli("train", "forecast", "--model", "rnn,lstmx", "--runs-dir", root, ok=False)
    assert bad.exit_code == 2 and "'rnn,lstmx'" in bad.output
