"""Masked per-step cross-entropy for the Transformers' ``loss(batch)`` methods.

    ℓ = (1 / N) Σ_{b, t valid} −log softmax(logits[b, t])[targets[b, t]],  N = number of valid
    steps; step t of row b is valid when t < lengths[b] (all steps when lengths is None) and,
    if ``pad_id`` is given, targets[b, t] != pad_id.

Same definition as seqlab.losses.sequence_cross_entropy (reduction="mean"); kept local so the
Transformer package does not depend on the recurrent models' branch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["masked_cross_entropy"]


def masked_cross_entropy(
    logits: Tensor, targets: Tensor, lengths: Tensor | None = None, pad_id: int | None = None
) -> Tensor:
    """``logits`` (B, T, V), ``targets`` (B, T), ``lengths`` (B,) -> scalar mean loss."""
    if logits.dim() != 3:
        raise ValueError(f"logits: expected (B, T, V), got {tuple(logits.shape)}")
    b, t, v = logits.shape
    if targets.shape != (b, t):
        raise ValueError(f"targets: expected shape (B, T) = ({b}, {t}), got {tuple(targets.shape)}")
    valid = torch.ones(b, t, dtype=torch.bool, device=logits.device)
    if lengths is not None:
        if lengths.shape != (b,):
            raise ValueError(f"lengths: expected shape ({b},), got {tuple(lengths.shape)}")
        valid &= torch.arange(t, device=logits.device) < lengths.to(logits.device)[:, None]
    if pad_id is not None:
        valid &= targets != pad_id
    safe = targets.masked_fill(~valid, 0)  # padded ids may be anything; keep the gather legal
    nll = F.cross_entropy(logits.reshape(-1, v), safe.reshape(-1), reduction="none").view(b, t)
    return (nll * valid).sum() / valid.sum().clamp(min=1)
