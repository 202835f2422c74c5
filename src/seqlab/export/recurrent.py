"""Recurrent layers and cells as ONNX nodes.

Two lowerings of one (layer, direction) pass over time-major ``x`` (T, B, I):

* **native**: ONNX's own ``RNN``/``LSTM``/``GRU`` operators. seqlab's fused weight rows are
  reordered to ONNX's gate orders (LSTM ``i,f,g,o`` → ``i,o,f,c``; GRU ``r,z,n`` → ``z,r,h``);
  ``B`` is ``[b_ih; b_hh]`` in that order. GRU: seqlab's ``reset_after=True`` (torch.nn) is
  ``linear_before_reset=1``, ``n = tanh(x_n + r ⊙ (h W_hnᵀ + b_hn))``; ``reset_after=False``
  (Cho) is the operator's default ``linear_before_reset=0``, ``n = tanh(x_n + (r ⊙ h) W_hnᵀ +
  b_hn)``. Both directions of a layer are one node (``direction="bidirectional"``),
  ``lengths`` become ``sequence_lens``.
* **loop**: a ``Scan`` whose body is the step math written out (the same equations as
  :mod:`seqlab.functional.cells`), after one MatMul that projects every step's input. With
  lengths a (T, B, 1) mask holds the state at padded steps: ``h ← h + m (h' − h)`` and
  ``y = m h'``. The backward direction scans all T steps in reverse, so a row's padded tail
  comes first and leaves its zero (or given) initial state untouched — which is exactly
  reading the row's valid prefix backwards.

Either way outputs at padded steps are multiplied by the mask (exact zeros, as seqlab's), and
the final state of each row is the one at its last valid step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seqlab.export.graph import BOOL, FLOAT, Graph, helper
from seqlab.functional.spec import SPECS

# seqlab's row blocks → ONNX's: index of the seqlab block for each ONNX block
_ONNX_ORDER = {
    "lstm": [0, 3, 1, 2],  # i, o, f, c(=g)
    "gru": [1, 0, 2],  # z, r, h(=n)
    "gru_reset_before": [1, 0, 2],
    "rnn_tanh": [0],
    "rnn_relu": [0],
}
_GATES = {m: len(o) for m, o in _ONNX_ORDER.items()}


@dataclass
class Weights:
    """One (layer, direction)'s parameters in seqlab's layout; biases may be None."""

    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor | None
    b_hh: Tensor | None

    def bias(self, which: str) -> Tensor:
        b = self.b_ih if which == "ih" else self.b_hh
        return b.detach() if b is not None else self.w_ih.new_zeros(self.w_ih.shape[0])


def _reorder(t: Tensor, mode: str) -> Tensor:
    H = t.shape[0] // _GATES[mode]
    blocks = t.detach().split(H, dim=0)
    return torch.cat([blocks[k] for k in _ONNX_ORDER[mode]], dim=0)


def lengths_mask(g: Graph, lengths: str, like_tb: str) -> str:
    """Bool (T, B, 1) mask, True where t < lengths[b]; ``like_tb`` is any (T, B, ...) value."""
    T = g.op("Squeeze", [g.dim(like_tb, 0)])
    steps = g.op("Range", [g.const(0, "i"), T, g.const(1, "i")])  # (T,)
    valid = g.op("Less", [g.unsqueeze(steps, 1), g.unsqueeze(lengths, 0)])  # (T, B)
    return g.unsqueeze(valid, 2)


def native_layer(
    g: Graph,
    mode: str,
    x: str,
    dirs: list[Weights],
    h0: str | None,
    c0: str | None,
    seq_lens: str | None,
) -> tuple[str, str, str | None]:
    """One layer (one or two directions) as an ONNX RNN/LSTM/GRU node.

    Returns ``y`` (T, B, D·H), ``h_n`` (D, B, H) and ``c_n`` (LSTM) or None.
    """
    H = dirs[0].w_hh.shape[1]
    D = len(dirs)
    W = g.const(torch.stack([_reorder(d.w_ih, mode) for d in dirs]), "W")
    R = g.const(torch.stack([_reorder(d.w_hh, mode) for d in dirs]), "R")
    B = g.const(
        torch.stack(
            [torch.cat([_reorder(d.bias("ih"), mode), _reorder(d.bias("hh"), mode)]) for d in dirs]
        ),
        "B",
    )
    attrs: dict = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
    if mode.startswith("rnn"):
        op, n_out = "RNN", 2
        attrs["activations"] = ["Tanh" if mode == "rnn_tanh" else "Relu"] * D
    elif mode == "lstm":
        op, n_out = "LSTM", 3
    else:
        op, n_out = "GRU", 2
        attrs["linear_before_reset"] = 1 if mode == "gru" else 0
    inputs = [x, W, R, B, seq_lens or "", h0 or ""]
    if mode == "lstm":
        inputs.append(c0 or "")
    while inputs[-1] == "":
        inputs.pop()
    outs = g.op(op, inputs, n_out=n_out, **attrs)
    y = g.op("Transpose", [outs[0]], perm=[0, 2, 1, 3])  # (T, D, B, H) -> (T, B, D, H)
    y = g.op("Reshape", [y, g.ints(0, 0, D * H)])
    return y, outs[1], (outs[2] if mode == "lstm" else None)


def cell_step(
    g: Graph, mode: str, xw: str, h: str, c: str | None, w: Weights
) -> tuple[str, str | None]:
    """One step from the projected input ``xw = x W_ihᵀ + b_ih`` (B, G·H): ``(h', c')``."""
    H = w.w_hh.shape[1]
    if mode.startswith("rnn"):
        a = g.op("Add", [xw, g.matmul_t(h, w.w_hh, w.bias("hh"))])
        return g.op("Tanh" if mode == "rnn_tanh" else "Relu", [a]), None
    if mode == "lstm":
        a = g.op("Add", [xw, g.matmul_t(h, w.w_hh, w.bias("hh"))])
        a_i, a_f, a_g, a_o = g.split(a, -1, 4, H)
        i, f, o = (g.op("Sigmoid", [t]) for t in (a_i, a_f, a_o))
        c_new = g.op("Add", [g.op("Mul", [f, c]), g.op("Mul", [i, g.op("Tanh", [a_g])])])
        return g.op("Mul", [o, g.op("Tanh", [c_new])]), c_new
    x_r, x_z, x_n = g.split(xw, -1, 3, H)
    b_hh = w.bias("hh")
    if mode == "gru":
        h_r, h_z, h_n = g.split(g.matmul_t(h, w.w_hh, b_hh), -1, 3, H)
        r = g.op("Sigmoid", [g.op("Add", [x_r, h_r])])
        n_rec = g.op("Mul", [r, h_n])
    else:  # reset before: the reset gate scales h before the candidate's product
        h_r, h_z = g.split(g.matmul_t(h, w.w_hh[: 2 * H], b_hh[: 2 * H]), -1, 2, H)
        r = g.op("Sigmoid", [g.op("Add", [x_r, h_r])])
        n_rec = g.matmul_t(g.op("Mul", [r, h]), w.w_hh[2 * H :], b_hh[2 * H :])
    z = g.op("Sigmoid", [g.op("Add", [x_z, h_z])])
    n = g.op("Tanh", [g.op("Add", [x_n, n_rec])])
    return g.op("Add", [n, g.op("Mul", [z, g.op("Sub", [h, n])])]), None  # z h + (1-z) n


def scan_loop(
    g: Graph,
    xs: str,
    step_width: int | None,
    states: list[tuple[str, list]],
    step,
    mask: str | None,
    reverse: bool,
    y_rank: int = 2,
) -> tuple[str, list[str]]:
    """A ``Scan`` over time-major ``xs`` (T, B, F) calling ``step(body, x_t, states)``.

    ``states``: (initial value, body shape) pairs. ``step`` adds the step's nodes to the body
    graph and returns ``(y_t, new_states)``. ``mask``: bool (T, B, 1) or None; where it is
    False the state is carried unchanged and ``y_t`` (of rank ``y_rank``) is 0 (``Where``,
    so exact).
    Returns ``(ys (T, B, ...), final_states)``.
    """
    body = Graph("step", parent=g)
    s_in = [body.input(body.fresh("s"), FLOAT, shape) for _, shape in states]
    x_t = body.input(body.fresh("x"), FLOAT, ["B", step_width])
    m = body.input(body.fresh("m"), BOOL, ["B", 1]) if mask is not None else None
    y, s_new = step(body, x_t, s_in)
    if m is not None:
        zero = body.const(0.0)
        y = body.op("Where", [_mask_rank(body, m, y_rank), y, zero])
        s_new = [
            body.op("Where", [_mask_rank(body, m, len(shape)), new, old])
            for new, old, (_, shape) in zip(s_new, s_in, states, strict=True)
        ]
    for k, (new, (_, shape)) in enumerate(zip(s_new, states, strict=True)):
        body.output(body.fresh(f"s{k}_out"), new, FLOAT, shape)
    body.output(body.fresh("y_out"), y, FLOAT, ["B"] + [None] * (y_rank - 1))
    scans = [xs] + ([mask] if mask is not None else [])
    outs = g.op(
        "Scan",
        [v for v, _ in states] + scans,
        n_out=len(states) + 1,
        body=body.graph(),
        num_scan_inputs=len(scans),
        scan_input_directions=[int(reverse)] * len(scans),
        scan_output_directions=[int(reverse)],
    )
    return outs[-1], outs[:-1]


def _mask_rank(body: Graph, m: str, rank: int) -> str:
    """The (B, 1) step mask with trailing 1s up to ``rank``."""
    if rank <= 2:
        return m
    return body.unsqueeze(m, *range(2, rank))


def scan_direction(
    g: Graph,
    mode: str,
    x: str,
    w: Weights,
    h0: str,
    c0: str | None,
    mask: str | None,
    reverse: bool,
) -> tuple[str, str, str | None]:
    """One direction as a Scan over time: ``(y (T, B, H), h_n (B, H), c_n or None)``."""
    H = w.w_hh.shape[1]
    xw = g.matmul_t(x, w.w_ih, w.bias("ih"))  # (T, B, G·H), every step at once
    lstm = mode == "lstm"
    states = [(h0, ["B", H])] + ([(c0, ["B", H])] if lstm else [])

    def step(body: Graph, xw_t: str, s: list[str]):
        h_new, c_new = cell_step(body, mode, xw_t, s[0], s[1] if lstm else None, w)
        return h_new, [h_new] + ([c_new] if lstm else [])

    y, finals = scan_loop(g, xw, _GATES[mode] * H, states, step, mask, reverse)
    return y, finals[0], (finals[1] if lstm else None)


def layer_weights(layer, index: int) -> list[Weights]:
    """The :class:`Weights` of layer ``index`` of a seqlab RNN/LSTM/GRU (or torch.nn twin)."""
    dirs = ["", "_reverse"][: 2 if layer.bidirectional else 1]
    return [
        Weights(*(getattr(layer, f"{n}_l{index}{s}", None) for n in _PARAM_NAMES)) for s in dirs
    ]


_PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def layer_mode(layer) -> str:
    """seqlab's cell kind (``lstm``, ``gru``, ``gru_reset_before``, ``rnn_tanh``/``rnn_relu``)."""
    mode = getattr(layer, "mode", None)
    if isinstance(mode, str) and mode in _ONNX_ORDER:
        return mode
    name = type(layer).__mro__
    for cls in name:  # torch.nn layers (impl="torch"): mode is "LSTM", "GRU", "RNN_TANH"...
        if cls.__name__ in ("LSTM", "GRU", "RNN"):
            kind = cls.__name__.lower()
            if kind == "rnn":
                return f"rnn_{getattr(layer, 'nonlinearity', 'tanh')}"
            return kind
    if isinstance(mode, str) and mode in SPECS:  # a registered kind ONNX has no operator for
        raise ValueError(
            f"layer: no ONNX export for cell kind {mode!r}; exportable kinds: "
            f"{', '.join(sorted(_ONNX_ORDER))}"
        )
    raise TypeError(
        f"layer: expected seqlab.RNN/LSTM/GRU or torch.nn.RNN/LSTM/GRU, got {type(layer).__name__}"
    )


