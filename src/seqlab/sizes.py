"""Size fields of the model configurations, checked before any layer is built.

Without this a bool, zero, negative or float size reaches ``torch.empty`` or a sub-layer and
fails there (``negative dimension -1``, ``num_layers must be ...`` for a field called
``encoder_layers``), or is accepted (``nhead=2.0``). Every message names the config field.
"""

from __future__ import annotations

from typing import Any


def check_sizes(config: Any, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """``required`` fields must be positive ints; ``optional`` ones None or positive ints."""
    for name in required + optional:
        value = getattr(config, name)
        if value is None and name in optional:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            kind = "None or a positive int" if name in optional else "a positive int"
            raise ValueError(f"{name}: expected {kind}, got {value!r}")
