"""SIGKILL during `seqlab train` (inside a file write, or at a random moment) leaves a run
folder that loads and resumes, and the resumed run ends with the metrics of an unbroken one.

Oracle: the same command run without a kill (CPU clock, --max-steps, one thread: the run is
deterministic). The kill comes from inside the process: ``os.fsync`` is wrapped so that its
n-th call, or its k-th call on a given file (every run-folder file and checkpoint is fsync-ed
before its rename), SIGKILLs the process, i.e. mid-write; or a timer SIGKILLs it after a
random delay.
"""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from seqlab.tasks.atomic import load_weights
from seqlab.tasks.rundir import RunDir

SRC = str(Path(__file__).resolve().parents[1] / "src")
HARNESS = """
import os, signal, sys, threading
mode, arg = sys.argv[1], sys.argv[2]
if mode in ("fsync", "fsync-term"):
    # arg: n (the n-th fsync of any file) or NAME:k (the k-th fsync of NAME's temp file)
    name, _, k = arg.rpartition(":") if ":" in arg else ("", "", arg)
    k, count, real = int(k), [0], os.fsync
    sig = signal.SIGKILL if mode == "fsync" else signal.SIGTERM
    def fsync(fd):
        path = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        if not name or path.startswith(name + ".tmp-"):
            count[0] += 1
            if count[0] == k:
                os.kill(os.getpid(), sig)
        return real(fd)
    os.fsync = fsync
elif mode == "timer":
    threading.Timer(float(arg), lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
from seqlab.cli import main
main(sys.argv[3:])
"""
TRAIN = ["sunspots", "--set", "hidden=6", "--set", "eval_every=4", "--set", "patience=0",
         "--set", "clock='cpu'", "--threads", "1", "-q"]  # fmt: skip
METRICS = ("test_rmse", "test_mae", "val_rmse", "steps", "stopped_by")


def seqlab(tmp_path: Path, mode: str, arg, *args) -> subprocess.CompletedProcess:
    script = tmp_path / "harness.py"
    script.write_text(HARNESS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(script), mode, str(arg), *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True)


def summary(run: Path) -> dict:
    s = json.loads((run / "summary.json").read_text())
    return {k: s[k] for k in METRICS}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    p = seqlab(root, "none", 0, "train", *TRAIN, "--max-steps", 20, "--runs-dir", root / "runs")
    assert p.returncode == 0, p.stderr[-2000:]
    (run,) = (root / "runs").iterdir()
    return summary(run)


def check_folder_then_resume(tmp_path: Path, reference: dict, kills: int = 1) -> None:
    runs = tmp_path / "runs"
    # A hidden .<run>.tmp-<pid> folder is a run that never started (killed before its
    # config.toml was in place); the next `seqlab train` removes it.
    found = [p for p in runs.iterdir() if not p.name.startswith(".")] if runs.exists() else []
    if not found:
        return  # killed before the run folder existed: nothing to resume
    (run,) = found
    RunDir(run)  # opening a run folder removes the killed writer's temp files
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]
    if (run / "model.safetensors").exists():
        load_weights(run / "model.safetensors")  # complete and checksum-verified
        json.loads((run / "model.json").read_text())
    p = seqlab(tmp_path, "none", 0, "train", "--resume", run)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert summary(run) == reference


@pytest.mark.parametrize("where", ["last.safetensors:2"])  # the checkpoint at step 4
def test_sigkill_inside_a_file_write_then_resume(tmp_path, reference, where):
    p = seqlab(tmp_path, "fsync", where, "train", *TRAIN, "--max-steps", 20,
               "--runs-dir", tmp_path / "runs")  # fmt: skip
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    check_folder_then_resume(tmp_path, reference)


def test_sigterm_checkpoints_exits_143_and_resumes(tmp_path, reference):
    """SIGTERM arrives while the step-4 evaluation saves the best model: the run finishes that
    step, writes last.safetensors and a summary, exits 143 with one line; --resume ends like
    the unbroken run."""
    p = seqlab(tmp_path, "fsync-term", "model.json:2", "train", *TRAIN, "--max-steps", 20,
               "--runs-dir", tmp_path / "runs")  # fmt: skip
    assert p.returncode == 143, p.stdout[-2000:] + p.stderr[-2000:]
    assert "Traceback" not in p.stderr and p.stderr.strip().startswith("Error: SIGTERM")
    assert "stopped at step 4" in p.stderr and "--resume" in p.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "summary.json").read_text())["stopped_by"] == "interrupted"
    check_folder_then_resume(tmp_path, reference)


@pytest.mark.slow
def test_sigkill_at_every_write_and_at_random_moments(tmp_path, reference):
    for n in range(1, 40):
        d = tmp_path / f"w{n}"
        d.mkdir()
        p = seqlab(d, "fsync", n, "train", *TRAIN, "--max-steps", 20, "--runs-dir", d / "runs")
        if p.returncode == 0:
            assert summary(next((d / "runs").iterdir())) == reference
            break  # n is past the run's last write
        assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
        check_folder_then_resume(d, reference)
    rng = random.Random(16)
    for k in range(6):
        d = tmp_path / f"t{k}"
        d.mkdir()
        p = seqlab(d, "timer", rng.uniform(1.0, 8.0), "train", *TRAIN, "--max-steps", 20,
                   "--runs-dir", d / "runs")  # fmt: skip
        if p.returncode == 0:
            assert summary(next((d / "runs").iterdir())) == reference
            continue
        assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
        check_folder_then_resume(d, reference)
