"""See inside any model while it runs: every step's gates and states, and ‖∂L/∂h_t‖.

``with Probe(model) as probe: out = model(...)`` runs each recurrent layer inside ``model``
(seqlab's ``RNN``/``LSTM``/``GRU`` and torch.nn's, any layers/directions) and each seqlab
cell (``RNNCell``/``LSTMCell``/``GRUCell``, e.g. a decoder's cell stack) through an
instrumented loop built from :mod:`seqlab.functional`'s step math, with the module's own
weights. Outputs are the same as the module's own (same equations; the tests check it
against the layer's ``trace=True``), so the model's result is unchanged, and the probe
keeps, per (layer, direction) ``k = layer·D + direction``:

* the trace: LSTM ``i, f, g, o, c, h``; GRU ``r, z, n, h``; RNN ``a`` (pre-activation),
  ``h`` — each (B, T, H) for batch-first modules (all seqlab models), else (T, B, H); zero
  at padded steps; original time order for both directions;
* the graph nodes of every ``h_t`` (and ``c_t``): each is used both by the output at step t
  and by the next step, so ``∂L/∂h_t`` taken at that node is the *total* derivative
  (direct + through the future), as in :func:`seqlab.training.hidden_grad_norms`;
* the input of the first layer (for saliency ‖∂L/∂x_t‖).

Parts are named after the module that owns the recurrence: a layer inside a
``RecurrentEncoder`` by the encoder's name (``"encoder"``, ``"rnn"``, ``"decoder"``), a
cell stack by the stack's name (its cells are its layers). Several calls of one part (a
language model reading a stream in pieces, a decoder stepping) are joined along time.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqlab.cells import Cell
from seqlab.functional.cells import gru_gates, lstm_gates, rnn_preactivation
from seqlab.functional.scan import reverse_padded, step_mask
from seqlab.functional.spec import CellSpec, get_spec
from seqlab.functional.trace import TRACE_NAMES

Traces = dict[str, list[dict[str, Tensor]]]

_TORCH_MODES = {"LSTM": "lstm", "GRU": "gru", "RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu"}


def _mode(m: nn.Module) -> str | None:
    """The functional cell kind of a recurrent layer or seqlab cell, else None."""
    if isinstance(m, nn.RNNBase):
        return None if getattr(m, "proj_size", 0) else _TORCH_MODES.get(m.mode)
    mode = getattr(m, "mode", None)
    return mode if mode in TRACE_NAMES else None


def _is_layer(m: nn.Module) -> bool:
    return hasattr(m, "num_layers") and hasattr(m, "weight_ih_l0") and _mode(m) is not None


def _is_cell(m: nn.Module) -> bool:
    """A seqlab cell running its kind's own step: a subclass overriding ``forward`` or
    ``step`` is left alone (its code, not the kind's step math, is what the model runs)."""
    if hasattr(m, "num_layers") or not hasattr(m, "weight_ih") or _mode(m) is None:
        return False
    return not isinstance(m, Cell) or (
        type(m).forward is Cell.forward and type(m).step is Cell.step
    )


def step(mode: str, xw: Tensor, state: tuple[Tensor, ...], w_hh: Tensor, b_hh: Tensor | None):
    """One step from the premultiplied input ``xw``: (record, new state tuple)."""
    h = state[0]
    if mode == "lstm":
        i, f, g, o = lstm_gates(xw, h, w_hh, b_hh)
        c = f * state[1] + i * g
        h = o * torch.tanh(c)
        return (i, f, g, o, c, h), (h, c)
    if mode.startswith("gru"):
        r, z, n = gru_gates(xw, h, w_hh, b_hh, reset_after=mode == "gru")
        h = n + z * (h - n)
        return (r, z, n, h), (h,)
    a = rnn_preactivation(xw, h, w_hh, b_hh)
    h = torch.tanh(a) if mode == "rnn_tanh" else torch.relu(a)
    return (a, h), (h,)


def _params(spec: CellSpec, m: nn.Module, suffix: str = "") -> dict[str, Tensor | None]:
    """The module's parameters by the description's functional names (``weight_ih_l0`` ->
    ``w_ih``); an absent bias is None."""
    return {p.name: getattr(m, f"{p.attr}{suffix}", None) for p in spec.params}


def _has_c(spec: CellSpec) -> bool:
    return spec.state[1:2] == ("c",)


@dataclass
class _Piece:
    """One (layer, direction) of one call: trace (T, B, H) in original time order, the
    state nodes in processing order, and what is needed to map them back."""

    trace: dict[str, Tensor]
    h_nodes: list[Tensor]
    c_nodes: list[Tensor]
    lengths: Tensor | None
    reverse: bool


@dataclass
class _Part:
    batch_first: bool
    calls: list[list[_Piece]] = field(default_factory=list)  # per call, per k
    inputs: list[Tensor] = field(default_factory=list)  # first-layer input per call (T, B, I)
    cell_steps: dict[int, list[tuple]] = field(default_factory=dict)  # cells: k -> steps


def run_direction(
    mode: str | CellSpec,
    x: Tensor,
    state: tuple[Tensor, ...],
    weights: dict[str, Tensor | None] | tuple[Tensor, Tensor, Tensor | None, Tensor | None],
    lengths: Tensor | None,
    reverse: bool,
) -> tuple[Tensor, tuple[Tensor, ...], _Piece]:
    """One layer direction over time-major ``x`` (T, B, I): (outputs (T, B, H), final, piece).

    ``weights``: the parameters by functional name (any registered kind, whose description
    gives the projection and the step), or a classic ``(w_ih, w_hh, b_ih, b_hh)``.
    Lengths and reverse follow :func:`seqlab.functional.scan`: row b reads its first
    ``lengths[b]`` steps (backwards when ``reverse``); padded outputs are 0 and the state is
    held there.
    """
    spec = get_spec(mode)
    if not isinstance(weights, dict):
        weights = dict(zip(("w_ih", "w_hh", "b_ih", "b_hh"), weights, strict=True))
    xw = spec.project(x, weights)
    if reverse:
        xw = reverse_padded(xw, lengths)
    T = x.shape[0]
    mask = step_mask(lengths, T, x.device)
    records, h_nodes, c_nodes = [], [], []
    for t in range(T):
        new, record = spec.step(xw[t], state, weights)
        if mask is not None:
            m = mask[t].unsqueeze(-1)
            new = tuple(torch.where(m, a, b) for a, b in zip(new, state, strict=True))
            record = tuple(torch.where(m, r, torch.zeros_like(r)) for r in record)
        state = new
        h_nodes.append(state[0])
        if _has_c(spec):
            c_nodes.append(state[1])
        records.append(record)
    names = spec.trace
    trace = {n: torch.stack([r[j] for r in records]) for j, n in enumerate(names)}
    if mask is not None:  # outputs: h at valid steps, 0 at padding; read from the h nodes
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        out = torch.stack([torch.where(mask[t].unsqueeze(-1), h, zero) for t, h in
                           enumerate(h_nodes)])  # fmt: skip
    else:
        out = torch.stack(h_nodes)
    if reverse:
        trace = {n: reverse_padded(v, lengths) for n, v in trace.items()}
        out = reverse_padded(out, lengths)
    return out, state, _Piece(trace, h_nodes, c_nodes, lengths, reverse)


class Probe:
    """Context manager instrumenting every recurrent layer and seqlab cell of ``model``
    (see the module docstring). ``part`` names restrict it to some parts."""

    def __init__(self, model: nn.Module, parts: list[str] | None = None) -> None:
        self.model = model
        self.parts: dict[str, _Part] = {}
        self.order: list[str] = []  # parts in the order they first ran
        self._patched: list[nn.Module] = []
        self._targets: list[tuple[str, int, nn.Module]] = []
        for name, m in model.named_modules():
            if _is_layer(m):
                owner = name[: -len(".rnn")] if name.endswith(".rnn") else name
                self._targets.append((owner or "layer", -1, m))
            elif _is_cell(m):
                head, _, idx = name.rpartition(".")
                if idx.isdigit() and head.endswith(".cells") or head == "cells":
                    owner = head[: -len(".cells")] if head.endswith(".cells") else "cells"
                    self._targets.append((owner, int(idx), m))
                else:
                    self._targets.append((name or "cell", 0, m))
        if parts is not None:
            self._targets = [t for t in self._targets if t[0] in parts]
        inner = {id(m) for _, _, m in self._targets if _is_layer(m)}
        for _, _, m in self._targets:  # a layer's own cells (none in seqlab) stay untouched
            for sub in m.modules():
                if sub is not m and id(sub) in inner:
                    raise ValueError("model: nested recurrent layers are not supported")

    # ----------------------------------------------------------------- patching
    def __enter__(self) -> Probe:
        if not self._targets:
            raise ValueError(
                f"model: {type(self.model).__name__} has no recurrent layer or seqlab cell "
                "to probe (a Transformer has no recurrent state)"
            )
        for owner, k, m in self._targets:
            fn = self._layer_forward(owner, m) if k < 0 else self._cell_forward(owner, k, m)
            m.forward = types.MethodType(fn, m)
            self._patched.append(m)
        return self

    def __exit__(self, *exc) -> None:
        for m in self._patched:
            del m.forward
        self._patched.clear()

    def _part(self, owner: str, batch_first: bool) -> _Part:
        if owner not in self.parts:
            self.parts[owner] = _Part(batch_first)
            self.order.append(owner)
        return self.parts[owner]

    def _layer_forward(self, owner: str, layer: nn.Module):
        probe = self
        mode = _mode(layer)
        spec = get_spec(mode)
        torch_layer = isinstance(layer, nn.RNNBase)

        def forward(m, x, state=None, lengths=None, trace=False):
            if not isinstance(x, Tensor) or x.dim() != 3:
                raise ValueError(
                    f"probe: expected a batched 3-D input tensor, got "
                    f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}"
                )
            xt = x.transpose(0, 1) if m.batch_first else x
            if not xt.requires_grad:  # a leaf, so saliency ∂L/∂x_t exists; same values
                xt = xt.detach().requires_grad_()
            T, B = xt.shape[:2]
            D, H = 2 if m.bidirectional else 1, m.hidden_size
            parts = len(spec.state)
            if state is None:
                if hasattr(m, "_initial_state"):
                    states = m._initial_state(None, xt, B)
                else:
                    states = (xt.new_zeros(m.num_layers * D, B, H),) * parts
            else:
                states = (state,) if isinstance(state, Tensor) else tuple(state)
            if lengths is not None:
                lengths = torch.as_tensor(lengths).to(torch.long)
            part = probe._part(owner, m.batch_first)
            part.inputs.append(xt)
            pieces, finals = [], [[] for _ in range(parts)]
            inp = xt
            for layer_i in range(m.num_layers):
                if layer_i and m.dropout and m.training:
                    inp = F.dropout(inp, m.dropout, training=True)
                outs = []
                for d in range(D):
                    sfx = f"_l{layer_i}" + ("_reverse" if d else "")
                    w = _params(spec, m, sfx)
                    k = layer_i * D + d
                    s0 = tuple(s[k] for s in states)
                    y, sT, piece = run_direction(mode, inp, s0, w, lengths, d == 1)
                    outs.append(y)
                    pieces.append(piece)
                    for acc, s in zip(finals, sT, strict=True):
                        acc.append(s)
                inp = outs[0] if D == 1 else torch.cat(outs, -1)
            part.calls.append(pieces)
            out = inp.transpose(0, 1) if m.batch_first else inp
            stacked = [torch.stack(f) for f in finals]
            if len(stacked) > 1:
                final = tuple(stacked) if torch_layer else spec.pack(stacked)
            else:
                final = stacked[0]
            if trace:
                raise ValueError("probe: the layer's own trace=True is not available inside")
            return out, final

        return forward

    def _cell_forward(self, owner: str, k: int, cell: nn.Module):
        probe = self
        spec = get_spec(_mode(cell))

        def forward(m, x, state=None):
            if not x.requires_grad:  # a leaf, so saliency ∂L/∂x_t exists; same values
                x = x.detach().requires_grad_()
            if state is None:
                state = m.initial_state(x.shape[0], dtype=x.dtype, device=x.device)
            s = (state,) if isinstance(state, Tensor) else tuple(state)
            params = _params(spec, m)
            new, record = spec.step(spec.project(x, params), s, params)
            part = probe._part(owner, True)
            if k == 0:
                part.inputs.append(x)
            part.cell_steps.setdefault(k, []).append((record, new))
            return spec.pack(new)  # torch.nn's cell return: h, or e.g. LSTMState(h, c)

        return forward

    # ----------------------------------------------------------------- results
    def _pieces(self, name: str) -> list[list[_Piece]]:
        """Per k, the pieces of every call (cells: one piece per k, steps stacked)."""
        part = self.parts[name]
        if part.cell_steps:
            out = []
            for k in sorted(part.cell_steps):
                steps = part.cell_steps[k]
                mode_names = TRACE_NAMES[_mode(self._cell_of(name, k))]
                trace = {
                    n: torch.stack([rec[j] for rec, _ in steps]) for j, n in enumerate(mode_names)
                }
                hs = [new[0] for _, new in steps]
                cs = [new[1] for _, new in steps if len(new) > 1]
                out.append([_Piece(trace, hs, cs, None, False)])
            return out
        K = len(part.calls[0])
        return [[call[k] for call in part.calls] for k in range(K)]

    def _cell_of(self, name: str, k: int) -> nn.Module:
        return next(m for owner, kk, m in self._targets if owner == name and kk == k)

    def directions(self, name: str) -> int:
        """D of a part (2 for a bidirectional layer)."""
        m = next(m for owner, _, m in self._targets if owner == name)
        return 2 if getattr(m, "bidirectional", False) else 1

    def kind(self, name: str) -> str:
        """The cell kind of a part: lstm, gru, gru_reset_before, rnn_tanh or rnn_relu."""
        return _mode(next(m for owner, _, m in self._targets if owner == name))

    def traces(self) -> Traces:
        """``{part: [trace of k = layer·D + direction]}``, tensors (B, T, H) for batch-first
        parts (all seqlab models), detached."""
        out: Traces = {}
        for name in self.order:
            bf = self.parts[name].batch_first
            per_k = []
            for pieces in self._pieces(name):
                names = pieces[0].trace.keys()
                joined = {n: torch.cat([p.trace[n] for p in pieces]).detach() for n in names}
                per_k.append({n: v.transpose(0, 1) if bf else v for n, v in joined.items()})
            out[name] = per_k
        return out

    def inputs(self, name: str) -> Tensor:
        """The first layer's input of a part, time-major (T, B, I), calls joined."""
        part = self.parts[name]
        return torch.stack(part.inputs) if part.cell_steps else torch.cat(part.inputs)

    def grad_norms(
        self, loss: Tensor, retain_graph: bool = False
    ) -> dict[str, list[dict[str, Tensor]]]:
        """``{part: [{"h": (T,), "c": (T,) or absent, "x": (T,) (k of the first layer)}]}``:
        ‖∂loss/∂h_t‖, ‖∂loss/∂c_t‖ (Frobenius over the batch) at every step in original
        time order, and ‖∂loss/∂x_t‖ of the part's input for the first layer's entries."""
        plan: list[tuple[str, int, str, _Piece]] = []
        nodes: list[Tensor] = []
        for name in self.order:
            for k, pieces in enumerate(self._pieces(name)):
                for p in pieces:
                    for kind, seq in (("h", p.h_nodes), ("c", p.c_nodes)):
                        if seq:
                            plan.append((name, k, kind, p))
                            nodes.extend(seq)
        xs = [(n, x) for n in self.order for x in self.parts[n].inputs if x.requires_grad]
        grads = torch.autograd.grad(
            loss, nodes + [x for _, x in xs], allow_unused=True, retain_graph=retain_graph
        )
        out: dict[str, list[dict[str, list[Tensor]]]] = {}
        pos = 0
        for name, k, kind, p in plan:
            seq = p.h_nodes if kind == "h" else p.c_nodes
            chunk = grads[pos : pos + len(seq)]
            g = torch.stack([c if c is not None else torch.zeros_like(seq[0]) for c in chunk])
            if p.reverse:  # processing order -> original positions, row by row
                g = reverse_padded(g, p.lengths)
            pos += len(seq)
            per_k = out.setdefault(name, [])
            while len(per_k) <= k:
                per_k.append({})
            per_k[k].setdefault(kind, []).append(g.flatten(1).norm(dim=1).detach())
        for (name, x), g in zip(xs, grads[pos:], strict=True):
            g = torch.zeros_like(x) if g is None else g
            norms = g.flatten(1).norm(dim=1) if g.dim() == 3 else g.norm().reshape(1)
            out[name][0].setdefault("x", []).append(norms.detach())
        return {
            name: [{kind: torch.cat(v) for kind, v in d.items()} for d in per_k]
            for name, per_k in out.items()
        }


