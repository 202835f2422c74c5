"""Every bad command line of issue 16 ends in one line naming the option, a non-zero exit
status and no traceback; the CSV header is honoured by name; diverging runs exit 3."""

import json

import pytest
from click.testing import CliRunner

from seqlab.cli import main
from seqlab.data import read_labelled_csv, read_pairs_tsv

SUNSPOTS = ["sunspots", "--set", "hidden=4", "--set", "eval_every=3", "--threads", "1", "-q"]


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line_error(result, code: int, *words: str) -> None:
    out = result.output
    assert result.exit_code == code, out
    assert "Traceback" not in out
    errors = [ln for ln in out.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and out.rstrip().splitlines()[-1] == errors[0], out
    for w in words:
        assert w in errors[0], out


@pytest.mark.parametrize(
    "task,setting,words",
    [
        ("sunspots", "batch_size=0", ["'batch_size'", "integer >= 1", "got 0"]),
        ("sunspots", "log_every=0", ["'log_every'", "got 0"]),
        ("sunspots", "window=0", ["'window'", "got 0"]),
        ("sunspots", "season=0", ["'season'", "got 0"]),
        ("sunspots", "ar_order=500", ["'ar_order'", "got 500"]),
        ("sunspots", "lr=0", ["'lr'", "> 0", "got 0.0"]),
        ("sunspots", "lr=nan", ["'lr'", "got nan"]),
        ("shakespeare", "hidden=100000000", ["hidden=100000000", "GiB"]),
        ("shakespeare", "valid_fraction=0", ["'valid_fraction'", "got 0.0"]),
        ("shakespeare", "valid_fraction=1.5", ["'valid_fraction'", "got 1.5"]),
        ("g2p", "src_tokens=bytes", ["'src_tokens'", "'chars'", "got 'bytes'"]),
    ],
)
def test_bad_settings_are_one_line_exit_2(tmp_path, task, setting, words):
    r = run_cli("train", task, "--set", setting, "--max-steps", 2, "--runs-dir", tmp_path)
    one_line_error(r, 2, *words)


@pytest.mark.parametrize(
    "args,words",
    [
        (["generate", "{run}", "--temperature", "nan"], ["--temperature", "nan"]),
        (["generate", "{run}", "--length", "-5"], ["--length", "-5"]),
        (["generate", "{run}", "--length", "1000000000"], ["--length", "100000"]),
        (["predict", "{run}", "x", "--beam", "0"], ["--beam", "got 0"]),
        (["predict", "{run}", "x", "--beam", "-1"], ["--beam", "got -1"]),
        (["predict", "{run}", "x", "--steps", "-1"], ["--steps", "got -1"]),
        (["bench", "--hidden", "0"], ["--hidden", "got 0"]),
        (["bench", "--batch", "-1"], ["--batch", "got -1"]),
        (["train"], ["missing TASK"]),
    ],
)
def test_bad_options_are_one_line_exit_2(tmp_path, args, words):
    r = run_cli(*[a.replace("{run}", str(tmp_path)) for a in args])
    one_line_error(r, 2, *words)


@pytest.fixture(scope="module")
def sunspots_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    r = run_cli("train", *SUNSPOTS, "--max-steps", 3, "--runs-dir", root)
    assert r.exit_code == 0, r.output
    (run,) = root.iterdir()
    return run


def test_nan_history_for_a_forecaster_is_refused(sunspots_run):
    values = ["50"] * 23 + ["nan"]
    one_line_error(run_cli("predict", sunspots_run, *values), 2, "inputs", "finite", "nan")


def test_corrupted_weights_are_refused_by_name(sunspots_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(sunspots_run, copy)
    w = copy / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0x10
    w.write_bytes(bytes(data))
    one_line_error(run_cli("evaluate", copy), 1, "checksum mismatch", "model.safetensors")


def test_resume_refuses_other_settings(sunspots_run):
    r = run_cli("train", "--resume", sunspots_run, "--set", "lr=0.1")
    one_line_error(r, 2, "--resume", "--set")


def test_a_diverging_run_exits_3_and_keeps_the_untrained_model(tmp_path):
    r = run_cli("train", *SUNSPOTS, "--set", "lr=1e3", "--max-steps", 12, "--runs-dir", tmp_path)
    one_line_error(r, 3, "diverged", "kept best val_rmse", "at step 0")
    (run,) = tmp_path.iterdir()
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert evals[-1]["kind"] == "diverged"
    assert json.loads((run / "summary.json").read_text())["stopped_by"] == "diverged"


def test_lr_1e30_is_a_one_line_divergence(tmp_path):
    r = run_cli("train", *SUNSPOTS, "--set", "lr=1e30", "--max-steps", 6, "--runs-dir", tmp_path)
    one_line_error(r, 3, "diverged")


def test_csv_and_tsv_headers_are_read_by_name(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text('text,label\n"nice film",pos\n"dull",neg\n')
    b.write_text('label,text\npos,"nice film"\nneg,"dull"\n')
    assert read_labelled_csv(b) == read_labelled_csv(a) == [("nice film", "pos"), ("dull", "neg")]
    t = tmp_path / "p.tsv"
    t.write_text("target\tsource\nK AE T\tcat\n")
    assert read_pairs_tsv(t) == [("cat", "K AE T")]


def test_g2p_with_too_few_words_to_split_is_refused(tmp_path):
    tsv = tmp_path / "one.tsv"
    tsv.write_text("cat\tK AE T\n")
    r = run_cli("train", "g2p", "--data", tsv, "--max-steps", 2, "--runs-dir", tmp_path / "r")
    one_line_error(r, 1, "train/validation/test", "= 1/0/0")


def test_verbose_shows_the_traceback_of_a_one_line_error(tmp_path):
    r = run_cli("-v", "train", "sunspots", "--set", "batch_size=0", "--runs-dir", tmp_path)
    assert r.exit_code == 2 and "Traceback" in r.output and "BadSetting" in r.output
