"""Training through time: the Trainer, truncated BPTT, streams, gradient flow, checkpoints.

Quick start (this exact code runs in tests/test_training_docs.py) — a character-level
language model trained with TBPTT(k1=8) over 4 parallel streams of one text, state carried
from batch to batch, evaluated by loss every 5 steps, checkpoints in ``run_dir``::

    import torch
    from torch import nn
    import seqlab
    from seqlab.training import TokenStreams, TrainConfig, Trainer, forward_with_resets

    text = "to be or not to be, that is the question. " * 20
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(ch) for ch in text])

    class CharLM(nn.Module):
        def __init__(self, V, H=32):
            super().__init__()
            self.config = {"V": V, "H": H}          # checked when resuming
            self.emb, self.rnn = nn.Embedding(V, 16), seqlab.LSTM(16, H)
            self.out = nn.Linear(H, V)

        def loss(self, batch, state):               # TBPTT convention: (loss, new_state)
            def run(x, s):                          # x (B, T) -> outputs (B, T, H)
                y, s = self.rnn(self.emb(x.T), s)
                return y.transpose(0, 1), s
            y, state = forward_with_resets(run, batch["inputs"], state, batch["resets"])
            logits = self.out(y)                    # (B, T, V)
            return nn.functional.cross_entropy(logits.flatten(0, 1),
                                               batch["targets"].flatten()), state

    train = TokenStreams(ids, batch_size=4, seq_len=16)
    val = TokenStreams(ids[:200], batch_size=2, seq_len=16)
    cfg = TrainConfig(epochs=2, lr=1e-2, tbptt_k1=8, stateful=True, clip_norm=1.0,
                      eval_every=5, checkpoint_dir=run_dir, time_budget_s=60)
    result = Trainer(CharLM(len(vocab)), train, cfg, val_data=val).fit()
    losses = [r["loss"] for r in result.history]   # one record per optimiser step

Modules: :mod:`~seqlab.training.trainer` (the loop), :mod:`~seqlab.training.config`
(TrainConfig, loss convention), :mod:`~seqlab.training.tbptt`,
:mod:`~seqlab.training.streams`, :mod:`~seqlab.training.gradflow`,
:mod:`~seqlab.training.checkpoint`, :mod:`~seqlab.training.schedules`,
:mod:`~seqlab.training.logs`, :mod:`~seqlab.training.ddp`; metrics live in
:mod:`seqlab.metrics`.
"""

from seqlab.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from seqlab.training.config import NonFiniteLossError, TrainConfig, TrainResult, seed_everything
from seqlab.training.gradflow import GradFlow, bidirectional_grad_norms, hidden_grad_norms
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
    "bidirectional_grad_norms",
    "hidden_grad_norms",
    "load_checkpoint",
    "reset_rows",
    "save_checkpoint",
    "seed_everything",
    "tbptt_backward",
]
