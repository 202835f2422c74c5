"""Composition: run any cell over time, in both directions, stacked, or per step.

The cell contract (see :mod:`seqlab.cells`): composition steps a cell with
:func:`seqlab.cells.cell_step`::

    cell.step(x_t (B, I), state) -> (y_t (B, O), new_state)   # or, with no step method,
    cell(x_t (B, I), state) -> (y_t (B, O), new_state)        # the older contract
    cell.initial_state(batch_size, dtype=..., device=...) -> state

``state`` is a Tensor or a (named) tuple of Tensors whose first dimension is the batch.

:class:`Recurrent` runs seqlab's own cells (:class:`seqlab.cells.Cell` and its subclasses,
whose ``step`` is the description's step) on the same engine as the layers
(:func:`seqlab.engine.run`, fast kernels where the cell kind has one); any other cell runs
on the reference loop :func:`seqlab.functional.scan`. :func:`run_stack` is the one stacking
mechanism: the layers, :class:`Stacked` and the models' cell stacks all use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab import engine
from seqlab.cells import Cell, cell_step
from seqlab.functional.regularisers import DropoutMasks, check_probability, dropout_mask
from seqlab.functional.scan import State, scan, tree_leaves
from seqlab.functional.trace import traced_run
from seqlab.validation import (
    SeqlabInputError,
    check_lengths,
    require_float,
    require_like,
    require_tensor,
)


def run_stack(
    layers: Sequence[Callable[[Tensor, Any], tuple[Tensor, Any]]],
    x: Tensor,
    states: Sequence[Any],
    dropout: float = 0.0,
    training: bool = False,
) -> tuple[Tensor, list[Any]]:
    """Apply ``layers`` in order: ``x, final_k = layers[k](x, states[k])``.

    Dropout with probability ``dropout`` is applied to each layer's input but the first,
    while ``training``. Returns the last output and the list of final states.
    """
    finals = []
    for k, (layer, state) in enumerate(zip(layers, states, strict=True)):
        if k > 0 and dropout > 0 and training:
            x = F.dropout(x, dropout, training=True)
        x, final = layer(x, state)
        finals.append(final)
    return x, finals


def engine_cell(cell: nn.Module) -> Cell | None:
    """``cell`` if it is one of seqlab's own cells whose step the engine may run, else None.

    A subclass that overrides ``forward`` or ``step``, an instance whose ``forward`` or
    ``step`` was replaced (as :class:`seqlab.inspection.Probe` does), or a cell with forward
    hooks is not: its own code is what must run, so it gets the reference loop.
    """
    if not isinstance(cell, Cell):
        return None
    if type(cell).forward is not Cell.forward or type(cell).step is not Cell.step:
        return None
    if "forward" in vars(cell) or "step" in vars(cell):
        return None
    if cell._forward_hooks or cell._forward_pre_hooks:
        return None
    return cell


class Recurrent(nn.Module):
    """Run ``cell`` over a sequence: ``y_t, s_t = step(x_t, s_{t−1})`` for t = 1..T.

    ``step`` is ``cell.step`` (seqlab's cells) or, for a cell without one, ``cell`` itself
    (see :func:`seqlab.cells.cell_step`).

    ``forward(x, state=None, lengths=None) -> (outputs, final_state)``; ``x`` is
    (T, B, I), or (B, T, I) with ``batch_first``. With ``lengths``, padded outputs are zero
    and the final state is each row's state at its last valid step. ``reverse=True`` reads
    each row's valid prefix backwards (outputs stay in input order).

    ``trace=True`` adds a third result, every step's internals in the caller's layout
    ((T, B, ·), or (B, T, ·) with ``batch_first``), zero at padded steps, in input order:
    for seqlab's own cells the layer's trace (gates, ``c``, ``h``; see
    :mod:`seqlab.functional.trace`), for any other cell ``y`` and each 2-D state leaf (by
    field name for a NamedTuple state, else ``state0``, ``state1``, ...).

    Regularisers (keyword-only, off by default, one mask per call while training; see
    :mod:`seqlab.functional.regularisers`): ``input_dropout`` masks ``x_t ⊙ m_x`` for any
    cell; ``recurrent_dropout`` (``h_{t−1} ⊙ m_h`` in the recurrent product) and
    ``weight_dropout`` (``w_hh ⊙ M``) need one of seqlab's own cells run by the engine.
    ``forward(..., masks=DropoutMasks(...))`` uses given masks (:meth:`sample_masks`).
    """

    input_dropout: float = 0.0  # class defaults: modules pickled before these options load
    recurrent_dropout: float = 0.0
    weight_dropout: float = 0.0

    def __init__(
        self,
        cell: nn.Module,
        batch_first: bool = False,
        reverse: bool = False,
        *,
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        weight_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not callable(getattr(cell, "initial_state", None)):
            raise TypeError(
                f"cell: expected a module with initial_state(batch_size, dtype=, device=), "
                f"got {type(cell).__name__}"
            )
        self.cell, self.batch_first, self.reverse = cell, batch_first, reverse
        self.input_dropout = check_probability("input_dropout", input_dropout)
        self.recurrent_dropout = check_probability("recurrent_dropout", recurrent_dropout)
        self.weight_dropout = check_probability("weight_dropout", weight_dropout)
        for name in ("recurrent_dropout", "weight_dropout"):
            if getattr(self, name):
                self._engine_cell_for(name)  # a clear error now rather than at the first call

    def _engine_cell_for(self, name: str) -> Cell:
        """The engine cell a recurrent/weight mask acts on (a clear error otherwise)."""
        from seqlab.layers import check_regularisers  # layers import this module

        fast = engine_cell(self.cell)
        if fast is None:
            raise ValueError(
                f"{name}: needs one of seqlab's cells run by the engine (seqlab.cells.Cell "
                f"without an overridden forward or hooks), got {type(self.cell).__name__}"
            )
        p = 1.0 if name == "recurrent_dropout" else 0.0
        check_regularisers(fast.spec, 0, p, 1.0 - p)
        return fast

    def sample_masks(
        self,
        batch_size: int,
        input_shape: tuple[int, ...] | None = None,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> DropoutMasks:
        """One draw of the masks (None where a regulariser is off): ``input``
        ``(B, *input_shape)`` (default ``(B, cell.input_size)``), ``recurrent`` (B, H),
        ``weight`` like ``w_hh``. What ``forward`` draws while training."""
        ref = next(iter(self.cell.parameters()), None)
        dtype = dtype or (ref.dtype if ref is not None else torch.get_default_dtype())
        device = device if device is not None else (ref.device if ref is not None else None)
        kw = dict(dtype=dtype, device=device, generator=generator)
        m_x = m_h = m_w = None
        if self.input_dropout:
            shape = input_shape if input_shape is not None else (self.cell.input_size,)
            m_x = dropout_mask((batch_size, *shape), self.input_dropout, **kw)
        if self.recurrent_dropout:
            H = self._engine_cell_for("recurrent_dropout").hidden_size
            m_h = dropout_mask((batch_size, H), self.recurrent_dropout, **kw)
        if self.weight_dropout:
            w_hh = self._engine_cell_for("weight_dropout").params()["w_hh"]
            m_w = dropout_mask(tuple(w_hh.shape), self.weight_dropout, **kw)
        return DropoutMasks(m_x, m_h, m_w)

    def forward(
        self,
        x: Tensor,
        state: State | None = None,
        lengths: Tensor | None = None,
        trace: bool = False,
        *,
        masks: DropoutMasks | None = None,
    ) -> tuple[Tensor, State] | tuple[Tensor, State, dict[str, Tensor]]:
        require_tensor("input", x)
        require_float("input", x)
        if x.dim() < 3:
            layout = "(batch, time, ...)" if self.batch_first else "(time, batch, ...)"
            raise SeqlabInputError(
                f"input: expected shape {layout} with 3+ dims, got {tuple(x.shape)}"
            )
        if self.batch_first:
            x = x.transpose(0, 1)
        T, B = x.shape[0], x.shape[1]
        if lengths is not None:
            lengths = check_lengths(lengths, B, T, x.device)
        if (
            masks is None
            and self.training
            and (self.input_dropout or self.recurrent_dropout or self.weight_dropout)
        ):
            masks = self.sample_masks(B, tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
        if masks is not None:
            masks = self._check_masks(masks, x)
            if masks.input is not None:
                x = x * masks.input  # (T, B, ...) ⊙ (B, ...): the same mask at every step
        out = self._time_major(x, state, lengths, trace, masks)
        if not self.batch_first:
            return out
        if trace:
            return out[0].transpose(0, 1), out[1], {k: v.transpose(0, 1) for k, v in out[2].items()}
        return out[0].transpose(0, 1), out[1]

    def _time_major(self, x, state, lengths, trace, masks: DropoutMasks | None):
        """``(outputs, final[, traces])`` of time-major ``x`` (input mask already applied)."""
        T, B = x.shape[0], x.shape[1]
        if T == 0:
            if trace:
                raise SeqlabInputError("trace: expected at least one time step, got T = 0")
            return self._empty(x, state)
        if masks is not None and (masks.recurrent is not None or masks.weight is not None):
            fast = self._engine_cell_for(
                "recurrent_dropout" if masks.recurrent is not None else "weight_dropout"
            )
            parts = fast.check_state(state, B, x)
            params = dict(fast.params())
            if masks.weight is not None:  # DropConnect, differentiable w.r.t. w_hh
                params["w_hh"] = params["w_hh"] * masks.weight
            if trace:
                y, final, tr = traced_run(
                    fast.spec, x, parts, params, lengths, self.reverse, masks.recurrent
                )
                return y, fast.spec.pack(final), dict(tr)
            y, final = engine.run(
                fast.spec, x, parts, params, lengths, self.reverse, h_mask=masks.recurrent
            )
            return y, fast.spec.pack(final)
        fast = engine_cell(self.cell)
        if trace:
            return self._traced(x, state, lengths, fast)
        if fast is not None and x.dim() == 3 and x.shape[-1] == fast.input_size:
            parts = fast.check_state(state, B, x)
            out, final = engine.run(fast.spec, x, parts, fast.params(), lengths, self.reverse)
            return out, fast.spec.pack(final)
        if state is None:
            state = self.cell.initial_state(B, dtype=x.dtype, device=x.device)
        else:
            for k, leaf in enumerate(tree_leaves(state)):
                require_tensor(f"state[{k}]", leaf)
                require_like(f"state[{k}]", leaf, x)
                if leaf.shape[0] != B:
                    raise SeqlabInputError(
                        f"state[{k}]: expected batch size {B} in dim 0, "
                        f"got shape {tuple(leaf.shape)}"
                    )
        return scan(cell_step(self.cell), x, state, lengths, self.reverse)

    def _check_masks(self, masks: object, x: Tensor) -> DropoutMasks:
        if not isinstance(masks, tuple) or len(masks) != 3:
            raise TypeError(f"masks: expected a DropoutMasks, got {type(masks).__name__}")
        masks = DropoutMasks(*masks)
        B = x.shape[1]
        shapes = [(B, *x.shape[2:]), None, None]
        if masks.recurrent is not None:
            shapes[1] = (B, self._engine_cell_for("recurrent_dropout").hidden_size)
        if masks.weight is not None:
            shapes[2] = tuple(self._engine_cell_for("weight_dropout").params()["w_hh"].shape)
        for name, m, shape in zip(DropoutMasks._fields, masks, shapes, strict=True):
            if m is None:
                continue
            if not isinstance(m, Tensor) or tuple(m.shape) != shape:
                got = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
                raise ValueError(f"masks.{name}: expected shape {shape}, got {got}")
            require_like(f"masks.{name}", m, x)
        return masks

    def _traced(self, x: Tensor, state: State | None, lengths: Tensor | None, fast: Cell | None):
        """Time-major ``(outputs, final_state, traces)`` on the reference loop."""
        B = x.shape[1]
        if fast is not None and x.dim() == 3:
            parts = fast.check_state(state, B, x)
            out, final, traces = traced_run(
                fast.spec, x, parts, fast.params(), lengths, self.reverse
            )
            return out, fast.spec.pack(final), dict(traces)
        if state is None:
            state = self.cell.initial_state(B, dtype=x.dtype, device=x.device)
        leaves = tree_leaves(state)
        names = list(getattr(state, "_fields", [])) or [f"state{k}" for k in range(len(leaves))]
        recorded = [(n, leaf.shape[-1]) for n, leaf in zip(names, leaves, strict=False)
                    if leaf.dim() == 2]  # fmt: skip
        widths: list[int] = []
        cell = cell_step(self.cell)

        def step(x_t: Tensor, s: State):
            y, new = cell(x_t, s)
            if not widths:
                widths.append(y.shape[-1])
            keep = [leaf for leaf in tree_leaves(new) if leaf.dim() == 2]
            return torch.cat([y, *keep], dim=-1), new

        packed, final = scan(step, x, state, lengths, self.reverse)
        sizes = [widths[0]] + [w for _, w in recorded]
        chunks = packed.split(sizes, dim=-1)
        traces = {"y": chunks[0], **{n: c for (n, _), c in zip(recorded, chunks[1:], strict=True)}}
        return chunks[0], final, traces

    def _empty(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """T = 0: outputs (0, B, O) and the initial state (given, or the cell's zeros).

        No time step runs. For seqlab's own cells O = hidden_size; for any other cell O is
        read from one step of the cell on zeros (without grad), as only the cell knows it.
        """
        B = x.shape[1]
        if state is None:
            state = self.cell.initial_state(B, dtype=x.dtype, device=x.device)
        fast = engine_cell(self.cell)
        if fast is not None:  # seqlab's own cell: y is h, (B, H); nothing runs
            state = fast.spec.pack(fast.check_state(state, B, x))
            out = x.new_zeros(0, B, fast.hidden_size)
        else:
            with torch.no_grad():
                y, _ = cell_step(self.cell)(x.new_zeros(x.shape[1:]), state)
            out = y.new_zeros((0,) + tuple(y.shape))
        return out, state


MERGES = ("concat", "sum", "mean", "mul")


class Bidirectional(nn.Module):
    """Forward and backward :class:`Recurrent` layers over the same input, outputs merged.

    ``merge``: ``"concat"`` (feature axis), ``"sum"``, ``"mean"`` or ``"mul"``. The
    backward layer is run with ``reverse=True`` so, with ``lengths``, it reads each row's
    valid prefix backwards. ``state`` and the final state are ``(forward, backward)`` pairs.
    """

    def __init__(self, forward: Recurrent, backward: Recurrent, merge: str = "concat") -> None:
        super().__init__()
        if merge not in MERGES:
            raise ValueError(f"merge: expected one of {MERGES}, got {merge!r}")
        if forward.batch_first != backward.batch_first:
            raise ValueError("backward: batch_first must match the forward layer's")
        backward.reverse, forward.reverse = True, False
        self.fwd, self.bwd, self.merge = forward, backward, merge
        self.batch_first = forward.batch_first

    def forward(
        self,
        x: Tensor,
        state: tuple[State, State] | None = None,
        lengths: Tensor | None = None,
        trace: bool = False,
    ):
        """``(outputs, (final_fwd, final_bwd))``; with ``trace=True`` also
        ``{"forward": traces, "backward": traces}`` (see :class:`Recurrent`)."""
        s_f, s_b = (None, None) if state is None else state
        if trace:
            y_f, f_f, t_f = self.fwd(x, s_f, lengths, trace=True)
            y_b, f_b, t_b = self.bwd(x, s_b, lengths, trace=True)
        else:
            y_f, f_f = self.fwd(x, s_f, lengths)
            y_b, f_b = self.bwd(x, s_b, lengths)
        if self.merge == "concat":
            y = torch.cat([y_f, y_b], dim=-1)
        elif self.merge == "sum":
            y = y_f + y_b
        elif self.merge == "mean":
            y = (y_f + y_b) / 2
        else:
            y = y_f * y_b
        if trace:
            return y, (f_f, f_b), {"forward": t_f, "backward": t_b}
        return y, (f_f, f_b)


class Stacked(nn.Module):
    """Layers applied in order, each layer's output sequence feeding the next.

    Each layer follows ``layer(x, state, lengths) -> (outputs, final_state)``; ``dropout``
    is applied between layers while training. ``state`` is a list with one entry per layer.
    """

    def __init__(self, layers: Sequence[nn.Module], dropout: float = 0.0) -> None:
        super().__init__()
        if len(layers) == 0:
            raise ValueError("layers: expected at least one layer, got 0")
        self.layers, self.dropout = nn.ModuleList(layers), float(dropout)

    def forward(
        self,
        x: Tensor,
        state: Sequence[State] | None = None,
        lengths: Tensor | None = None,
        trace: bool = False,
    ):
        """``(outputs, finals)``; with ``trace=True`` also a list with each layer's traces
        (see :class:`Recurrent` and :class:`Bidirectional`)."""
        if state is not None and len(state) != len(self.layers):
            raise ValueError(
                f"state: expected {len(self.layers)} entries (one per layer), got {len(state)}"
            )
        states = [None] * len(self.layers) if state is None else state
        if not trace:
            layers = [lambda x, s, layer=layer: layer(x, s, lengths) for layer in self.layers]
            return run_stack(layers, x, states, self.dropout, self.training)
        traces: list[Any] = []

        def traced(layer: nn.Module):
            def run(x: Tensor, s: State):
                y, final, tr = layer(x, s, lengths, trace=True)
                traces.append(tr)
                return y, final

            return run

        out, finals = run_stack(
            [traced(layer) for layer in self.layers], x, states, self.dropout, self.training
        )
        return out, finals, traces


class TimeDistributed(nn.Module):
    """Apply ``module`` to every time step independently: (A, B, *F) -> (A, B, *F').

    The two leading axes (time and batch in either order) are merged into one batch axis
    for the call, so one matrix product serves all steps. ``x`` must be floating point, of
    the module's parameter dtype (token ids for an ``nn.Embedding``).
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        require_tensor("input", x)
        # checked here: the wrapped module's own error would not name the argument
        if not isinstance(self.module, (nn.Embedding, nn.EmbeddingBag)):  # those take ids
            require_float("input", x)
            dtypes = {p.dtype for p in self.module.parameters() if p.is_floating_point()}
            if dtypes and x.dtype not in dtypes:
                raise TypeError(
                    f"input: expected dtype {sorted(map(str, dtypes))[0]} (the module's "
                    f"parameters), got {x.dtype}"
                )
        if x.dim() < 3:
            raise SeqlabInputError(
                f"input: expected (time, batch, ...) with 3+ dims, got {tuple(x.shape)}"
            )
        # a feature count the module declares (nn.Linear, seqlab's cells) is checked here too
        features = getattr(self.module, "in_features", getattr(self.module, "input_size", None))
        if isinstance(features, int) and x.shape[-1] != features:
            raise SeqlabInputError(
                f"input: expected {features} features in the last dim (the module's "
                f"{'in_features' if hasattr(self.module, 'in_features') else 'input_size'}), "
                f"got shape {tuple(x.shape)}"
            )
        A, B = x.shape[0], x.shape[1]
        y = self.module(x.reshape(A * B, *x.shape[2:]))
        return y.reshape(A, B, *y.shape[1:])
