"""Crash-safe files for run folders: atomic replacement, checksummed weights, temp clean-up.

Atomic write: the bytes go to ``<name>.tmp-<pid>`` in the target's own folder (same file
system, so the rename cannot degrade to a copy), are flushed and fsync-ed, then
``os.replace``-d over the target and the folder is fsync-ed. A kill at any point leaves the
old file or the new one, never a mix; a leftover ``*.tmp-<pid>`` of a dead process is
removed by :func:`clean_temp_files`.

Weights: ``model.safetensors`` carries ``"seqlab.sha256"`` in its header metadata, the
SHA-256 over every tensor's name, dtype, shape and bytes (the same digest as training
checkpoints, :mod:`seqlab.training.checkpoint`). :func:`load_weights` recomputes it, so a
flipped byte, a truncated file or weights re-saved by another tool are refused by name.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import safetensors.torch
from torch import Tensor

from seqlab.training.checkpoint import CheckpointError, _digest, clean_temp_files

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "clean_temp_files",
    "load_weights",
    "save_weights",
]

WEIGHTS_FORMAT = "seqlab-weights"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success fsync it and rename it over
    ``path``; on any error (or kill) the target is untouched and the temp file removed."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_weights(path: str | os.PathLike, tensors: dict[str, Tensor]) -> None:
    """Write ``tensors`` as safetensors with a SHA-256 in the metadata, atomically."""
    flat = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    info = json.dumps({"format": WEIGHTS_FORMAT, "version": 1}, sort_keys=True)
    header = {"seqlab": info, "seqlab.sha256": _digest(flat, info)}
    atomic_write_bytes(path, safetensors.torch.save(flat, metadata=header))


def load_weights(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read weights written by :func:`save_weights`; :class:`CheckpointError` names the file
    and the reason when it is unreadable, lacks the checksum or fails it."""
    path = Path(path)
    data = path.read_bytes()
    try:
        tensors = safetensors.torch.load(data)
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
    except Exception as err:  # safetensors raises its own error type for bad files
        raise CheckpointError(
            f"{path}: unreadable weights ({len(data)} bytes; truncated or corrupted?): {err}"
        ) from None
    info, stored = header.get("seqlab"), header.get("seqlab.sha256")
    if info is None or stored is None:
        raise CheckpointError(
            f"{path}: weights carry no seqlab checksum (written or re-saved by another tool?); "
            "refusing to load unverified weights"
        )
    if _digest(tensors, info) != stored:
        raise CheckpointError(f"{path}: checksum mismatch, the weights file is corrupted")
    return tensors
