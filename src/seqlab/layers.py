"""Multi-layer, optionally bidirectional RNN / LSTM / GRU with torch.nn's parameters.

``seqlab.LSTM(...).load_state_dict(torch.nn.LSTM(...).state_dict())`` works unchanged:
parameters are ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``
(and ``..._reverse`` for the backward direction), in the fused gate layout of
:mod:`seqlab.cells`. The layer only loops over layers and directions; each
(layer, direction) pass runs through :func:`seqlab.engine.run_layer`, which picks the
fastest available backend, with the reference loop as oracle and fallback.

Shapes (``D`` = 2 if bidirectional else 1, ``L`` = num_layers):

=================  ===================================  ===========================
argument           shape                                notes
=================  ===================================  ===========================
``x``              (T, B, I) or (B, T, I) if            or a PackedSequence;
                   ``batch_first``; (T, I) unbatched    float
``state``          h0 (L·D, B, H); LSTM: (h0, c0)       None → zeros (or learned)
``lengths``        (B,) ints in 1..T                    padding at the end
``outputs``        (T, B, D·H) or (B, T, D·H)           zero at padded steps
``final_state``    h_n (L·D, B, H); LSTM ``LSTMState``  state at the last valid step
=================  ===================================  ===========================

Regularisers (keyword-only, off by default; while training, or with ``masks=`` given):
``dropout`` is torch.nn's, between layers, a fresh mask per element. ``input_dropout``,
``recurrent_dropout`` and ``weight_dropout`` act inside each layer and direction with one
mask per forward call (so the same at every step): on the layer's input ``x_t ⊙ m_x``, on
``h_{t−1} ⊙ m_h`` before the recurrent product, and on ``w_hh ⊙ M`` (DropConnect).
Equations in :mod:`seqlab.functional.regularisers`; in eval mode the layer is the plain one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from seqlab import engine
from seqlab.cells import make_parameters, parameters_of
from seqlab.functional.regularisers import DropoutMasks, check_probability, dropout_mask
from seqlab.functional.spec import SPECS, CellSpec, get_spec
from seqlab.functional.trace import traced_run
from seqlab.init import check_init, init_params
from seqlab.validation import (
    SeqlabInputError,
    check_dropout,
    check_flag,
    check_lengths,
    check_sizes,
    check_state,
    require_float,
    require_tensor,
)
from seqlab.wrappers import run_stack


class RecurrentLayer(nn.Module):
    """Base of :class:`RNN`, :class:`LSTM`, :class:`GRU`; ``mode`` names the cell kind.

    Any registered kind works: ``RecurrentLayer("lstm", 3, 4)`` is an :class:`LSTM`, and a
    kind added to :mod:`seqlab.functional.spec` gets its layer this way with no new class.
    """

    kinds: tuple[str, ...] = ()  # the cell kinds a subclass builds (see make_layer)
    # class defaults keep modules pickled before these options loadable
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    weight_dropout: float = 0.0

    def __init__(
        self,
        mode: str | CellSpec,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        backend: str | None = None,
        init: str = "default",
        forget_bias: float | None = None,
        learn_initial_state: bool = False,
        input_dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        weight_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_sizes(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers)
        check_flag("bias", bias)
        check_flag("batch_first", batch_first)
        dropout = check_dropout(dropout)
        if dropout > 0 and num_layers == 1:  # torch.nn's warning, same condition
            warnings.warn(
                f"dropout={dropout} acts between layers, so with num_layers=1 it does nothing",
                stacklevel=3,
            )
        check_init(init)
        spec = get_spec(mode)
        check_proj_size(proj_size, hidden_size, spec.name)
        self.input_dropout = check_probability("input_dropout", input_dropout)
        self.recurrent_dropout = check_probability("recurrent_dropout", recurrent_dropout)
        self.weight_dropout = check_probability("weight_dropout", weight_dropout)
        check_regularisers(spec, proj_size or 0, self.recurrent_dropout, self.weight_dropout)
        self.mode = spec.name
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.proj_size = bias, batch_first, proj_size or 0
        self.dropout, self.bidirectional = dropout, bidirectional
        self.backend, self.init, self.forget_bias = backend, init, forget_bias
        self.num_directions = 2 if bidirectional else 1
        H, P = hidden_size, self.proj_size
        out_size = P or H  # the width of h and of each direction's output
        self._attrs: dict[str, list[str]] = {}  # suffix -> parameter attribute names
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else out_size * self.num_directions
            for suffix in self._suffixes(layer):
                make_parameters(self, spec, layer_in, H, bias, suffix, device, dtype)
                self._attrs[suffix] = [p.attr + suffix for p in spec.params]
                if P:  # torch.nn's LSTM projection: weight_hh (4H, P), weight_hr (P, H)
                    for name, shape in (("weight_hh", (4 * H, P)), ("weight_hr", (P, H))):
                        t = torch.empty(shape, device=device, dtype=dtype)
                        setattr(self, name + suffix, nn.Parameter(t))
                    self._attrs[suffix].append("weight_hr" + suffix)
        self.learn_initial_state = learn_initial_state
        if learn_initial_state and P:
            raise ValueError("learn_initial_state: not available with proj_size > 0")
        if learn_initial_state:
            self.initial_state_param = nn.Parameter(
                torch.zeros(
                    len(spec.state),
                    num_layers * self.num_directions,
                    1,
                    H,
                    device=device,
                    dtype=dtype,
                )
            )
        self.reset_parameters()

    @property
    def spec(self) -> CellSpec:
        """This layer's cell description (looked up, so the module pickles without it)."""
        return get_spec(self.mode)

    def _suffixes(self, layer: int) -> list[str]:
        return [f"_l{layer}", f"_l{layer}_reverse"][: self.num_directions]

    def params(self, suffix: str) -> dict[str, Tensor | None]:
        """One layer/direction's parameters by functional name, e.g. ``suffix="_l0"``."""
        return parameters_of(self, self.spec, suffix)

    def weights(self, suffix: str) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """``(w_ih, w_hh, b_ih, b_hh)`` of one layer/direction of a classic cell."""
        p = self.params(suffix)
        return p.get("w_ih"), p.get("w_hh"), p.get("b_ih"), p.get("b_hh")

    # ---------------------------------------------------- torch.nn's weight views
    @property
    def _all_weights(self) -> list[list[str]]:
        """Parameter names per (layer, direction), in torch.nn's order (absent biases left out)."""
        return [
            [name for name in self._attrs[suffix] if getattr(self, name) is not None]
            for layer in range(self.num_layers)
            for suffix in self._suffixes(layer)
        ]

    @property
    def _flat_weights_names(self) -> list[str]:
        return [name for names in self._all_weights for name in names]

    @property
    def _flat_weights(self) -> list[Tensor]:
        """All parameters in torch.nn's flat order (``weight_ih_l0, weight_hh_l0, ...``)."""
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """The parameters grouped per (layer, direction), as ``torch.nn.RNNBase.all_weights``."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """No-op, for torch.nn compatibility: seqlab keeps no cuDNN flat weight buffer."""

    def reset_parameters(self) -> None:
        for layer in range(self.num_layers):
            for suffix in self._suffixes(layer):
                init_params(
                    self.spec, self.params(suffix), self.hidden_size, self.init, self.forget_bias
                )
                if self.proj_size:  # weight_hr: torch.nn's bound, or Xavier
                    w_hr = getattr(self, "weight_hr" + suffix)
                    with torch.no_grad():
                        if self.init == "default":
                            bound = 1.0 / self.hidden_size**0.5
                            nn.init.uniform_(w_hr, -bound, bound)
                        else:
                            nn.init.xavier_uniform_(w_hr)

    # ------------------------------------------------------------ regularisers
    @property
    def regularised(self) -> bool:
        """Whether any of ``input_dropout``, ``recurrent_dropout``, ``weight_dropout`` is on."""
        return (self.input_dropout, self.recurrent_dropout, self.weight_dropout) != (0, 0, 0)

    def _layer_input_size(self, layer: int) -> int:
        out_size = self.proj_size or self.hidden_size
        return self.input_size if layer == 0 else out_size * self.num_directions

    def sample_masks(
        self,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> list[DropoutMasks]:
        """One draw of the regularisers' masks, one :class:`DropoutMasks` per layer and
        direction (index ``layer·D + direction``, the order of ``final_state``).

        Masks of regularisers that are off are None. ``dtype``/``device`` default to the
        parameters'. What ``forward`` draws while training; pass the result to
        ``forward(..., masks=...)`` to reuse a draw (tests, Monte-Carlo dropout at eval).
        """
        ref = getattr(self, self._attrs["_l0"][0])
        dtype = dtype or ref.dtype
        device = device if device is not None else ref.device
        kw = dict(dtype=dtype, device=device, generator=generator)
        out = []
        for layer in range(self.num_layers):
            for suffix in self._suffixes(layer):
                m_x = m_h = m_w = None
                if self.input_dropout:
                    size = self._layer_input_size(layer)
                    m_x = dropout_mask((batch_size, size), self.input_dropout, **kw)
                if self.recurrent_dropout:
                    m_h = dropout_mask((batch_size, self.hidden_size), self.recurrent_dropout, **kw)
                if self.weight_dropout:
                    shape = tuple(self._w_hh(suffix).shape)
                    m_w = dropout_mask(shape, self.weight_dropout, **kw)
                out.append(DropoutMasks(m_x, m_h, m_w))
        return out

    def _w_hh(self, suffix: str) -> Tensor | None:
        """The recurrent matrix ``w_hh`` of one layer/direction (None for kinds without one)."""
        for p in self.spec.params:
            if p.name == "w_hh" and p.cols:
                return getattr(self, p.attr + suffix)
        return None

    def _check_masks(self, masks: object, batch: int, x: Tensor) -> list[DropoutMasks]:
        LD = self.num_layers * self.num_directions
        if not isinstance(masks, (list, tuple)) or len(masks) != LD:
            got = len(masks) if isinstance(masks, (list, tuple)) else type(masks).__name__
            raise ValueError(
                f"masks: expected a list of {LD} DropoutMasks (one per layer and direction), "
                f"got {got}"
            )
        out = []
        for k, mk in enumerate(masks):
            if not isinstance(mk, tuple) or len(mk) != 3:
                raise TypeError(f"masks[{k}]: expected a DropoutMasks, got {type(mk).__name__}")
            mk = DropoutMasks(*mk)
            if mk.recurrent is not None:
                check_regularisers(self.spec, self.proj_size, 1.0, 0.0)
            if mk.weight is not None:
                check_regularisers(self.spec, self.proj_size, 0.0, 1.0)
            suffix = self._suffixes(k // self.num_directions)[k % self.num_directions]
            w_hh = self._w_hh(suffix)
            shapes = (
                (batch, self._layer_input_size(k // self.num_directions)),
                (batch, self.hidden_size),
                None if w_hh is None else tuple(w_hh.shape),
            )
            for name, m, shape in zip(DropoutMasks._fields, mk, shapes, strict=True):
                if m is None:
                    continue
                if not isinstance(m, Tensor) or tuple(m.shape) != shape:
                    got = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
                    raise ValueError(f"masks[{k}].{name}: expected shape {shape}, got {got}")
                if m.dtype != x.dtype or m.device != x.device:
                    raise TypeError(
                        f"masks[{k}].{name}: expected dtype {x.dtype} on {x.device} (like the "
                        f"input), got {m.dtype} on {m.device}"
                    )
            out.append(mk)
        return out

    # ------------------------------------------------------------------ checks
    def _state_parts(self) -> tuple[str, ...]:
        return tuple(f"{name}0" for name in self.spec.state)

    def _initial_state(self, state, x: Tensor, batch: int) -> tuple[Tensor, ...]:
        LD, H = self.num_layers * self.num_directions, self.hidden_size
        if self.proj_size:  # h0 (L·D, B, P), c0 (L·D, B, H)
            hc = (x.new_zeros(LD, batch, self.proj_size), x.new_zeros(LD, batch, H))
            if state is None:
                return hc
            check_state(state, self._state_parts(), (LD, batch, H), hc[1], only=(1,))
            check_state(state, self._state_parts(), hc[0].shape, hc[0], only=(0,))
            return tuple(state)
        if state is None:
            n_parts = len(self.spec.state)
            if self.learn_initial_state:
                learned = self.initial_state_param.to(x.dtype)
                return tuple(learned[k].expand(LD, batch, H) for k in range(n_parts))
            zeros = x.new_zeros(LD, batch, H)
            return (zeros,) * n_parts
        return check_state(state, self._state_parts(), (LD, batch, H), x)

    # ----------------------------------------------------------------- forward
    def forward(
        self,
        x: Tensor | PackedSequence,
        state: Tensor | tuple[Tensor, Tensor] | None = None,
        lengths: Tensor | None = None,
        trace: bool = False,
        *,
        masks: Sequence[DropoutMasks] | None = None,
    ):
        """Run the stack over ``x``; see the module docstring for shapes.

        Returns ``(outputs, final_state)``, or ``(outputs, final_state, traces)`` with
        ``trace=True``, where ``traces[k]`` (k = layer·D + direction, the order of
        ``final_state``) maps gate/state names to (T, B, H) tensors
        (see :mod:`seqlab.functional.trace`).

        ``masks``: the regularisers' masks to use (as :meth:`sample_masks` gives them; in
        any mode). Without it, fresh masks are drawn per call while training.
        """
        if isinstance(x, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths: must be None when the input is a PackedSequence")
            padded, lengths = pad_packed_sequence(x, batch_first=self.batch_first)
            out, final, *rest = self.forward(padded, state, lengths, trace, masks=masks)
            # packed in the input's own order, so sorted_indices are the input's (None if sorted)
            if x.sorted_indices is not None:
                out = out.index_select(0 if self.batch_first else 1, x.sorted_indices)
                lengths = lengths[x.sorted_indices.cpu()]
            p = pack_padded_sequence(out, lengths, batch_first=self.batch_first)
            packed = PackedSequence(p.data, p.batch_sizes, x.sorted_indices, x.unsorted_indices)
            return (packed, final, *rest)
        require_tensor("input", x)
        require_float("input", x)
        if trace and self.proj_size:
            raise ValueError("trace: not available with proj_size > 0")
        unbatched = x.dim() == 2
        if x.dim() not in (2, 3) or x.shape[-1] != self.input_size:
            layout = "(batch, time, features)" if self.batch_first else "(time, batch, features)"
            raise SeqlabInputError(
                f"input: expected shape {layout} with features={self.input_size} "
                f"(or unbatched (time, {self.input_size})), got {tuple(x.shape)}"
            )
        if unbatched:
            x = x.unsqueeze(1)
            if state is not None:
                state = tuple(
                    s.unsqueeze(1) for s in ((state,) if isinstance(state, Tensor) else state)
                )
        elif self.batch_first:
            x = x.transpose(0, 1)
        T, B = x.shape[0], x.shape[1]
        if T == 0:  # torch.nn raises RuntimeError("Expected sequence length to be larger than 0")
            raise SeqlabInputError(
                f"input: expected sequence length to be larger than 0 (as torch.nn), "
                f"got shape {tuple(x.shape) if not unbatched else tuple(x.shape[::2])}"
            )
        if lengths is not None:
            lengths = check_lengths(lengths, B, T, x.device)
        states = self._initial_state(state, x, B)
        if masks is not None:
            masks = self._check_masks(masks, B, x)
        elif self.training and self.regularised:
            masks = self.sample_masks(B, dtype=x.dtype, device=x.device)
        out, finals, traces = self._run(x, states, lengths, trace, masks)
        if unbatched:
            out = out.squeeze(1)
            finals = tuple(f.squeeze(1) for f in finals)
        elif self.batch_first:
            out = out.transpose(0, 1)
        final = finals[0] if len(finals) == 1 else self.spec.pack(finals)
        return (out, final, traces) if trace else (out, final)

    def _run(
        self,
        x: Tensor,
        states: tuple[Tensor, ...],
        lengths: Tensor | None,
        trace: bool,
        masks: list[DropoutMasks] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, ...], list[dict[str, Tensor]] | None]:
        spec, D = self.spec, self.num_directions
        traces: list[dict[str, Tensor]] = []
        names = [p.name for p in spec.params]
        k_hh = names.index("w_hh") if "w_hh" in names else -1

        def layer_fn(layer: int):
            def run(inp: Tensor, s0: list[tuple[Tensor, ...]]):
                outputs, finals = [], []
                for d, suffix in enumerate(self._suffixes(layer)):
                    mk = masks[layer * D + d] if masks is not None else DropoutMasks()
                    x_d = inp if mk.input is None else inp * mk.input  # (T, B, I) ⊙ (B, I)
                    params = [getattr(self, name) for name in self._attrs[suffix]]
                    if mk.weight is not None:  # DropConnect, differentiable w.r.t. w_hh
                        params[k_hh] = params[k_hh] * mk.weight
                    if self.proj_size:
                        y, sT = engine.run_proj(x_d, s0[d], params, lengths, d == 1, self.backend)
                    elif trace:
                        named = dict(zip(names, params[: len(names)], strict=True))
                        y, sT, tr = traced_run(
                            spec, x_d, s0[d], named, lengths, d == 1, mk.recurrent
                        )
                        traces.append(tr)
                    else:
                        y, sT = engine.run(
                            spec, x_d, s0[d], params, lengths, d == 1, self.backend, mk.recurrent
                        )
                    outputs.append(y)
                    finals.append(sT)
                return (outputs[0] if D == 1 else torch.cat(outputs, dim=-1)), finals

            return run

        per_layer = [
            [tuple([s[layer * D + d] for s in states]) for d in range(D)]
            for layer in range(self.num_layers)
        ]
        layers = [layer_fn(layer) for layer in range(self.num_layers)]
        out, finals = run_stack(layers, x, per_layer, self.dropout, self.training)
        # each state part stacked over (layer, direction): (L·D, B, H)
        stacked = tuple(
            [torch.stack([f[d][k] for f in finals for d in range(D)]) for k in range(len(states))]
        )
        return out, stacked, (traces if trace else None)

    def extra_repr(self) -> str:
        """torch.nn's repr (``LSTM(3, 4, num_layers=2)``), then seqlab's own options."""
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        if getattr(self, "reset_after", True) is not True:
            s += f", reset_after={self.reset_after}"
        for name, default in (
            ("backend", None),
            ("init", "default"),
            ("forget_bias", None),
            ("learn_initial_state", False),
            ("input_dropout", 0.0),
            ("recurrent_dropout", 0.0),
            ("weight_dropout", 0.0),
        ):
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)!r}"
        return s


def check_regularisers(
    spec: CellSpec, proj_size: int, recurrent_dropout: float, weight_dropout: float
) -> None:
    """Refuse a regulariser the cell kind has nothing to act on (input dropout always works).

    ``recurrent_dropout`` needs a step that reads the recurrent mask (``spec.h_mask``: the
    classic and LayerNorm cells; not IndRNN, whose recurrence is ``u ⊙ h``, nor cells
    without a recurrent product) and no ``proj_size``; ``weight_dropout`` needs a recurrent
    matrix ``w_hh``.
    """
    if recurrent_dropout > 0:
        if not spec.h_mask:
            raise ValueError(
                f"recurrent_dropout: cell kind {spec.name!r} has no recurrent product "
                f"h_(t-1) @ w_hh that takes the mask; use 0 (kinds that take it: "
                f"{sorted(k for k, s in SPECS.items() if s.h_mask)})"
            )
        if proj_size:
            raise ValueError("recurrent_dropout: not available with proj_size > 0")
    if weight_dropout > 0 and not any(p.name == "w_hh" and p.cols for p in spec.params):
        raise ValueError(
            f"weight_dropout: cell kind {spec.name!r} has no recurrent matrix w_hh to drop "
            f"connections of; use 0"
        )


def check_proj_size(proj_size: object, hidden_size: int, mode: str) -> None:
    """torch.nn's rules for ``proj_size`` (None: not given; 0: no projection).

    As torch.nn, only an LSTM takes the argument at all (``GRU(..., proj_size=0)`` is refused).
    """
    if proj_size is None:
        return
    if mode != "lstm":
        raise ValueError(f"proj_size: only LSTM takes a projection, got proj_size={proj_size!r}")
    if not isinstance(proj_size, int) or isinstance(proj_size, bool) or proj_size < 0:
        raise ValueError(f"proj_size: expected an int >= 0 (0: no projection), got {proj_size!r}")
    if proj_size == 0:
        return
    if proj_size >= hidden_size:
        raise ValueError(
            f"proj_size: expected less than hidden_size={hidden_size}, got {proj_size}"
        )


class RNN(RecurrentLayer):
    """Elman RNN stack: ``h_t = φ(x_t @ W_ihᵀ + b_ih + h_{t−1} @ W_hhᵀ + b_hh)``, φ = tanh or relu.

    Arguments as ``torch.nn.RNN``; see the module docstring for shapes.
    """

    kinds = ("rnn_tanh", "rnn_relu")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        **options,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(
            f"rnn_{nonlinearity}",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            **options,
        )


class LSTM(RecurrentLayer):
    """LSTM stack, gates i, f, g, o (equations in :class:`seqlab.LSTMCell`).

    Arguments as ``torch.nn.LSTM``; ``proj_size=P > 0`` (see :mod:`seqlab.functional.proj`)
    gives h, the outputs and ``weight_hh`` P columns, adds ``weight_hr_l{k}`` (P, H) as
    torch.nn does, and runs on every backend (:func:`seqlab.engine.run_proj`). ``forget_bias``
    sets the initial forget-gate bias. The final state is ``LSTMState(h_n, c_n)``.
    """

    kinds = ("lstm",)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        **options,
    ) -> None:
        super().__init__(
            "lstm",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            **options,
        )


class GRU(RecurrentLayer):
    """GRU stack, gates r, z, n (equations and both reset conventions in :class:`seqlab.GRUCell`).

    ``reset_after=True`` matches ``torch.nn.GRU``; ``reset_after=False`` is the original form.
    """

    kinds = ("gru", "gru_reset_before")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        reset_after: bool = True,
        **options,
    ) -> None:
        self.reset_after = reset_after
        super().__init__(
            "gru" if reset_after else "gru_reset_before",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            **options,
        )


def make_layer(mode: str | CellSpec, input_size: int, hidden_size: int, **kwargs) -> RecurrentLayer:
    """The layer of a cell kind: :class:`RNN`/:class:`LSTM`/:class:`GRU` for the classic
    kinds (with the description's ``options``, e.g. ``nonlinearity``), else
    :class:`RecurrentLayer` itself. ``kwargs`` as :class:`RecurrentLayer`."""
    spec = get_spec(mode)
    for cls in (RNN, LSTM, GRU):
        if spec.name in cls.kinds:
            return cls(input_size, hidden_size, **spec.options, **kwargs)
    return RecurrentLayer(spec, input_size, hidden_size, **kwargs)
