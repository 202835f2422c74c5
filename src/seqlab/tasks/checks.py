"""Range checks of task settings, run when a configuration is resolved.

A value of the right type can still be meaningless (``batch_size=0``, ``lr=0``,
``valid_fraction=1.5``, ``season=0``) or impossible here (``hidden=100000000``). Each rule
below names the setting, what it accepts and what it got, as a :class:`BadSetting` (the CLI
prints it on one line and exits 2). Rules go by setting name, so every task that has a
setting shares its rule; checks that need the data (``ar_order`` against the series length)
live in the task.
"""

from __future__ import annotations

import math
import os
from dataclasses import fields
from typing import Any


class BadSetting(ValueError):
    """A setting or option outside its valid range (CLI exit status 2)."""


def _int_at_least(lo: int):
    return lambda v: v >= lo, f"an integer >= {lo}"


def _choice(*options: str):
    return lambda v: v in options, "one of " + ", ".join(repr(o) for o in options)


_POSITIVE = (lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
_NONNEG = (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
_PROB = (lambda v: 0 <= v < 1, "a number in [0, 1)")
_OPEN01 = (lambda v: 0 < v < 1, "a number strictly between 0 and 1")

RULES: dict[str, tuple[Any, str]] = {
    "lr": _POSITIVE,
    "weight_decay": _NONNEG,
    "clip": _NONNEG,
    "minutes": _POSITIVE,
    "max_steps": _int_at_least(0),
    "eval_every": _int_at_least(1),
    "patience": _int_at_least(0),
    "log_every": _int_at_least(1),
    "lr_decay": (lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "lr_final": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "clock": _choice("wall", "cpu"),
    "limit": _int_at_least(0),
    "seed": _int_at_least(0),
    "threads": _int_at_least(0),  # 0: chosen for the machine (tasks.threads)
    "batch_size": _int_at_least(1),
    "impl": _choice("seqlab", "torch"),
    "embed": _int_at_least(1),
    "hidden": _int_at_least(1),
    "layers": _int_at_least(1),
    "heads": _int_at_least(1),
    "dropout": _PROB,
    "context": _int_at_least(1),
    "bptt": _int_at_least(1),
    "eval_chars": _int_at_least(0),
    "valid_fraction": _OPEN01,
    "baseline_order": _int_at_least(0),
    "state_reset": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "sample_chars": _int_at_least(0),
    "temperature": _POSITIVE,
    "window": _int_at_least(1),
    "season": _int_at_least(1),
    "ar_order": _int_at_least(1),
    "epochs": _int_at_least(0),
    "eval_words": _int_at_least(1),
    "max_len": _int_at_least(1),
    "src_tokens": _choice("chars", "words"),
    "tgt_tokens": _choice("chars", "words"),
    "attention": _choice("general", "dot", "none"),
    "min_count": _int_at_least(1),
    "ngram_buckets": _int_at_least(0),
    "pool": _choice("max", "mean", "last", "attention"),
}


def memory_bytes() -> int | None:
    """Physical memory of this machine (None where unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def estimated_training_bytes(cfg: Any) -> int:
    """A lower bound on training memory: the recurrent / Transformer weight matrices
    (4 gates · H · (E + H) per layer, or 12 · H² for a Transformer layer) and the bag of
    n-grams, each held 4 times (weights, gradients, two Adam moments) in float32."""
    h, e = getattr(cfg, "hidden", 0), getattr(cfg, "embed", 0)
    layers = max(1, getattr(cfg, "layers", 1))
    per_layer = max(4 * h * (max(e, h) + h), 12 * h * h)
    params = per_layer * layers + 2 * getattr(cfg, "ngram_buckets", 0)
    return 16 * params


def check_config(cfg: Any) -> None:
    """Raise :class:`BadSetting` for the first setting outside its rule."""
    for f in fields(cfg):
        rule = RULES.get(f.name)
        value = getattr(cfg, f.name)
        if rule is not None and not rule[0](value):
            raise BadSetting(f"setting {f.name!r}: expected {rule[1]}, got {value!r}")
    need, have = estimated_training_bytes(cfg), memory_bytes()
    if have is not None and need > have:
        raise BadSetting(
            f"settings hidden={getattr(cfg, 'hidden', None)}, embed={getattr(cfg, 'embed', None)}"
            f", layers={getattr(cfg, 'layers', None)}: the model needs at least "
            f"{need / 2**30:.3g} GiB to train, more than this machine's {have / 2**30:.3g} GiB"
        )
