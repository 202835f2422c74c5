"""Training through time: the Trainer, truncated BPTT, streams, gradient flow, checkpoints.

See :mod:`seqlab.training.trainer` for a worked example.
"""

from seqlab.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from seqlab.training.config import NonFiniteLossError, TrainConfig, TrainResult, seed_everything
from seqlab.training.gradflow import GradFlow, hidden_grad_norms
from seqlab.training.logs import MetricsFile
from seqlab.training.schedules import ReduceOnPlateau, WarmupCosine
from seqlab.training.streams import TokenStreams, forward_with_resets
from seqlab.training.tbptt import (
    TBPTT,
    chunked_forward,
    detach_state,
    reset_rows,
    tbptt_backward,
)
from seqlab.training.trainer import Trainer

__all__ = [
    "TBPTT",
    "CheckpointError",
    "GradFlow",
    "MetricsFile",
    "NonFiniteLossError",
    "ReduceOnPlateau",
    "TokenStreams",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "WarmupCosine",
    "chunked_forward",
    "detach_state",
    "forward_with_resets",
    "hidden_grad_norms",
    "load_checkpoint",
    "reset_rows",
    "save_checkpoint",
    "seed_everything",
    "tbptt_backward",
]
