"""JapaneseVowels: the .ts loader on the installed files, DTW against known answers and a
hand-written loop, and the ``vowels`` task through the real CLI."""

import json
import random
from collections import Counter

import pytest
import torch
from click.testing import CliRunner

from seqlab.cli import main
from seqlab.data import DataFileError, locate
from seqlab.data.series import japanese_vowels, read_ts
from seqlab.tasks.dtw import dtw_matrix, nn1_dtw
from seqlab.tasks.vowels import split_train


def cli(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_loader_reads_the_official_split():
    train_x, train_y = japanese_vowels("train")
    test_x, test_y = japanese_vowels("test")
    assert len(train_x) == 270 and len(test_x) == 370
    assert Counter(train_y) == {str(c): 30 for c in range(1, 10)}
    assert set(test_y) == {str(c) for c in range(1, 10)}
    lengths = [x.shape[0] for x in train_x + test_x]
    assert all(x.shape[1] == 12 for x in train_x + test_x)
    assert min(lengths) == 7 and max(lengths) == 29
    # the first training value of the file, as printed in it
    assert train_x[0][0, 0].item() == pytest.approx(1.860936)
    with pytest.raises(ValueError, match="split: expected 'train' or 'test'"):
        japanese_vowels("valid")


def test_read_ts_rejects_malformed_rows(tmp_path):
    head = "@problemName X\n@dimensions 2\n@classLabel true a b\n@data\n"
    f = tmp_path / "x.ts"
    f.write_text(head + "1,2:3,4:a\n1,2:3:b\n")
    with pytest.raises(DataFileError, match=r"x.ts:6: expected dimensions of one length"):
        read_ts(f)
    f.write_text(head + "1,2:3,oops:a\n")
    with pytest.raises(DataFileError, match=r"x.ts:5: not a number"):
        read_ts(f)
    f.write_text(head + "1,2:3,4:a\n1,2:b\n")
    with pytest.raises(DataFileError, match=r"x.ts:6: expected 2 dimensions, got 1"):
        read_ts(f)
    f.write_text(head)
    with pytest.raises(DataFileError, match="no @data rows"):
        read_ts(f)
    f.write_text(head + "1,2:3,4:a\n0.5,1,2:7,8,9:b\n")
    xs, ys, classes = read_ts(f)
    assert xs[1].tolist() == [[0.5, 7], [1, 8], [2, 9]] and ys == ["a", "b"]
    assert classes == ["a", "b"]


def col(*v):
    return torch.tensor(v, dtype=torch.float64)[:, None]


def test_dtw_known_answers():
    # a warped copy costs nothing
    assert dtw_matrix([col(0, 1, 2)], [col(0, 0, 1, 2)]).item() == 0.0
    # one frame against two: (0-1)² + (2-1)² = 2
    assert dtw_matrix([col(0, 2)], [col(1)]).item() == 2.0
    # by hand: c = [[0,4],[1,1],[4,0]]; G(1,1) = 1 + min(1, 4, 0) = 1; G(2,1) = 0 + min(1, 5, 1)
    assert dtw_matrix([col(1, 2, 3)], [col(1, 3)]).item() == 1.0
    # multivariate squared distance: (1-0)² + (2-0)²
    assert dtw_matrix([torch.tensor([[1.0, 2.0]])], [torch.zeros(1, 2)]).item() == 5.0
    with pytest.raises(ValueError, match=r"b\[0\]: expected D = 1 dimensions, got 2"):
        dtw_matrix([col(1)], [torch.zeros(3, 2)])
    with pytest.raises(ValueError, match=r"a\[0\]: expected a \(T >= 1, D\) tensor"):
        dtw_matrix([torch.zeros(0, 1)], [col(1)])


def reference_dtw(a, b):
    n, m, inf = len(a), len(b), float("inf")
    g = [[inf] * (m + 1) for _ in range(n + 1)]
    g[0][0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            c = sum((x - y) ** 2 for x, y in zip(a[i - 1], b[j - 1], strict=True))
            g[i][j] = c + min(g[i - 1][j], g[i][j - 1], g[i - 1][j - 1])
    return g[n][m]


def test_batched_dtw_matches_a_plain_loop_on_ragged_batches():
    rng = random.Random(0)
    a = [torch.randn(rng.randint(1, 9), 3, dtype=torch.float64) for _ in range(7)]
    b = [torch.randn(rng.randint(1, 9), 3, dtype=torch.float64) for _ in range(5)]
    got = dtw_matrix(a, b, chunk=3)  # chunks that do not divide len(a)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            assert got[i, j].item() == pytest.approx(reference_dtw(x.tolist(), y.tolist()))


def test_nn1_dtw_reaches_the_published_accuracy_on_japanese_vowels():
    """The UEA archive reports 1-NN DTW_D (full window) at 0.949 on JapaneseVowels
    (Bagnall et al. 2018): 351 of 370."""
    train_x, train_y = japanese_vowels("train")
    test_x, test_y = japanese_vowels("test")
    pred = nn1_dtw(train_x, train_y, test_x)
    assert sum(p == y for p, y in zip(pred, test_y, strict=True)) == 351


def test_split_train_is_stratified_and_disjoint():
    labels = [str(c) for c in range(3) for _ in range(20)]
    tr, va = split_train(labels, 0.15, seed=1)
    assert sorted(tr + va) == list(range(60))
    assert Counter(labels[i] for i in va) == {"0": 3, "1": 3, "2": 3}
    assert split_train(labels, 0.15, seed=1) == (tr, va)
    with pytest.raises(ValueError, match=r"valid_fraction: expected a value in \[0, 1\)"):
        split_train(labels, 1.0, seed=0)


TINY = [
    "--set",
    "hidden=8",
    "--set",
    "eval_every=2",
    "--set",
    "baseline=false",
    "--threads",
    1,
    "-q",
]


def test_vowels_train_evaluate_predict(tmp_path):
    cli("train", "vowels", *TINY, "--max-steps", 4, "--runs-dir", tmp_path / "runs")
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["test_size"] == 370 and 0.0 <= summary["test_acc"] <= 1.0
    assert summary["steps"] == 4 and (run / "loss.png").is_file()
    assert (run / "grad_through_time.png").is_file()
    # the memory span at every evaluation (steps 2 and 4), summarised and plotted
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["kind"] == "memory"] == [2, 4]
    assert summary["memory_span"]["step"] == 4 and (run / "memory_span.png").is_file()
    out = json.loads(cli("evaluate", run, "--json").output)
    assert out["test_acc"] == pytest.approx(summary["test_acc"])
    (test_file,) = [p for p in locate("japanese_vowels") if p.stem.endswith("TEST")]
    lines = cli("predict", run, test_file).output.splitlines()
    assert len(lines) == 370
    fields = [ln.split("\t") for ln in lines]
    assert all(
        f[1] in [str(c) for c in range(1, 10)] and f[3] == y
        for f, y in zip(fields, japanese_vowels("test")[1], strict=True)
    )
    # bad inputs: a missing file, a file of the wrong width
    r = cli("predict", run, tmp_path / "nope.ts", ok=False)
    assert r.exit_code == 1 and "expected a .ts file" in r.output
    narrow = tmp_path / "narrow.ts"
    narrow.write_text("@data\n1,2:3,4:1\n")
    r = cli("predict", run, narrow, ok=False)
    assert "expected 12 dimensions per frame" in r.output and "got 2" in r.output


def test_ema_weights_follow_the_documented_average():
    from seqlab.tasks.vowels import _ema

    model = torch.nn.Linear(2, 1)
    first = model.weight.detach().clone()
    avg = _ema(model, 0.9)
    avg.update_parameters(model)  # the first update copies θ
    with torch.no_grad():
        model.weight.add_(1.0)
    avg.update_parameters(model)  # θ̄ = 0.9·θ̄ + 0.1·θ
    assert torch.allclose(avg.module.weight, 0.9 * first + 0.1 * (first + 1.0))
    assert not avg.module.training and _ema(model, 0.0) is None
    with pytest.raises(ValueError, match=r"ema: expected a decay in \[0, 1\), got 1.0"):
        _ema(model, 1.0)


def test_vowels_with_ema_saves_and_reloads_the_averaged_model(tmp_path):
    cli("train", "vowels", *TINY, "--set", "ema=0.9", "--max-steps", 3,
        "--runs-dir", tmp_path / "runs")  # fmt: skip
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    out = json.loads(cli("evaluate", run, "--json").output)
    assert out["test_acc"] == pytest.approx(summary["test_acc"])
    r = cli("train", "vowels", *TINY, "--set", "ema=1.5", "--runs-dir", tmp_path / "r2", ok=False)
    assert r.exit_code != 0 and "ema: expected a decay in [0, 1), got 1.5" in r.output
