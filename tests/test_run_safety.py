"""Run folders survive crashes: atomic files, checksummed weights, last checkpoints, exact
resume, Ctrl-C/SIGTERM, divergence. Oracles: the files' previous contents, an uninterrupted
run, the untrained weights."""

import json
import os
import signal

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F

from seqlab.tasks import interrupt
from seqlab.tasks.atomic import atomic_write_text, clean_temp_files, load_weights, save_weights
from seqlab.tasks.base import TaskConfig, fit
from seqlab.tasks.batches import ShuffledBatches, StreamChunks
from seqlab.tasks.rundir import RunDir
from seqlab.training.checkpoint import CheckpointError

# ------------------------------------------------------------------ files


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text("old")

    def boom(*_):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # no temp left


def test_weights_checksum_catches_a_flipped_byte_and_foreign_files(tmp_path):
    w = {"a": torch.randn(4, 3), "b": torch.arange(5)}
    path = tmp_path / "model.safetensors"
    save_weights(path, w)
    back = load_weights(path)
    assert all(torch.equal(back[k], w[k]) for k in w)

    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01  # one bit of the last tensor's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_weights(path)

    # Re-saved by another tool (here: as int64, without our metadata): refused by name.
    safetensors.torch.save_file({k: v.long() for k, v in w.items()}, str(path))
    with pytest.raises(CheckpointError, match="no seqlab checksum"):
        load_weights(path)
    path.write_bytes(path.read_bytes()[:40])  # truncated
    with pytest.raises(CheckpointError, match="unreadable"):
        load_weights(path)


def test_dead_writers_temp_files_are_removed_live_ones_kept(tmp_path):
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)  # a pid that no longer runs
    (tmp_path / f"last.safetensors.tmp-{dead}").write_bytes(b"half")
    mine = tmp_path / f"model.safetensors.tmp-{os.getpid()}"
    mine.write_bytes(b"in progress")
    RunDir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name]
    assert clean_temp_files(tmp_path) == []


def test_events_skip_a_line_cut_short_by_a_kill(tmp_path):
    run = RunDir(tmp_path)
    run.log(kind="eval", step=1)
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "train", "st')
    assert [e["step"] for e in run.events()] == [1]


# ------------------------------------------------------------------ fit: resume, signals


def toy(tmp_path, name, max_steps, lr=0.05, nan_at=None, hook=None, resume=False):
    """A linear regression trained by tasks.base.fit over seeded shuffled batches."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(40, 1, generator=g)
    xv, yv = x[:8] + 0.5, y[:8]
    batches = ShuffledBatches(40, 6, 0, lambda idx: (x[list(idx)], y[list(idx)]))
    calls = {"n": 0}

    def loss_fn(m, b):
        calls["n"] += 1
        if hook:
            hook(calls["n"])
        loss = F.mse_loss(m(b[0]), b[1])
        return loss * float("nan") if nan_at and calls["n"] >= nan_at else loss

    run = RunDir(tmp_path / name) if resume else RunDir.create(tmp_path, name)
    run.resuming = resume
    cfg = TaskConfig(lr=lr, max_steps=max_steps, eval_every=4, minutes=60, clock="cpu")
    saved = []

    def on_best():
        saved.append({k: v.clone() for k, v in model.state_dict().items()})
        run.save_model(model, {"task": "toy"})

    res = fit(model, cfg, batches, loss_fn, lambda: {"err": F.mse_loss(model(xv), yv).item()},
              "err", False, run, on_best=on_best, epochs=100)  # fmt: skip
    return run, model, res, saved


def same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_resume_from_last_checkpoint_equals_the_uninterrupted_run(tmp_path):
    ref_run, ref, ref_res, _ = toy(tmp_path, "ref", 22)
    run, _, res, _ = toy(tmp_path, "part", 9)  # stops at 9; last.safetensors written
    assert res.steps == 9 and run.last_checkpoint.is_file()
    run, model, res, _ = toy(tmp_path, run.path.name, 22, resume=True)
    assert res.steps == 22 and same(model.state_dict(), ref.state_dict())
    assert res.best == ref_res.best
    assert same(run.load_model_files()[0], ref_run.load_model_files()[0])
    assert any(e["kind"] == "resume" and e["step"] == 9 for e in run.events())


def test_stream_chunks_restart_at_an_epoch_with_the_same_phase():
    ids = torch.arange(500)
    a, b = StreamChunks(ids, 4, 7, seed=3), StreamChunks(ids, 4, 7, seed=3)
    firsts = [next(iter(a))["inputs"][0, 0].item() for _ in range(5)]
    b.set_epoch(3)
    assert next(iter(b))["inputs"][0, 0].item() == firsts[3]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_after_the_step_saves_last_and_resumes_exactly(tmp_path, signum):
    _, ref, _, _ = toy(tmp_path, "ref", 20)

    def kill_at(n):
        if n == 7:
            os.kill(os.getpid(), signum)

    with interrupt.stop_signals(), pytest.raises(interrupt.Interrupted) as info:
        toy(tmp_path, "cut", 20, hook=kill_at)
    assert info.value.exit_code == 128 + signum
    assert "stopped at step 7" in str(info.value) and "--resume" in str(info.value)
    (cut,) = [p for p in tmp_path.iterdir() if p.name.startswith("cut-")]
    assert json.loads((cut / "summary.json").read_text())["stopped_by"] == "interrupted"
    _, model, res, _ = toy(tmp_path, cut.name, 20, resume=True)
    assert res.steps == 20 and same(model.state_dict(), ref.state_dict())


def test_a_finite_divergence_keeps_the_untrained_model_as_best(tmp_path):
    run, model, res, saved = toy(tmp_path, "lr", 16, lr=1e3)
    assert run.outcome[0] == "diverged" and res.stopped_by == "diverged"
    assert "training loss grew" in run.outcome[1]
    assert len(saved) == 1  # only the step-0 (untrained) model was ever saved
    assert same(run.load_model_files()[0], saved[0])


def test_a_nan_loss_is_reported_and_the_last_good_model_kept(tmp_path):
    run, model, res, saved = toy(tmp_path, "nan", 30, nan_at=11)
    assert res.stopped_by == "diverged" and res.steps == 10
    assert "loss is nan at step 11" in run.outcome[1]
    assert same(run.load_model_files()[0], saved[-1])
    for t in run.load_model_files()[0].values():
        assert torch.isfinite(t).all()


def test_trainer_checkpoints_clean_a_killed_writers_temp_file(tmp_path):
    from seqlab.training.checkpoint import save_checkpoint

    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    (tmp_path / f"last.safetensors.tmp-{dead}").write_bytes(b"half")
    save_checkpoint(tmp_path / "last.safetensors", {"w": torch.ones(2)}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]


def test_a_new_run_folder_appears_with_its_config(tmp_path, monkeypatch):
    run = RunDir.create(tmp_path, "toy", {"lr": 0.1})
    assert (run.path / "config.toml").read_text() == "lr = 0.1\n"

    def boom(*_):
        raise OSError("killed")

    monkeypatch.setattr(os, "rename", boom)  # dies between the config and the rename
    with pytest.raises(OSError):
        RunDir.create(tmp_path, "other", {"lr": 0.2})
    assert sorted(p.name for p in tmp_path.iterdir()) == [run.path.name]


def test_resuming_a_finished_run_takes_no_extra_step(tmp_path):
    run, ref, ref_res, _ = toy(tmp_path, "done", 12)
    _, model, res, _ = toy(tmp_path, run.path.name, 12, resume=True)
    assert res.steps == 12 and res.stopped_by == "max_steps"
    assert same(model.state_dict(), ref.state_dict())
