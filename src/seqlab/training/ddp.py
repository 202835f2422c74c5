"""Data-parallel training with ``torch.distributed`` (DDP), launched by torchrun.

Launch a script on ``N`` processes (CPU: the ``gloo`` backend)::

    python -m torch.distributed.run --nproc_per_node=2 train.py

Inside the script::

    from seqlab.training import Trainer, TrainConfig
    from seqlab.training.ddp import init_distributed, shard_rows

    init_distributed()                         # reads RANK / WORLD_SIZE / MASTER_* set by torchrun
    data = [shard_rows(b) for b in global_batches]    # this rank's rows of each global batch
    Trainer(model, data, TrainConfig(...)).fit()      # wraps the model in DDP itself

Why the result equals single-process training: each rank computes the mean loss over its
``B/N`` rows; DDP all-reduces and *averages* the gradients, and the mean of ``N`` equal-size
per-shard means is the mean over the global batch of ``B`` rows. Every rank starts from the
same weights (DDP broadcasts rank 0's at wrap time) and applies the same averaged gradient,
so the weights stay identical across ranks and equal the single-process ones up to float
summation order. Only rank 0 writes checkpoints, metrics files and the progress bar.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn


def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return rank() == 0


def init_distributed(backend: str = "gloo") -> bool:
    """Join the process group described by torchrun's environment variables.

    Returns False (and does nothing) when not launched by torchrun (no ``WORLD_SIZE``).
    """
    if dist.is_initialized():
        return True
    if "WORLD_SIZE" not in os.environ:
        return False
    dist.init_process_group(backend=backend)
    return True


def shutdown() -> None:
    """Leave the process group (call at the end of a torchrun script)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_rows(batch: Any, dim: int = 0) -> Any:
    """This rank's contiguous share of a batch: rows ``[r·B/N, (r+1)·B/N)`` along ``dim``.

    Works on a tensor or a dict / tuple / list of tensors; ``B`` must divide by ``N``
    so every rank's mean loss has equal weight.
    """
    if isinstance(batch, Tensor):
        n, r = world_size(), rank()
        if batch.shape[dim] % n:
            raise ValueError(
                f"batch: {batch.shape[dim]} rows along dim {dim} do not split into {n} equal shards"
            )
        size = batch.shape[dim] // n
        return batch.narrow(dim, r * size, size)
    if isinstance(batch, dict):
        return {k: shard_rows(v, dim) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard_rows(v, dim) for v in batch)
    return batch


def wrap_model(model: nn.Module) -> nn.Module:
    """``DistributedDataParallel(model)`` inside a multi-process group, else ``model``."""
    if not is_distributed():
        return model
    return nn.parallel.DistributedDataParallel(model)


def all_reduce_mean(value: float) -> float:
    """Mean of a Python number over all ranks (identity without a process group)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / world_size()