def emit_layer(
    g: Graph,
    layer,
    x: str,
    state: tuple[str, ...] | None,
    lengths: str | None,
    loop: bool = False,
) -> tuple[str, tuple[str, ...]]:
    """A whole multi-layer stack over time-major ``x`` (T, B, I).

    ``state``: ``(h0,)`` or ``(h0, c0)``, each (L·D, B, H), or None (zeros / the layer's
    learned initial state). ``lengths``: int64 (B,) or None. Returns ``y`` (T, B, D·H) and
    the final state(s), each (L·D, B, H).
    """
    mode = layer_mode(layer)
    if getattr(layer, "proj_size", 0):
        raise ValueError("layer: LSTM proj_size is not supported by the ONNX export")
    L, D, H = layer.num_layers, 2 if layer.bidirectional else 1, layer.hidden_size
    lstm = mode == "lstm"
    n_state = 2 if lstm else 1
    if state is None and getattr(layer, "learn_initial_state", False):
        learned = layer.initial_state_param.detach()  # (n_state, L·D, 1, H)
        shape = g.op("Concat", [g.ints(L * D), g.dim(x, 1), g.ints(H)], axis=0)
        state = tuple(g.op("Expand", [g.const(learned[k]), shape]) for k in range(n_state))
    if state is None and loop:
        zeros = g.zeros([g.ints(L * D), g.dim(x, 1), g.ints(H)])
        state = (zeros,) * n_state
    mask = lengths_mask(g, lengths, x) if lengths is not None else None
    seq_lens = g.op("Cast", [lengths], to=helper.TensorProto.INT32) if lengths is not None else None
    finals: list[list[str]] = [[] for _ in range(n_state)]
    y = x
    for k in range(L):
        dirs = layer_weights(layer, k)
        s0 = [g.slice(s, 0, k * D, (k + 1) * D) for s in state] if state is not None else None
        if loop:
            ys = []
            for d, w in enumerate(dirs):
                sd = [g.squeeze(g.slice(s, 0, d, d + 1), 0) for s in s0]
                yd, hn, cn = scan_direction(
                    g, mode, y, w, sd[0], sd[1] if lstm else None, mask, reverse=d == 1
                )
                ys.append(yd)
                finals[0].append(g.unsqueeze(hn, 0))
                if lstm:
                    finals[1].append(g.unsqueeze(cn, 0))
            y = ys[0] if D == 1 else g.op("Concat", ys, axis=-1)
        else:
            h0 = s0[0] if s0 else None
            c0 = s0[1] if (s0 and lstm) else None
            y, hn, cn = native_layer(g, mode, y, dirs, h0, c0, seq_lens)
            if mask is not None:  # exact zeros at padded steps, whatever the runtime leaves
                y = g.op("Where", [mask, y, g.const(0.0)])
            finals[0].append(hn)
            if lstm:
                finals[1].append(cn)
    out_states = tuple(f[0] if len(f) == 1 else g.op("Concat", f, axis=0) for f in finals)
    return y, out_states
