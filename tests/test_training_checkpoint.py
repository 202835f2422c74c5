"""Checkpoints: round trip, refusal of bad files, atomic writes, bit-exact kill-and-resume."""

import contextlib
import json
import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import seqlab
from seqlab.functional.cells import LSTMState
from seqlab.training import (
    CheckpointError,
    TokenStreams,
    TrainConfig,
    Trainer,
    forward_with_resets,
    load_checkpoint,
    save_checkpoint,
)
from seqlab.training import checkpoint as ckpt

# --- file format -------------------------------------------------------------------------


def test_round_trip_and_state_trees(tmp_path):
    state = (torch.randn(2, 3), LSTMState(torch.randn(1, 2), torch.randn(1, 2)), None)
    t, spec = ckpt.pack_state(state)
    tensors = {"w": torch.randn(3, 4), "b16": torch.randn(5).bfloat16(), **t}
    path = save_checkpoint(tmp_path / "c.safetensors", tensors, {"spec": spec, "x": [1, 2.5]})
    got, meta = load_checkpoint(path)
    assert meta["x"] == [1, 2.5] and torch.equal(got["w"], tensors["w"])
    assert torch.equal(got["b16"], tensors["b16"])
    back = ckpt.unpack_state(got, meta["spec"])
    assert isinstance(back[1], LSTMState) and back[2] is None
    assert torch.equal(back[1].c, state[1].c) and torch.equal(back[0], state[0])
    # the file is plain safetensors: the stock reader opens it, no pickle involved
    import safetensors.torch

    assert set(safetensors.torch.load_file(str(path))) == set(tensors)


def _good(tmp_path):
    path = tmp_path / "good.safetensors"
    save_checkpoint(path, {"w": torch.arange(1000.0)}, {"step": 3})
    return path, path.read_bytes()


@pytest.mark.parametrize("cut", [0, 5, 100, -1, -500])
def test_truncated_file_is_refused(tmp_path, cut):
    path, data = _good(tmp_path)
    path.write_bytes(data[:cut] if cut >= 0 else data[:cut])
    with pytest.raises(CheckpointError, match="truncated|corrupted"):
        load_checkpoint(path)


@pytest.mark.parametrize("where", ["tensor", "metadata"])
def test_corrupted_bytes_are_refused(tmp_path, where):
    path, data = _good(tmp_path)
    raw = bytearray(data)
    if where == "tensor":
        raw[-17] ^= 0xFF  # a byte of the tensor data
    else:
        i = raw.index(b'\\"step\\": 3')  # JSON inside the JSON header
        raw[i + 10] = ord("4")
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(path)


def test_foreign_safetensors_file_is_refused(tmp_path):
    import safetensors.torch

    safetensors.torch.save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointError, match="not a seqlab checkpoint"):
        load_checkpoint(tmp_path / "x.safetensors")
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_crash_during_write_keeps_the_old_file(tmp_path, monkeypatch):
    path, data = _good(tmp_path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"w": torch.zeros(3)}, {"step": 4})
    assert path.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["good.safetensors"]  # no temp left


def test_rng_capture_restore_is_exact():
    import random

    import numpy as np

    t, m = ckpt.capture_rng()
    a = (torch.rand(3), random.random(), np.random.rand())
    ckpt.restore_rng(t, json.loads(json.dumps(m)))
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


# --- kill-and-resume ------------------------------------------------------------------


class Classifier(nn.Module):
    def __init__(self, hidden=8):
        super().__init__()
        self.config = {"hidden": hidden}
        self.rnn = nn.GRU(3, hidden, batch_first=True)
        self.drop = nn.Dropout(0.3)  # consumes the torch RNG: resume must restore it
        self.head = nn.Linear(hidden, 2)

    def forward(self, x, y):
        out, _ = self.rnn(x)
        return nn.functional.cross_entropy(self.head(self.drop(out[:, -1])), y)


def cls_data():
    g = torch.Generator().manual_seed(5)
    X = torch.randn(40, 6, 3, generator=g)
    ds = TensorDataset(X, (X.sum((1, 2)) > 0).long())
    return DataLoader(ds, batch_size=8, shuffle=True)  # shuffling uses the global RNG


class StreamLM(nn.Module):
    def __init__(self, V=11, H=12):
        super().__init__()
        # seqlab's LSTM: the carried state is an LSTMState stored in the checkpoint
        self.emb, self.rnn, self.out = nn.Embedding(V, 6), seqlab.LSTM(6, H), nn.Linear(H, V)
        self.drop = nn.Dropout(0.2)

    def loss(self, batch, state):
        def fwd(x, s):
            out, s = self.rnn(self.drop(self.emb(x.T)), s)  # time-major inside
            return out.transpose(0, 1), s

        out, state = forward_with_resets(fwd, batch["inputs"], state, batch["resets"])
        logits = self.out(out)  # (B, T, V)
        return nn.functional.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten()), state


