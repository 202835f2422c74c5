"""Argument checks shared by the models: every error names the argument and expected vs got."""

from __future__ import annotations

from torch import Tensor

from seqlab.functional.spec import cell_choices

#: the models' ``cell=`` names at import time; checks call :func:`cells` (kinds registered
#: later count too)
CELLS = cell_choices()


def cells() -> tuple[str, ...]:
    """The models' ``cell=`` names, read from the cell descriptions now."""
    return cell_choices()


def describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"shape {tuple(x.shape)} dtype {x.dtype}"
    return type(x).__name__


def check_choice(name: str, value: object, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_positive(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_tokens(name: str, tokens: object, vocab_size: int, dims: int = 2) -> Tensor:
    """Integer ids of ``dims`` dimensions, all in [0, vocab_size)."""
    if not isinstance(tokens, Tensor) or tokens.is_floating_point() or tokens.is_complex():
        raise TypeError(f"{name} must be an integer tensor of token ids, got {describe(tokens)}")
    if tokens.dim() != dims:
        shape = "(B, T)" if dims == 2 else "(B,)"
        raise ValueError(f"{name} must be {shape}, got shape {tuple(tokens.shape)}")
    if tokens.numel():
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"{name} ids must lie in [0, vocab_size={vocab_size}), got min {lo} max {hi}"
            )
    return tokens.long()


def check_features(name: str, x: object, size: int) -> Tensor:
    """Dense batch-first input (B, T, size)."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor (B, T, {size}), got {describe(x)}")
    if x.dim() != 3 or x.shape[-1] != size:
        raise ValueError(f"{name} must be (B, T, {size}), got shape {tuple(x.shape)}")
    return x
