"""Build-on-first-use loader of the native (C++) recurrence kernels.

The extension (``csrc/recurrence.cpp`` and its headers, one translation unit registering
``torch.ops.seqlab_engine``) is compiled with ``torch.utils.cpp_extension.load`` once per
cache key: a hash of the sources, the install path of those sources, the torch and Python
versions and the compiler flags. Two installs (say two venvs with the same torch) therefore
never share, and never rebuild, each other's library.

A build cannot hang and cannot leave a broken cache:

* it runs under an exclusive ``flock`` on ``<key>.lock`` in the cache root, which the kernel
  releases when its owner dies (even by SIGKILL); the file records the owner's pid and host
  so that a waiting process can say whom it waits for (where ``fcntl`` is missing, the lock
  is an exclusive-create file, broken once its recorded owner is dead);
* it compiles in a private ``<key>.tmp-<host>-<pid>`` directory and publishes it with one
  atomic rename to ``<key>``; a later process only loads a published library (no compiler
  call). Leftovers of killed builds are removed by the next builder;
* it is announced on stderr (``seqlab: building the native engine (first use, ~N s)...``)
  with its duration, and :func:`ensure_built` returns the seconds it took, so that a caller
  (the CLI) can run it before a training budget's clock starts.

Any failure (no compiler, no ninja, a compile error) is logged as a warning and remembered;
the engine then uses the fused backend and :func:`status` says why.

Environment: ``SEQLAB_NATIVE=0`` disables the native backend (simulates "no compiler");
``SEQLAB_BUILD_DIR`` overrides the cache root (default ``~/.cache/seqlab/native``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from seqlab.engine.function import ClassicKernel
from seqlab.functional.spec import CellSpec

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

CSRC = Path(__file__).parent / "csrc"
SOURCES = ("recurrence.cpp",)
# No -march=native: the cache may be shared between machines. The AVX2/FMA code paths are
# compiled with target pragmas inside the source and chosen at run time by CPUID.
# Where torch's own thread pool is OpenMP (Linux wheels), the extension is built with OpenMP too:
# ATen's parallel_for is header-only there and would otherwise run serially, and the time loop's
# thread team is an OpenMP region. The soname libgomp.so.1 resolves to the runtime torch has
# already loaded, so there is one pool. Elsewhere (e.g. macOS) the loop runs on one thread.
OPENMP = ["-fopenmp"] if "OpenMP" in torch.__config__.parallel_info() else []
CFLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", *OPENMP]
LDFLAGS = [*OPENMP]
# announced estimate of a first build when no earlier build on this machine was timed
DEFAULT_BUILD_SECONDS = 60.0

_lock = threading.Lock()
_state: dict[str, Any] = {
    "tried": False,
    "ops": None,
    "error": None,
    "build_dir": None,
    "build_seconds": 0.0,
}


def source_files(csrc: Path = CSRC) -> list[Path]:
    """Every file the library is compiled from: the sources and all headers beside them."""
    return sorted(p for p in csrc.iterdir() if p.suffix in (".cpp", ".h"))


def build_key(csrc: Path = CSRC) -> str:
    """Hash of everything the compiled library depends on, including where its sources are
    installed (two installs get two libraries; they never rebuild each other's)."""
    h = hashlib.sha256()
    h.update(str(csrc.resolve()).encode())
    for path in source_files(csrc):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    h.update(torch.__version__.encode())
    h.update(sys.version.encode())
    h.update(" ".join(CFLAGS + LDFLAGS).encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    root = os.environ.get("SEQLAB_BUILD_DIR") or Path.home() / ".cache" / "seqlab" / "native"
    return Path(root)


def build_dir() -> Path:
    """The published directory of this install's library (it exists once a build finished)."""
    return cache_root() / f"torch{torch.__version__}-{build_key()}"


def library_name() -> str:
    return "seqlab_engine_" + build_key()


def disabled_reason() -> str | None:
    if os.environ.get("SEQLAB_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return "disabled by SEQLAB_NATIVE=0"
    return None


# ---- the build lock


def _process_start(pid: int) -> str | None:
    """Start time of a process (Linux /proc), to tell a reused pid from the lock's owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def owner_record() -> dict[str, Any]:
    """What a lock file says about its owner: this process."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "start": _process_start(os.getpid()),
        "time": time.time(),
    }


def read_owner(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def owner_is_dead(owner: dict[str, Any] | None) -> bool:
    """True when the recorded owner certainly no longer runs (same host only)."""
    if not owner or owner.get("host") != socket.gethostname():
        return False
    pid = int(owner.get("pid", -1))
    if pid <= 0 or not _alive(pid):
        return True
    start = owner.get("start")
    return start is not None and _process_start(pid) not in (None, start)


class BuildLock:
    """Exclusive lock of one cache key's build, recovered from a dead owner.

    With ``fcntl`` the mutual exclusion is an ``flock`` (released by the kernel when the
    owner dies, however it dies) and the file's content (pid, host, start time) only says who
    holds it. Without ``fcntl`` the file's existence is the lock, and a waiter removes it once
    :func:`owner_is_dead` says its recorded owner is gone.
    """

    def __init__(self, path: Path, poll: float = 0.2) -> None:
        self.path = Path(path)
        self.poll = poll
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if free (or held by a dead owner); never waits."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is not None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(owner_record()).encode(), 0)
            self._fd = fd
            return True
        try:  # pragma: no cover - Windows
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if owner_is_dead(read_owner(self.path)):
                self.path.unlink(missing_ok=True)
            return False
        os.write(fd, json.dumps(owner_record()).encode())
        self._fd = fd
        return True

    def acquire(self) -> None:
        """Wait for the lock, saying once on stderr whom we wait for."""
        said = False
        while not self.try_acquire():
            if not said:
                owner = read_owner(self.path) or {}
                print(
                    f"seqlab: waiting for process {owner.get('pid', '?')} on "
                    f"{owner.get('host', '?')} to finish building the native engine "
                    f"(lock {self.path})...",
                    file=sys.stderr,
                    flush=True,
                )
                said = True
            time.sleep(self.poll)

    def release(self) -> None:
        if self._fd is None:
            return
        if fcntl is None:  # pragma: no cover - Windows
            os.close(self._fd)
            self.path.unlink(missing_ok=True)
        else:  # the file stays; a stale record is harmless, the flock is what counts
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> BuildLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ---- build, publish, load


def _estimate_seconds(root: Path) -> float:
    try:
        return float((root / "last_build_seconds").read_text())
    except (OSError, ValueError):
        return DEFAULT_BUILD_SECONDS


def _remove(path: Path) -> None:
    """Remove a directory without ever leaving a half-deleted one under its old name."""
    if not path.exists():
        return
    trash = path.with_name(f"{path.name}.trash-{os.getpid()}-{time.time_ns()}")
    try:
        path.rename(trash)
    except OSError:
        trash = path
    shutil.rmtree(trash, ignore_errors=True)


def _build(final: Path) -> None:
    """Compile into a private directory, load it, publish it as ``final`` (lock held)."""
    from torch.utils import cpp_extension

    root = final.parent
    for stale in root.glob(f"{final.name}.t*-*"):  # leftovers of killed builds and removals
        shutil.rmtree(stale, ignore_errors=True)
    _remove(final)  # an unpublished or unloadable library
    tmp = root / f"{final.name}.tmp-{socket.gethostname()}-{os.getpid()}"
    tmp.mkdir(parents=True)
    estimate = _estimate_seconds(root)
    print(
        f"seqlab: building the native engine (first use, ~{estimate:.0f} s; cache {final})...",
        file=sys.stderr,
        flush=True,
    )
    start = time.monotonic()
    cpp_extension.load(
        name=library_name(),
        sources=[str(CSRC / s) for s in SOURCES],
        extra_cflags=CFLAGS,
        extra_ldflags=LDFLAGS,
        build_directory=str(tmp),
        is_python_module=False,
        verbose=False,
    )
    seconds = time.monotonic() - start
    tmp.rename(final)  # atomic: the library appears complete or not at all
    (root / "last_build_seconds").write_text(f"{seconds:.1f}")
    print(f"seqlab: native engine built in {seconds:.1f} s", file=sys.stderr, flush=True)


def _load_library() -> None:
    """Load the published library, building it first if needed (waits for other builders)."""
    final = build_dir()
    library = final / (library_name() + ".so")
    damaged = False
    if library.exists():
        try:
            torch.ops.load_library(str(library))
            return
        except OSError as exc:  # damaged: rebuilt below
            log.warning("seqlab: cached native library %s unusable (%s); rebuilding", library, exc)
            damaged = True
    with BuildLock(final.parent / f"{final.name}.lock"):
        if library.exists() and not damaged:  # another process published it while we waited
            torch.ops.load_library(str(library))
            return
        _build(final)


def load() -> Any | None:
    """The ``torch.ops.seqlab_engine`` namespace, building it on first use; None if unusable."""
    reason = disabled_reason()
    if reason is not None:
        return None
    if _state["tried"]:  # the only path a compiled model traces once the library is loaded
        return _state["ops"]
    if torch.compiler.is_compiling():  # a build/load (locks, files) runs eagerly, untraced
        return torch.compiler.disable(_load_once)()  # (imports torch._dynamo: only here)
    return _load_once()


def _load_once() -> Any | None:
    with _lock:
        if _state["tried"]:
            return _state["ops"]
        start = time.monotonic()
        try:
            _state["build_dir"] = str(build_dir())
            _load_library()
            ops = torch.ops.seqlab_engine
            ops.forward  # noqa: B018 - raises if registration failed
            _state["ops"] = ops
        except Exception as exc:  # any build/load problem means "use the fallback"
            _state["error"] = f"{type(exc).__name__}: {str(exc).strip()[:2000]}"
            log.warning("seqlab: native recurrence backend unavailable, using fused: %s", exc)
        _state["build_seconds"] = time.monotonic() - start
        _state["tried"] = True
    return _state["ops"]


def loaded() -> Any | None:
    """The ops namespace if this process has already loaded the library, else None (never
    builds; for cheap availability checks on a hot path)."""
    return None if disabled_reason() is not None else _state["ops"]


def ensure_built() -> float:
    """Build (or wait for) and load the native engine now; the seconds this call took.

    For callers with a time budget (``seqlab train --minutes``): call it before the budget's
    clock starts, so a first-use build is not charged to training. Returns 0.0 when the
    library was already loaded in this process or the native backend is disabled; a failed
    build is not an error here (the engine falls back to fused, :func:`status` says why).
    """
    if disabled_reason() is not None or _state["tried"]:
        return 0.0
    start = time.monotonic()
    load()
    return time.monotonic() - start


def status() -> dict[str, Any]:
    """Availability of the native backend and why not (does not trigger a build)."""
    reason = disabled_reason()
    return {
        "available": reason is None and _state["ops"] is not None,
        "tried": _state["tried"],
        "reason": reason or _state["error"],
        "build_dir": _state["build_dir"] or str(build_dir()),
        "load_seconds": round(_state["build_seconds"], 3),
    }


class NativeKernel(ClassicKernel):
    """The C++ ops as a :class:`~seqlab.engine.function.Kernel`, like the fused one.

    The sequences of state and parameters are adapted onto the fixed op arguments
    ``forward(mode, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, save)`` and
    ``backward(mode, x, w_ih, w_hh, has_b_ih, has_b_hh, lengths, reverse, hbuf, cbuf, gates,
    gy, ghn, gcn)`` by :class:`~seqlab.engine.function.ClassicKernel`.
    """

    def __init__(self, ops: Any) -> None:
        self.ops = ops
        super().__init__(
            "native", ops.forward, ops.backward, (ops.forward_masked, ops.backward_masked)
        )

    def covers(self, spec: CellSpec) -> bool:
        return spec.native and super().covers(spec)

    def covers_h_mask(self, spec: CellSpec) -> bool:
        """Recurrent dropout in the thread-team loop (``forward_masked``/``backward_masked``):
        RNN, LSTM and the torch.nn GRU; the reset-before GRU's masked calls run on fused."""
        return self.covers(spec) and spec.kernel in _TEAM_KINDS


_TEAM_KINDS = (0, 1, 2, 3)  # RNN_TANH, RNN_RELU, LSTM, GRU: the C++ team loop