def trace_model(model: nn.Module, *args, **kwargs) -> tuple[object, Traces]:
    """Run ``model(*args, **kwargs)`` under a :class:`Probe`: (its result, the traces)."""
    with Probe(model) as probe:
        result = model(*args, **kwargs)
    return result, probe.traces()


class AttentionProbe:
    """Context manager recording the attention weights of every
    :class:`seqlab.attention.MultiHeadAttention` inside ``model`` (Transformer models).

    Each call is run with ``need_weights=True, average_attn_weights=False``; the output the
    model sees is unchanged. ``weights[name]`` lists each call's (B, heads, T, S), detached.
    """

    def __init__(self, model: nn.Module) -> None:
        from seqlab.attention import MultiHeadAttention

        self.model = model
        self.targets = [(n, m) for n, m in model.named_modules()
                        if isinstance(m, MultiHeadAttention)]  # fmt: skip
        self.weights: dict[str, list[Tensor]] = {}

    def __enter__(self) -> AttentionProbe:
        if not self.targets:
            raise ValueError(f"model: {type(self.model).__name__} has no attention layer")
        for name, m in self.targets:
            original = type(m).forward

            def forward(mod, *args, _name=name, _orig=original, **kwargs):
                kwargs.update(need_weights=True, average_attn_weights=False)
                out = _orig(mod, *args, **kwargs)
                if out.weights is not None:
                    self.weights.setdefault(_name, []).append(out.weights.detach())
                return out

            m.forward = types.MethodType(forward, m)
        return self

    def __exit__(self, *exc) -> None:
        for _, m in self.targets:
            if "forward" in m.__dict__:
                del m.forward
