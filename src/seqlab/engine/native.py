"""Build-on-first-use loader of the native (C++) recurrence kernels.

The extension (``csrc/recurrence.cpp``, one translation unit registering ``torch.ops``) is
compiled with ``torch.utils.cpp_extension.load`` into a cache directory keyed by a hash of the
sources, the torch version, the Python version and the compiler flags, so a fresh machine builds
it once automatically and every later process just loads the cached library. Any failure (no
compiler, no ninja, a compile error) is logged as a warning and remembered; the engine then
uses the fused backend and :func:`status` says why.

Environment: ``SEQLAB_NATIVE=0`` disables the native backend (simulates "no compiler");
``SEQLAB_BUILD_DIR`` overrides the cache root (default ``~/.cache/seqlab/native``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import torch

from seqlab.engine.function import ClassicKernel
from seqlab.functional.spec import CellSpec

log = logging.getLogger(__name__)

CSRC = Path(__file__).parent / "csrc"
SOURCES = ("recurrence.cpp",)
HEADERS = ("kernels.h", "panels.h")
# No -march=native: the cache may be shared between machines. The AVX2/FMA code paths are
# compiled with target pragmas inside the source and chosen at run time by CPUID.
# Where torch's own thread pool is OpenMP (Linux wheels), the extension is built with OpenMP too:
# ATen's parallel_for is header-only there and would otherwise run serially, and the time loop's
# thread team is an OpenMP region. The soname libgomp.so.1 resolves to the runtime torch has
# already loaded, so there is one pool. Elsewhere (e.g. macOS) the loop runs on one thread.
OPENMP = ["-fopenmp"] if "OpenMP" in torch.__config__.parallel_info() else []
CFLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", *OPENMP]
LDFLAGS = [*OPENMP]

_lock = threading.Lock()
_state: dict[str, Any] = {"tried": False, "ops": None, "error": None, "build_dir": None}


def build_key() -> str:
    """Hash of everything the compiled library depends on."""
    h = hashlib.sha256()
    for name in SOURCES + HEADERS:
        h.update((CSRC / name).read_bytes())
    h.update(torch.__version__.encode())
    h.update(sys.version.encode())
    h.update(" ".join(CFLAGS + LDFLAGS).encode())
    return h.hexdigest()[:16]


def build_dir() -> Path:
    root = os.environ.get("SEQLAB_BUILD_DIR") or Path.home() / ".cache" / "seqlab" / "native"
    return Path(root) / f"torch{torch.__version__}-{build_key()}"


def disabled_reason() -> str | None:
    if os.environ.get("SEQLAB_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return "disabled by SEQLAB_NATIVE=0"
    return None


def load() -> Any | None:
    """The ``torch.ops.seqlab_engine`` namespace, building it on first use; None if unusable."""
    reason = disabled_reason()
    if reason is not None:
        return None
    if _state["tried"]:
        return _state["ops"]
    with _lock:
        if _state["tried"]:
            return _state["ops"]
        try:
            from torch.utils import cpp_extension

            directory = build_dir()
            directory.mkdir(parents=True, exist_ok=True)
            _state["build_dir"] = str(directory)
            cpp_extension.load(
                name="seqlab_engine_" + build_key(),
                sources=[str(CSRC / s) for s in SOURCES],
                extra_cflags=CFLAGS,
                extra_ldflags=LDFLAGS,
                build_directory=str(directory),
                is_python_module=False,
                verbose=False,
            )
            ops = torch.ops.seqlab_engine
            ops.forward  # noqa: B018 - raises if registration failed
            _state["ops"] = ops
        except Exception as exc:  # any build/load problem means "use the fallback"
            _state["error"] = f"{type(exc).__name__}: {str(exc).strip()[:2000]}"
            log.warning("seqlab: native recurrence backend unavailable, using fused: %s", exc)
        _state["tried"] = True
    return _state["ops"]


def status() -> dict[str, Any]:
    """Availability of the native backend and why not (does not trigger a build)."""
    reason = disabled_reason()
    return {
        "available": reason is None and _state["ops"] is not None,
        "tried": _state["tried"],
        "reason": reason or _state["error"],
        "build_dir": _state["build_dir"] or str(build_dir()),
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
        super().__init__("native", ops.forward, ops.backward)

    def covers(self, spec: CellSpec) -> bool:
        return spec.native and super().covers(spec)