def lm_data():
    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 11, (400,), generator=g)
    return TokenStreams(tokens, batch_size=4, seq_len=12, boundary_token=0)


CASES = {
    "classifier": (Classifier, cls_data, dict(epochs=3, max_steps=13, schedule="cosine",
                   warmup_steps=3, clip_norm=0.5, lr=1e-2)),
    "tbptt_streams": (StreamLM, lm_data, dict(epochs=2, tbptt_k1=5, tbptt_k2=4, stateful=True,
                      grad_accum=2, clip_value=0.5, lr=1e-2, optimizer="adamw")),
    "plateau_eval": (Classifier, cls_data, dict(epochs=4, schedule="plateau", eval_every=2,
                     plateau_patience=0, optimizer="sgd", momentum=0.9, lr=0.05)),
}  # fmt: skip


def _run(case, tmp, kill_at=None, resume=False, init_seed=11, save=True):
    cls, data, kw = CASES[case]
    torch.manual_seed(init_seed)
    model = cls()
    val = cls_data() if case == "plateau_eval" else None
    ckpt_kw = {"checkpoint_dir": str(tmp), "save_every": 5} if save else {}
    cfg = TrainConfig(seed=0, **ckpt_kw, **kw)
    tr = Trainer(model, data(), cfg, val_data=val)

    def kill(trainer, rec):
        if rec["step"] == kill_at:
            raise KeyboardInterrupt  # stands in for the process being killed after step k

    tr.callbacks.append(kill)
    with contextlib.suppress(KeyboardInterrupt):
        tr.fit(resume=tmp / "last.safetensors" if resume else None)
    return tr


@pytest.mark.parametrize("case", list(CASES))
def test_kill_and_resume_reproduces_losses_bit_exactly(tmp_path, case):
    full = _run(case, tmp_path / "a", save=False)
    _run(case, tmp_path / "b", kill_at=5)
    resumed = _run(case, tmp_path / "b", resume=True, init_seed=999)
    want = [r["loss"] for r in full.history]
    got = [r["loss"] for r in resumed.history]
    assert len(want) > 6 and got == want  # bit-exact, step for step
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in full.history]
    if case == "tbptt_streams":
        assert isinstance(full.carry, LSTMState)
    for p, q in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)
    if case == "plateau_eval":
        assert resumed.evals == full.evals and len(full.evals) >= 3


def test_resume_with_different_model_configuration_is_refused(tmp_path):
    _run("classifier", tmp_path, kill_at=5)
    model = Classifier(hidden=16)
    tr = Trainer(model, cls_data(), TrainConfig(max_steps=3))
    with pytest.raises(CheckpointError, match="hidden: 8 vs 16"):
        tr.fit(resume=tmp_path / "last.safetensors")
    model.config = {"hidden": 8}  # same declared config, different shapes
    with pytest.raises(CheckpointError, match="parameters do not match"):
        Trainer(model, cls_data(), TrainConfig(max_steps=3)).load(tmp_path / "last.safetensors")


def test_corrupted_last_checkpoint_is_refused_and_not_overwritten(tmp_path):
    _run("classifier", tmp_path, kill_at=5)
    last = tmp_path / "last.safetensors"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    cut = last.read_bytes()
    tr = Trainer(Classifier(), cls_data(), TrainConfig(max_steps=8, checkpoint_dir=str(tmp_path)))
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        tr.fit(resume=last)
    assert last.read_bytes() == cut  # nothing was written over it


KILL_SCRIPT = """
import os, signal, sys
import torch
sys.path.insert(0, sys.argv[2])
import test_training_checkpoint as T
from seqlab.training import Trainer, TrainConfig

torch.set_num_threads(1)
torch.manual_seed(11)
cls, data, kw = T.CASES["tbptt_streams"]
tr = Trainer(cls(), data(), TrainConfig(seed=0, checkpoint_dir=sys.argv[1], save_every=1, **kw))
def die(trainer, rec):
    if rec["step"] == 6:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no final save
tr.callbacks.append(die)
tr.fit()
"""


@pytest.mark.slow
def test_real_sigkill_then_resume_matches_uninterrupted(tmp_path):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(here.parent / "src")}
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "b"), str(here)], env=env)
    assert run.returncode == -signal.SIGKILL
    full = _run("tbptt_streams", tmp_path / "a", save=False)
    resumed = _run("tbptt_streams", tmp_path / "b", resume=True, init_seed=5)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
