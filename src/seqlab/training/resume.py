"""Pack a :class:`~seqlab.training.Trainer` into checkpoint tensors + JSON, and back.

Tensors: ``model.<name>`` (state_dict), ``optim.<param>.<name>`` (optimiser moments),
``rng.*`` (generator states now) and ``rng_epoch.*`` (at the start of the current epoch,
to replay its data order on resume), ``carry.*`` (the carried recurrent state).
JSON: model configuration and parameter shapes (checked on load), the training
configuration, counters, best metric, history, optimiser hyper-parameters, schedule state.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from seqlab.training import checkpoint as ckpt
from seqlab.training.checkpoint import CheckpointError

if TYPE_CHECKING:
    from seqlab.training.trainer import Trainer


def pack_trainer(tr: Trainer) -> tuple[dict[str, Tensor], dict]:
    tensors = {f"model.{k}": v for k, v in tr.model.state_dict().items()}
    opt_tensors, opt_meta = ckpt.pack_optimizer(tr.optimizer.state_dict())
    tensors.update(opt_tensors)
    rng_tensors, rng_meta = ckpt.capture_rng("rng")
    tensors.update(rng_tensors)
    epoch_meta = None
    if tr._epoch_rng is not None:
        et, epoch_meta = tr._epoch_rng
        tensors.update({"rng_epoch" + k[len("rng") :]: v for k, v in et.items()})
    carry_tensors, carry_spec = ckpt.pack_state(tr.carry, "carry")
    tensors.update(carry_tensors)
    meta = {
        "model_config": tr.model_config,
        "param_shapes": {k: list(v.shape) for k, v in tr.model.state_dict().items()},
        "train_config": asdict(tr.cfg),
        "counters": {
            "step": tr.step,
            "epoch": tr.epoch,
            "batch_idx": tr.batch_idx,
            "window_idx": tr.window_idx,
            "best": tr.best,
            "bad_evals": tr.bad_evals,
        },
        "history": tr.history,
        "evals": tr.evals,
        "optimizer": opt_meta,
        "scheduler": tr.scheduler.state_dict() if tr.scheduler is not None else None,
        "rng": rng_meta,
        "rng_epoch": epoch_meta,
        "carry": carry_spec,
    }
    return tensors, meta


def _check_model(tr: Trainer, meta: dict, path: Path) -> None:
    saved_cfg, cfg = meta.get("model_config", {}), tr.model_config
    if saved_cfg != cfg:
        keys = sorted(set(saved_cfg) | set(cfg))
        diff = {k: (saved_cfg.get(k), cfg.get(k)) for k in keys if saved_cfg.get(k) != cfg.get(k)}
        raise CheckpointError(
            f"checkpoint {path}: model configuration differs (field: checkpoint vs this model): "
            + ", ".join(f"{k}: {a!r} vs {b!r}" for k, (a, b) in diff.items())
        )
    saved = meta["param_shapes"]
    now = {k: list(v.shape) for k, v in tr.model.state_dict().items()}
    if saved != now:
        missing = sorted(set(now) - set(saved))
        extra = sorted(set(saved) - set(now))
        shapes = [f"{k}: {saved[k]} vs {now[k]}" for k in sorted(set(saved) & set(now))
                  if saved[k] != now[k]]  # fmt: skip
        raise CheckpointError(
            f"checkpoint {path}: parameters do not match this model (a different model "
            f"configuration?); shape checkpoint vs model: {shapes}; only in model: {missing}; "
            f"only in checkpoint: {extra}"
        )


def unpack_trainer(tr: Trainer, tensors: dict[str, Tensor], meta: dict, path: Path) -> None:
    _check_model(tr, meta, path)
    tr.model.load_state_dict(ckpt.prefixed(tensors, "model"), strict=True)
    tr.optimizer.load_state_dict(ckpt.unpack_optimizer(tensors, meta["optimizer"]))
    if (tr.scheduler is None) != (meta["scheduler"] is None):
        raise CheckpointError(
            f"checkpoint {path}: learning-rate schedule present in "
            f"{'this run' if meta['scheduler'] is None else 'the checkpoint'} only"
        )
    if tr.scheduler is not None:
        tr.scheduler.load_state_dict(meta["scheduler"])
    c = meta["counters"]
    tr.step, tr.epoch, tr.batch_idx, tr.window_idx = (
        c["step"], c["epoch"], c["batch_idx"], c["window_idx"]
    )  # fmt: skip
    tr.best, tr.bad_evals = c["best"], c["bad_evals"]
    tr.history, tr.evals = list(meta["history"]), list(meta["evals"])
    tr.carry = ckpt.unpack_state(tensors, meta["carry"])
    now_t = {k: v for k, v in tensors.items() if k.startswith("rng.")}
    tr._resume_rng = (now_t, meta["rng"])
    if meta["rng_epoch"] is not None:
        epoch_t = {"rng" + k[len("rng_epoch") :]: v for k, v in tensors.items()
                   if k.startswith("rng_epoch.")}  # fmt: skip
        tr._epoch_rng = (epoch_t, meta["rng_epoch"])
    tr._stop = None
