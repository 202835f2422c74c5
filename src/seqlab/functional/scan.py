"""The reference time loop: run a one-step function over a time-major sequence.

This loop is the oracle every fast backend is tested against, and the fallback for
anything a backend does not cover (custom cells, tracing). It is deliberately plain.

Variable lengths (``lengths[b]`` valid steps in row ``b``, padding at the end):

* at a padded step the state is carried unchanged, so the final state of row ``b`` is
  its state after step ``lengths[b] − 1``;
* outputs at padded steps are exactly zero;
* ``reverse=True`` runs over each row's valid prefix backwards (step ``lengths[b] − 1``
  first) and writes outputs back in the original time order; padding stays at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from seqlab.functional.regularisers import H_MASK
from seqlab.functional.spec import CellSpec, Params, get_spec

State = Any  # a Tensor, or a (named) tuple/list of States


def tree_map(fn: Callable[..., Tensor], *trees: State) -> State:
    """Apply ``fn`` leaf-wise over matching Tensor / tuple / NamedTuple / list trees."""
    first = trees[0]
    if isinstance(first, Tensor):
        return fn(*trees)
    if isinstance(first, tuple) and hasattr(first, "_fields"):  # NamedTuple
        return type(first)(*(tree_map(fn, *parts) for parts in zip(*trees, strict=True)))
    if isinstance(first, (tuple, list)):
        return type(first)(tree_map(fn, *parts) for parts in zip(*trees, strict=True))
    raise TypeError(f"state: expected a Tensor or a tuple of Tensors, got {type(first).__name__}")


def detach_state(state: State | None) -> State | None:
    """Cut the graph behind a recurrent state: same values, no history (``None`` stays).

    Works for any state tree (a Tensor, ``LSTMState``, tuples/lists of them).
    """
    if state is None:
        return None
    return tree_map(lambda s: s.detach(), state)


def tree_leaves(tree: State) -> list[Tensor]:
    """The tensors of a state tree, in order."""
    if isinstance(tree, Tensor):
        return [tree]
    return [leaf for part in tree for leaf in tree_leaves(part)]


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse a time-major ``(T, B, ...)`` tensor along time within each row's valid prefix.

    Row ``b`` maps step ``t < lengths[b]`` to ``lengths[b] − 1 − t``; padded steps stay put.
    Applying it twice is the identity.
    """
    if lengths is None:
        return x.flip(0)
    T, B = x.shape[0], x.shape[1]
    t = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
    n = lengths.to(x.device).unsqueeze(0)  # (1, B)
    index = torch.where(t < n, n - 1 - t, t)  # (T, B)
    index = index.view(T, B, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, index)


def step_mask(lengths: Tensor | None, T: int, device: torch.device) -> Tensor | None:
    """Boolean ``(T, B)`` mask, True where step ``t`` is valid for row ``b``."""
    if lengths is None:
        return None
    t = torch.arange(T, device=device).unsqueeze(1)  # (T, 1)
    return t < lengths.to(device).unsqueeze(0)  # (T, B)


def _where_rows(m: Tensor, new: Tensor, old: Tensor) -> Tensor:
    """Row-wise select: ``new[b]`` where ``m[b]`` else ``old[b]`` (any trailing shape)."""
    return torch.where(m.view(-1, *([1] * (new.dim() - 1))), new, old)


def scan(
    step: Callable[[Tensor, State], tuple[Tensor, State]],
    inputs: Tensor,
    state: State,
    lengths: Tensor | None = None,
    reverse: bool = False,
) -> tuple[Tensor, State]:
    """Run ``step(x_t, state) -> (y_t, state')`` over ``inputs`` of shape ``(T, B, ...)``.

    Returns ``(outputs (T, B, ...), final_state)`` with the length/reverse rules of the
    module docstring.
    """
    T = inputs.shape[0]
    if reverse:
        inputs = reverse_padded(inputs, lengths)
    mask = step_mask(lengths, T, inputs.device)
    outputs = []
    for t in range(T):
        y, new_state = step(inputs[t], state)
        if mask is not None:
            m = mask[t]  # (B,)
            new_state = tree_map(lambda new, old, m=m: _where_rows(m, new, old), new_state, state)
            y = _where_rows(m, y, torch.zeros((), dtype=y.dtype, device=y.device))
        state = new_state
        outputs.append(y)
    if outputs:
        out = torch.stack(outputs)
    else:  # T = 0: the output width is the step's (e.g. H, not the projected G·H input)
        with torch.no_grad():
            y, _ = step(inputs.new_zeros(inputs.shape[1:]), state)
        out = y.new_zeros((0,) + tuple(y.shape))
    if reverse:
        out = reverse_padded(out, lengths)
    return out, state


def make_step(
    mode: str | CellSpec, w_hh: Tensor, b_hh: Tensor | None
) -> Callable[[Tensor, tuple[Tensor, ...]], tuple[Tensor, tuple[Tensor, ...]]]:
    """A premultiplied step ``(xw_t, state_tuple) -> (h, state_tuple)`` for a classic cell."""
    return _step_of(get_spec(mode), {"w_hh": w_hh, "b_hh": b_hh})


def _step_of(spec: CellSpec, params: Params):
    def step(xw: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, tuple[Tensor, ...]]:
        new, _ = spec.step(xw, state, params)
        return new[0], new

    return step


def reference_run(
    mode: str | CellSpec,
    x: Tensor,
    state: Sequence[Tensor],
    params: Params,
    lengths: Tensor | None = None,
    reverse: bool = False,
    h_mask: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One layer, one direction, by the reference loop, for any registered cell kind.

    ``x`` is time-major ``(T, B, I)``; ``state`` holds the spec's state parts, each
    ``(B, H)``; ``params`` maps the spec's parameter names to tensors (absent biases None).
    The input projection for all steps is one call: ``xw = spec.project(x, params)``.
    ``h_mask`` (B, H): recurrent dropout, ``h_{t−1} ⊙ h_mask`` enters the recurrent product
    at every step (:mod:`seqlab.functional.regularisers`; the kind's ``spec.h_mask``).
    Returns ``(y (T, B, H), final_state)``.
    """
    spec = get_spec(mode)
    if h_mask is not None:
        params = with_h_mask(spec, params, h_mask)
    xw = spec.project(x, params)  # (T, B, G·H) for the classic cells
    return scan(_step_of(spec, params), xw, tuple(state), lengths, reverse)


def with_h_mask(spec: CellSpec, params: Params, h_mask: Tensor) -> dict[str, Tensor | None]:
    """``params`` plus the recurrent mask the step reads (refused if the step reads none)."""
    if not spec.h_mask:
        raise ValueError(
            f"recurrent_dropout: cell kind {spec.name!r} does not take a recurrent mask "
            f"(its step has no h_(t-1) @ w_hh product to drop on)"
        )
    return {**params, H_MASK: h_mask}


def reference_layer(
    mode: str,
    x: Tensor,
    state: tuple[Tensor, ...],
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None,
    b_hh: Tensor | None,
    lengths: Tensor | None = None,
    reverse: bool = False,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """:func:`reference_run` for a classic cell given ``(w_ih, w_hh, b_ih, b_hh)``.

    ``state`` is ``(h0,)`` or, for LSTM, ``(h0, c0)``; ``xw = x @ w_ihᵀ + b_ih`` → (T, B, G·H).
    """
    params = {"w_ih": w_ih, "w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh}
    return reference_run(mode, x, state, params, lengths, reverse)
