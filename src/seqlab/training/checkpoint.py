"""Checkpoints: tensors in safetensors, everything else in JSON, written atomically.

One checkpoint is one ``.safetensors`` file. Its tensors hold the numbers (model weights,
optimiser moments, RNG byte states, a carried recurrent state); its header metadata holds
one JSON document (configuration, step counters, history, schedule state) under the key
``"seqlab"``. Nothing is pickled, so loading cannot run code.

Integrity: the metadata also stores ``"seqlab.sha256"``, a SHA-256 over every tensor's
name, dtype, shape and bytes plus the JSON text. :func:`load_checkpoint` recomputes it and
raises :class:`CheckpointError` for a truncated, corrupted or foreign file.

Atomicity: :func:`save_checkpoint` writes ``<name>.tmp-<pid>`` in the same directory,
flushes and fsyncs it, then ``os.replace``-s it over the target. A crash at any point
leaves either the old file or the new one, never a half-written one.

RNG state (for bit-exact resume): :func:`capture_rng` / :func:`restore_rng` turn the
torch, Python ``random`` and NumPy generator states into tensors + JSON and back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
from collections import namedtuple
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor

from seqlab.functional.cells import LSTMState

FORMAT = "seqlab-checkpoint"
VERSION = 1


_TMP = re.compile(r"\.tmp-(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupted, or does not fit the model."""


def _digest(tensors: dict[str, Tensor], meta_json: str) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    h.update(meta_json.encode())
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, tensors: dict[str, Tensor], meta: dict) -> Path:
    """Write ``tensors`` and the JSON-serialisable ``meta`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_temp_files(path.parent)  # half-written checkpoints of killed processes
    flat = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta_json = json.dumps({"format": FORMAT, "version": VERSION, **meta}, sort_keys=True)
    header = {"seqlab": meta_json, "seqlab.sha256": _digest(flat, meta_json)}
    data = safetensors.torch.save(flat, metadata=header)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def clean_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Remove ``*.tmp-<pid>`` files in ``folder`` whose writer process is gone."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for f in folder.iterdir():
        m = _TMP.search(f.name)
        if m and f.is_file() and not pid_alive(int(m.group(1))):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
                removed.append(f)
    return removed


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict]:
    """Read and verify a checkpoint; returns ``(tensors, meta)`` or raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    data = path.read_bytes()
    try:
        tensors = safetensors.torch.load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
    except Exception as err:  # safetensors raises its own error type for bad files
        raise CheckpointError(
            f"checkpoint {path}: unreadable ({len(data)} bytes; truncated or corrupted?): {err}"
        ) from err
    meta_json, stored = header.get("seqlab"), header.get("seqlab.sha256")
    if meta_json is None or stored is None:
        raise CheckpointError(f"checkpoint {path}: not a seqlab checkpoint (no seqlab metadata)")
    if _digest(tensors, meta_json) != stored:
        raise CheckpointError(f"checkpoint {path}: checksum mismatch, the file is corrupted")
    meta = json.loads(meta_json)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path}: format {meta.get('format')!r} v{meta.get('version')}, "
            f"expected {FORMAT!r} v{VERSION}"
        )
    return tensors, meta


def prefixed(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of ``tensors`` under ``prefix.`` with the prefix removed."""
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


# --- optimiser state: tensors to safetensors, the rest to JSON --------------------------


def pack_optimizer(state: dict) -> tuple[dict[str, Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (``optim.<param>.<name>``) and JSON."""
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for name, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unpack_optimizer(tensors: dict[str, Tensor], meta: dict) -> dict:
    """Inverse of :func:`pack_optimizer` (tuples such as Adam's ``betas`` restored)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in prefixed(tensors, "optim").items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, entry in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(entry)
    groups = [
        {k: tuple(v) if k == "betas" and isinstance(v, list) else v for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


# --- RNG state ----------------------------------------------------------------------------


def capture_rng(prefix: str = "rng") -> tuple[dict[str, Tensor], dict]:
    """Torch (byte state as a uint8 tensor), NumPy and Python ``random`` generator states."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors = {
        f"{prefix}.torch": torch.get_rng_state(),
        f"{prefix}.numpy": torch.from_numpy(keys.astype(np.int64)),
    }
    version, internal, gauss_next = random.getstate()
    meta = {
        "numpy": [kind, int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
    }
    return tensors, meta


def restore_rng(tensors: dict[str, Tensor], meta: dict, prefix: str = "rng") -> None:
    """Set the three generators back to a state from :func:`capture_rng`."""
    torch.set_rng_state(tensors[f"{prefix}.torch"])
    kind, pos, has_gauss, gauss = meta["numpy"]
    keys = tensors[f"{prefix}.numpy"].numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


# --- recurrent state trees ----------------------------------------------------------------


def pack_state(state: Any, prefix: str = "carry") -> tuple[dict[str, Tensor], Any]:
    """Flatten a state tree (Tensor / tuple / NamedTuple / list / None) to tensors + a spec."""
    tensors: dict[str, Tensor] = {}

    def walk(node: Any) -> Any:
        if node is None:
            return None
        if isinstance(node, Tensor):
            key = f"{prefix}.{len(tensors)}"
            tensors[key] = node
            return key
        if isinstance(node, tuple) and hasattr(node, "_fields"):
            return {"namedtuple": type(node).__name__, "fields": list(node._fields),
                    "items": [walk(n) for n in node]}  # fmt: skip
        if isinstance(node, (tuple, list)):
            return {"seq": type(node).__name__, "items": [walk(n) for n in node]}
        raise TypeError(f"state: cannot store a {type(node).__name__} in a checkpoint")

    return tensors, walk(state)


def unpack_state(tensors: dict[str, Tensor], spec: Any) -> Any:
    """Inverse of :func:`pack_state`; ``LSTMState`` comes back as seqlab's class."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return tensors[spec]
    items = [unpack_state(tensors, s) for s in spec["items"]]
    if "namedtuple" in spec:
        cls = LSTMState if spec["namedtuple"] == "LSTMState" else None
        cls = cls or namedtuple(spec["namedtuple"], spec["fields"])
        return cls(*items)
    return tuple(items) if spec["seq"] == "tuple" else items
