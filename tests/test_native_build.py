"""The native build cannot hang: the lock survives its owner's death, two installs never
share a cache key, and a build killed half-way leaves a cache the next process builds from."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqlab.engine import native

SRC = str(Path(native.__file__).resolve().parents[2])
HOLD = (
    "import sys, time\n"
    "from seqlab.engine.native import BuildLock\n"
    "lock = BuildLock(sys.argv[1])\n"
    "assert lock.try_acquire()\n"
    "print('locked', flush=True)\n"
    "time.sleep(600)\n"
)


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return int(proc.stdout)


def test_keys_differ_by_install_path_and_sources(tmp_path):
    a, b = tmp_path / "venv_a" / "csrc", tmp_path / "venv_b" / "csrc"
    shutil.copytree(native.CSRC, a)
    shutil.copytree(native.CSRC, b)
    assert native.build_key(a) == native.build_key(a)
    assert native.build_key(a) != native.build_key(b)  # same sources, same torch: two caches
    key = native.build_key(a)
    header = next(p for p in a.iterdir() if p.suffix == ".h")
    header.write_text(header.read_text() + "\n// changed\n")  # every header is part of the key
    assert native.build_key(a) != key


def test_lock_excludes_a_live_owner_and_is_recovered_when_it_is_killed(tmp_path):
    path = tmp_path / "key.lock"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True, env=_env()
    )
    try:
        assert child.stdout.readline().strip() == "locked"
        owner = native.read_owner(path)
        assert owner["pid"] == child.pid and owner["host"] == socket.gethostname()
        assert not native.owner_is_dead(owner)
        assert not native.BuildLock(path).try_acquire()  # held by a live process
    finally:
        child.kill()  # SIGKILL: no cleanup runs in the owner
        child.wait()
    assert path.exists()  # the dead owner's file is still there ...
    assert native.owner_is_dead(native.read_owner(path))
    lock = native.BuildLock(path)
    assert lock.try_acquire()  # ... and does not block anyone
    assert native.read_owner(path)["pid"] == os.getpid()
    lock.release()


def test_stale_lock_file_of_a_dead_pid_is_recovered(tmp_path):
    path = tmp_path / "key.lock"
    record = {"pid": _dead_pid(), "host": socket.gethostname(), "start": None, "time": 0}
    path.write_text(json.dumps(record))
    assert native.owner_is_dead(native.read_owner(path))
    with native.BuildLock(path):  # acquire() returns at once
        assert native.read_owner(path)["pid"] == os.getpid()
    # a live owner, or one on another host, is never declared dead
    assert not native.owner_is_dead(native.owner_record())
    assert not native.owner_is_dead(dict(record, host=socket.gethostname() + "-other"))


def test_ensure_built_is_free_once_loaded():
    if native.load() is None:
        pytest.skip("native backend unavailable")
    assert native.ensure_built() == 0.0
    assert native.status()["available"]


LOAD = (
    "from seqlab.engine import native\n"
    "import torch\n"
    "ops = native.load()\n"
    "assert ops is not None, native.status()\n"
    "x = torch.randn(3, 2, 4); h = torch.zeros(2, 5)\n"
    "w1 = torch.randn(5, 4); w2 = torch.randn(5, 5)\n"
    "y = ops.forward(0, x, h, None, w1, w2, None, None, None, False, False)[0]\n"
    "want = torch.tanh(x[0] @ w1.t())\n"
    "assert torch.allclose(y[0], want, atol=1e-5), (y[0], want)\n"
    "print('ok', native.status()['build_dir'])\n"
)


@pytest.mark.slow
def test_build_killed_by_sigkill_leaves_a_state_the_next_load_builds_from(tmp_path):
    """SIGKILL the building process once its compiler runs; the next process must build,
    load and run the engine (no hang on a lock, no half-published library)."""
    env = _env(SEQLAB_BUILD_DIR=str(tmp_path), SEQLAB_NATIVE="1")
    first = subprocess.Popen(
        [sys.executable, "-c", "from seqlab.engine import native; native.load()"],
        env=env,
        start_new_session=True,  # its compiler processes form a group we can clean up
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the announcement comes right before the compiler starts
        assert "building the native engine" in first.stderr.readline()
        while not any(tmp_path.glob("*.tmp-*/build.ninja")):
            assert first.poll() is None, "the build finished before it could be killed"
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        second = subprocess.run(
            [sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, check=False
        )
    finally:
        with contextlib.suppress(ProcessLookupError):  # the killed build's compiler, if any
            os.killpg(first.pid, signal.SIGKILL)
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("ok")
    assert "native engine built in" in second.stderr
    published = Path(second.stdout.split()[1])
    assert any(published.glob("*.so"))
    assert not list(tmp_path.glob("*.tmp-*"))  # the killed build's leftovers were removed
