"""BasicMotions frame labels: the loader on the installed files, the streams and their
recording-level split, windowed labelling against a brute-force loop, the baselines on
known-answer cases, and the ``frames`` task through the real CLI (inspect included)."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from seqlab.cli import main
from seqlab.data import locate
from seqlab.data.series import basic_motions
from seqlab.metrics import macro_f1
from seqlab.tasks.framedata import (
    LogisticRegression,
    RandomWindows,
    compose,
    label_stream,
    per_class_f1,
    scores,
    split_by_recording,
    window_features,
    window_starts,
)
from seqlab.tasks.frames import FramesConfig, FramesData, FramesTask, load_frames

ACTIVITIES = {"Badminton", "Running", "Standing", "Walking"}


def cli(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def test_loader_reads_the_official_split():
    train_x, train_y = basic_motions("train")
    test_x, test_y = basic_motions("test")
    assert len(train_x) == 40 and len(test_x) == 40
    assert Counter(train_y) == Counter(test_y) == {a: 10 for a in ACTIVITIES}
    assert all(tuple(x.shape) == (100, 6) for x in train_x + test_x)
    # the first test value of the file, as printed in it (accelerometer x of recording 0)
    assert test_x[0][0, 0].item() == pytest.approx(-0.740653)
    assert test_x[0][3, 0].item() == pytest.approx(2.867009)
    # no recording is in both files
    train_keys = {tuple(x.flatten().tolist()) for x in train_x}
    assert not train_keys & {tuple(x.flatten().tolist()) for x in test_x}
    with pytest.raises(ValueError, match="split: expected 'train' or 'test'"):
        basic_motions("valid")


def test_split_and_streams_keep_recordings_apart():
    cfg = FramesConfig(valid_per_class=2, eval_streams=3, seed=4)
    data, (tr, va) = load_frames(cfg)
    assert len(tr) == 32 and len(va) == 8 and not set(tr) & set(va)
    _, names = basic_motions("train")
    assert Counter(names[i] for i in va) == {a: 2 for a in ACTIVITIES}
    assert data.classes == sorted(ACTIVITIES)
    # every validation stream: each held-out recording once, labels per step from it
    raw, _ = basic_motions("train")
    for s in data.valid:
        assert sorted(s.parts) == va and len(s.y) == 800
        for k, i in enumerate(s.parts):
            assert (s.y[100 * k : 100 * (k + 1)] == data.classes.index(names[i])).all()
            want = (raw[i] - data.mean) / data.std
            assert torch.equal(s.x[100 * k : 100 * (k + 1)], want)
    for s in data.test:
        assert sorted(s.parts) == list(range(40)) and len(s.y) == 4000
    # the training recordings are exactly the non-held-out ones; the statistics are theirs
    frames = torch.cat([raw[i] for i in tr])
    assert torch.allclose(data.mean, frames.mean(0)) and torch.allclose(data.std, frames.std(0))
    assert len(data.train) == 32
    with pytest.raises(ValueError, match="valid_per_class: expected fewer than the 10"):
        split_by_recording([0] * 10, 10, 0)


def test_random_windows_label_every_step_with_its_recording():
    recs = [torch.full((n, 2), float(i)) for i, n in enumerate([5, 7, 6])]
    labels = [1, 0, 1]
    batches = RandomWindows(recs, labels, window=12, batch_size=4, batches=3, noise=0.0, seed=0)
    got = list(batches)
    assert len(got) == 3
    for x, y in got:
        assert x.shape == (4, 12, 2) and y.shape == (4, 12)
        ids = x[..., 0].long()
        assert torch.equal(y, torch.tensor(labels)[ids])
    batches.set_epoch(0)  # a resumed run replays the same epoch
    assert all(torch.equal(a[0], b[0]) for a, b in zip(got, batches, strict=True))


def test_window_starts():
    assert window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert window_starts(3, 4, 2) == [0]
    with pytest.raises(ValueError, match="expected 1 <= hop <= window"):
        window_starts(10, 4, 5)


@pytest.mark.parametrize("causal", [True, False])
def test_label_stream_takes_each_step_from_its_most_context_window(causal):
    torch.manual_seed(0)
    n, w, hop = 23, 8, 3
    x = torch.randn(n, 2)
    proj = torch.randn(2, 3)

    def fn(batch):  # depends on the position in the window, so the window choice shows
        return batch @ proj + torch.arange(batch.shape[1])[None, :, None] * 10.0

    got = label_stream(fn, x, w, hop, causal)
    starts = window_starts(n, w, hop)
    for t in range(n):
        best, pick = -1, None
        for s in starts:
            if s <= t < s + w:
                ctx = t - s if causal else min(t - s, s + w - 1 - t)
                if ctx > best:
                    best, pick = ctx, s
        want = x[t] @ proj + (t - pick) * 10.0
        assert torch.allclose(got[t], want), t


def test_window_features_match_a_loop():
    x = torch.arange(12.0).reshape(6, 2)
    for size, centred in [(3, False), (3, True), (1, False), (5, True)]:
        got = window_features(x, size, centred)
        before = size // 2 if centred else size - 1
        for t in range(6):
            rows = [x[min(max(t + k, 0), 5)] for k in range(-before, size - before)]
            assert torch.equal(got[t], torch.cat(rows))
    with pytest.raises(ValueError, match="baseline_window: expected an odd size"):
        window_features(x, 4, True)


def test_logistic_regression_recovers_known_frequencies():
    """With one-hot inputs and no penalty the maximum-likelihood p(c | category) is the
    empirical frequency of c within the category."""
    counts = [[6, 3, 1], [1, 1, 8], [2, 5, 3]]
    f, y = [], []
    for cat, row in enumerate(counts):
        for c, n in enumerate(row):
            f += [torch.nn.functional.one_hot(torch.tensor(cat), 3).double()] * n
            y += [c] * n
    model = LogisticRegression(3, l2=0.0).fit(torch.stack(f), torch.tensor(y))
    p = model.predict_proba(torch.eye(3, dtype=torch.float64))
    want = torch.tensor(counts, dtype=torch.float64) / 10
    assert torch.allclose(p, want, atol=1e-4)
    with pytest.raises(ValueError, match="l2: expected a number >= 0"):
        LogisticRegression(3, l2=-1.0)


def test_f1_scores_known_answer():
    pred = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    true = torch.tensor([0, 1, 1, 1, 2, 0, 2])
    # class 0: TP 1, FP 1, FN 1 -> 0.5; class 1: TP 2, FP 0, FN 1 -> 0.8; class 2: TP 2,
    # FP 1, FN 0 -> 0.8; class 3: absent -> 0
    assert per_class_f1(pred, true, 4) == pytest.approx([0.5, 0.8, 0.8, 0.0])
    s = scores(pred, true, ["A", "B", "C"])
    assert s["acc"] == pytest.approx(5 / 7) and s["f1_b"] == pytest.approx(0.8)
    assert s["macro_f1"] == pytest.approx(macro_f1(pred, true, 3)) == pytest.approx(0.7)


def test_baselines_on_a_known_answer_stream():
    """Class 0 frames have channel 0 = +1, class 1 frames −1 (plus noise on the others),
    and class 1 is the more frequent: the frame and window regressions are perfect, the
    majority class is class 1."""
    g = torch.Generator().manual_seed(0)

    def rec(c):
        x = torch.randn(10, 6, generator=g) * 0.1
        x[:, 0] = 1.0 if c == 0 else -1.0
        return x

    labels = [0, 1, 1, 0, 1, 1]
    recs = [rec(c) for c in labels]
    streams = [compose(recs, labels, o) for o in ([0, 1, 2, 3, 4, 5], [5, 3, 4, 0, 2, 1])]
    data = FramesData(["A", "B"], recs, labels, streams, streams, torch.zeros(6), torch.ones(6))
    out = FramesTask.baselines(FramesConfig(eval_streams=2, baseline_window=3), data)
    assert out["baseline_majority_acc"] == pytest.approx(4 / 6)
    assert out["baseline_majority_f1_a"] == 0.0 and out["baseline_majority_f1_b"] == 0.8
    assert out["baseline_frame_acc"] == 1.0 and out["baseline_frame_macro_f1"] == 1.0
    # a window of 3 steps still tells the classes apart except where it straddles a join
    assert out["baseline_window_causal_acc"] > 0.8 and out["baseline_window_centred_acc"] > 0.8


TINY = ["--set", "hidden=8", "--set", "layers=1", "--set", "eval_every=2", "--set", "window=50",
        "--set", "hop=25", "--set", "batch_size=4", "--set", "eval_streams=1",
        "--set", "baseline=false", "--threads", 1, "-q"]  # fmt: skip


@pytest.mark.parametrize(("bidirectional", "cell"), [("true", "lstm"), ("false", "gru")])
def test_frames_train_evaluate_predict_inspect(tmp_path, bidirectional, cell):
    cli("train", "frames", *TINY, "--set", f"bidirectional={bidirectional}", "--set",
        f"cell={cell}", "--max-steps", 4, "--runs-dir", tmp_path / "runs")  # fmt: skip
    (run,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == cell and summary["bidirectional"] == (bidirectional == "true")
    assert summary["test_steps"] == 4000 and summary["steps"] == 4
    assert 0.0 <= summary["test_acc"] <= 1.0 and 0.0 <= summary["test_macro_f1"] <= 1.0
    for name in ("loss.png", "frames.png", "memory_span.png"):
        assert (run / name).is_file(), name
    out = json.loads(cli("evaluate", run, "--json").output)
    assert out["test_acc"] == pytest.approx(summary["test_acc"])
    assert out["test_macro_f1"] == pytest.approx(summary["test_macro_f1"])
    (test_file,) = [p for p in locate("basic_motions") if p.stem.endswith("TEST")]
    lines = cli("predict", run, test_file).output.splitlines()
    assert len(lines) == 4000
    fields = [ln.split("\t") for ln in lines]
    _, names = basic_motions("test")
    assert [int(f[1]) for f in fields] == list(range(4000))
    assert all(f[2] in ACTIVITIES and f[4] == names[t // 100] for t, f in enumerate(fields))
    # a CSV stream with a header gives the same labels as the same frames from the .ts file
    raw, _ = basic_motions("test")
    csv_file = tmp_path / "stream.csv"
    rows = torch.cat(raw[:3]).tolist()
    csv_file.write_text("ax,ay,az,gx,gy,gz\n" + "".join(",".join(map(repr, r)) + "\n"
                                                    for r in rows))  # fmt: skip
    ts_file = tmp_path / "three.ts"
    ts_file.write_text("@data\n" + "".join(
        ":".join(",".join(repr(v) for v in col) for col in x.T.tolist()) + f":{y}\n"
        for x, y in zip(raw[:3], names[:3], strict=True)))  # fmt: skip
    from_csv = [ln.split("\t")[2:4] for ln in cli("predict", run, csv_file).output.splitlines()]
    from_ts = [ln.split("\t")[2:4] for ln in cli("predict", run, ts_file).output.splitlines()]
    assert len(from_csv) == 300 and from_csv == from_ts
    # bad inputs
    r = cli("predict", run, tmp_path / "nope.ts", ok=False)
    assert r.exit_code == 1 and "expected a .ts or .csv file" in r.output
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n")
    r = cli("predict", run, bad, ok=False)
    assert "bad.csv:1: expected 6 numbers" in r.output
    narrow = tmp_path / "narrow.ts"
    narrow.write_text("@data\n1,2:3,4:Walking\n")
    assert "expected 6 channels per step, got 2" in cli("predict", run, narrow, ok=False).output
    # inspect: the per-step labels over a stream of held-out recordings
    page = cli("inspect", run, "--text", "walking running").output.strip()
    html = Path(page).read_text(encoding="utf-8")
    assert "per-step labels" in html and "Walking Running" in html
    assert (run / "inspect" / "inspect-frames.png").is_file()
    r = cli("inspect", run, "--text", "swimming", ok=False)
    assert "unknown activity 'swimming'" in r.output


def test_frames_bad_settings(tmp_path):
    r = cli("train", "frames", *TINY, "--set", "hop=80", "--runs-dir", tmp_path, ok=False)
    assert r.exit_code != 0 and "hop: expected at most window=50, got 80" in r.output
    r = cli("train", "frames", *TINY, "--data", tmp_path / "x.csv", "--runs-dir", tmp_path,
            ok=False)  # fmt: skip
    assert r.exit_code != 0 and "frames task reads BasicMotions" in r.output


@pytest.mark.slow
def test_frames_recipe_beats_the_baselines(tmp_path):
    cli("train", "frames", "--threads", 1, "-q", "--runs-dir", tmp_path)
    (run,) = tmp_path.iterdir()
    s = json.loads((run / "summary.json").read_text())
    best = max(s["baseline_window_centred_macro_f1"], s["baseline_frame_macro_f1"])
    assert s["test_macro_f1"] > best + 0.05


def test_causal_labels_of_a_stream_never_read_the_future():
    """The causal tagger's label of step t, after the window choice, depends on steps ≤ t
    only: changing every later step leaves it unchanged (the offline tagger's changes)."""
    torch.manual_seed(0)
    x = torch.randn(70, 6)
    later = x.clone()
    later[41:] = torch.randn(29, 6)
    for bidirectional in (False, True):
        cfg = FramesConfig(hidden=8, layers=1, window=20, hop=10, bidirectional=bidirectional)
        model = FramesTask().build(cfg, 4)
        a = FramesTask.stream_logits(model, cfg, x)
        b = FramesTask.stream_logits(model, cfg, later)
        if bidirectional:
            assert not torch.allclose(a[:41], b[:41])
        else:
            assert torch.equal(a[:41], b[:41]) and not torch.allclose(a[41:], b[41:])
