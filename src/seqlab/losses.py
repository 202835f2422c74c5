"""Per-step sequence losses with padding masks.

All functions are batch-first. Shapes: ``B`` batch, ``T`` time steps, ``V`` classes,
``F`` trailing feature dims (any number, including none).

=================  ==============  ============================================
argument           shape           meaning
=================  ==============  ============================================
``logits``         (B, T, V)       unnormalised scores per step
``targets``        (B, T)          class ids (int64)
``pred/target``    (B, T, *F)      regression outputs / values
``lengths``        (B,)            valid steps per row (steps ``t < lengths[b]``)
``mask``           (B, T)          bool, True where a step counts
=================  ==============  ============================================

Give either ``lengths`` or ``mask`` (or neither: every step counts). Reductions:

- ``"sum"``: Σ_{b,t valid} ℓ_{b,t}
- ``"mean"``: the sum divided by the number of valid steps (valid *elements* for MSE), so a
  padded batch gives exactly the loss of its unpadded sequences concatenated;
- ``"none"``: the (B, T) per-step losses with padded steps set to exactly 0.

Cross-entropy with label smoothing ε over V classes uses the target distribution
q = (1 − ε)·onehot(y) + ε/V, i.e. ℓ = −Σ_v q_v log softmax(z)_v, the same as
``torch.nn.functional.cross_entropy(label_smoothing=ε)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_REDUCTIONS = ("mean", "sum", "none")


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """Bool mask (B, max_len), True at steps ``t < lengths[b]``."""
    if not isinstance(lengths, Tensor) or lengths.dim() != 1:
        raise ValueError(f"lengths must be a 1-D tensor (B,), got {_describe(lengths)}")
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    t = torch.arange(max_len, device=lengths.device)
    return t.unsqueeze(0) < lengths.unsqueeze(1)


def _describe(x: object) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def _kind(x: object) -> str:
    return f"dtype {x.dtype} shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def _step_mask(B: int, T: int, lengths: Tensor | None, mask: Tensor | None, device) -> Tensor:
    """Resolve ``lengths``/``mask`` into a checked (B, T) bool mask."""
    if lengths is not None and mask is not None:
        raise ValueError("give lengths or mask, not both")
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.shape != (B, T):
            raise ValueError(f"mask must have shape (B, T) = {(B, T)}, got {_describe(mask)}")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (B, T), got dtype {mask.dtype}")
        return mask.to(device=device, dtype=torch.bool)
    if lengths is None:
        return torch.ones(B, T, dtype=torch.bool, device=device)
    if not isinstance(lengths, Tensor) or lengths.shape != (B,):
        raise ValueError(f"lengths must have shape (B,) = ({B},), got {_describe(lengths)}")
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be an integer tensor, got dtype {lengths.dtype}")
    if B and (int(lengths.min()) < 0 or int(lengths.max()) > T):
        raise ValueError(
            f"lengths must lie in [0, T={T}], got min {int(lengths.min())} max {int(lengths.max())}"
        )
    return lengths_to_mask(lengths.to(device), T)


def _reduce(per_step: Tensor, mask: Tensor, reduction: str, count: Tensor) -> Tensor:
    per_step = per_step.masked_fill(~mask, 0.0)
    if reduction == "none":
        return per_step
    total = per_step.sum()
    if reduction == "sum":
        return total
    # Guard the empty batch: 0/0 would be NaN; an all-padding batch contributes 0.
    return total / count.clamp(min=1).to(total.dtype)


def sequence_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    lengths: Tensor | None = None,
    mask: Tensor | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Masked per-step cross-entropy ℓ_{b,t} = −log softmax(logits[b,t])[targets[b,t]].

    Padded steps never contribute, whatever their target id holds (e.g. a pad id or -100).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if not isinstance(logits, Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a float tensor (B, T, V), got {_kind(logits)}")
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be an integer tensor (B, T), got {_kind(targets)}")
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, T, V), got shape {tuple(logits.shape)}")
    if logits.shape[2] == 0:
        raise ValueError(f"logits must have V >= 1 classes, got shape {tuple(logits.shape)}")
    B, T, V = logits.shape
    if targets.shape != (B, T):
        raise ValueError(f"targets must have shape (B, T) = {(B, T)}, got {tuple(targets.shape)}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer class ids, got dtype {targets.dtype}")
    m = _step_mask(B, T, lengths, mask, logits.device)
    valid = targets[m]
    if valid.numel() and (int(valid.min()) < 0 or int(valid.max()) >= V):
        raise ValueError(
            f"targets must lie in [0, V={V}) at valid steps, got min {int(valid.min())} "
            f"max {int(valid.max())}"
        )
    safe = targets.masked_fill(~m, 0)  # padded ids may be anything; make gather safe
    logp = torch.log_softmax(logits, dim=-1)  # (B, T, V)
    nll = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (B, T)
    if label_smoothing > 0.0:
        smooth = -logp.mean(dim=-1)  # (B, T): −(1/V) Σ_v log p_v
        nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    return _reduce(nll, m, reduction, m.sum())


def sequence_mse(
    pred: Tensor,
    target: Tensor,
    lengths: Tensor | None = None,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Masked per-step squared error ℓ_{b,t} = Σ_f (pred[b,t,f] − target[b,t,f])².

    ``"mean"`` divides by the number of valid *elements* (valid steps × features), matching
    ``F.mse_loss`` on the unpadded values; ``"none"`` returns the per-step sums (B, T).
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    for name, t in (("pred", pred), ("target", target)):
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a float tensor (B, T, *F), got {_kind(t)}")
    if pred.dim() < 2:
        raise ValueError(f"pred must be (B, T, *F), got shape {tuple(pred.shape)}")
    if target.shape != pred.shape:
        raise ValueError(
            f"target must match pred shape {tuple(pred.shape)}, got {tuple(target.shape)}"
        )
    B, T = pred.shape[:2]
    m = _step_mask(B, T, lengths, mask, pred.device)
    per_elem = (pred - target).pow(2).reshape(B, T, math.prod(pred.shape[2:]))  # (B, T, F)
    per_step = per_elem.sum(-1)  # (B, T)
    return _reduce(per_step, m, reduction, m.sum() * per_elem.shape[-1])
