"""``seqlab.Recurrent(cell)``, ``Bidirectional`` and ``Stacked`` as ONNX ``Scan`` loops.

Any cell that follows seqlab's contract (``cell.step(x_t, state) -> (y_t, new_state)``, or
``cell(x_t, state)`` returning that for a cell without ``step``; ``initial_state``) exports:
the built-in RNN/LSTM/GRU cells through the written-out step math of
:mod:`seqlab.export.recurrent`, any other cell by tracing one step with
``torch.onnx.export(dynamo=False)`` (TorchScript tracing: the step must be tensor
operations without data-dependent Python control flow) and inlining that graph as the
``Scan`` body. The initial state is ``cell.initial_state`` broadcast over the batch, so it
must be the same for every row (zeros, or a learned vector).

Graph inputs: ``x`` (layout of the module's ``batch_first``) and ``lengths`` (B,) int64
when the example had lengths. Outputs: ``y`` and the final-state leaves ``state_0``,
``state_1``, … in the order of ``seqlab.functional.scan.tree_leaves``.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import onnx
import torch
from torch import Tensor, nn

from seqlab.cells import GRUCell, LSTMCell, RNNCell
from seqlab.cells import cell_step as step_of
from seqlab.export.graph import FLOAT, INT64, Graph
from seqlab.export.recurrent import _GATES, Weights, cell_step, emit_layer, lengths_mask, scan_loop
from seqlab.functional.scan import tree_leaves, tree_map
from seqlab.layers import RecurrentLayer
from seqlab.wrappers import Bidirectional, Recurrent, Stacked, engine_cell

_BUILTIN = (RNNCell, LSTMCell, GRUCell)


class _Step(nn.Module):
    """``(x, *state leaves) -> (*new state leaves, y)``: one cell step with flat tensors."""

    def __init__(self, cell: nn.Module, template: Any) -> None:
        super().__init__()
        self.cell, self.template = cell, template

    def forward(self, x: Tensor, *leaves: Tensor):
        it = iter(leaves)
        state = tree_map(lambda _: next(it), self.template)
        y, new = step_of(self.cell)(x, state)
        return (*tree_leaves(new), y)


def trace_cell(cell: nn.Module, input_size: int, template: Any) -> onnx.ModelProto:
    """One step of ``cell`` as an ONNX model (batch dimension symbolic)."""
    leaves = [t.expand(2, *t.shape[1:]).contiguous() for t in tree_leaves(template)]
    x = torch.randn(2, input_size)
    names_in = ["x"] + [f"s{k}" for k in range(len(leaves))]
    names_out = [f"n{k}" for k in range(len(leaves))] + ["y"]
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but needs no extras
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Step(cell, template).eval(),
            (x, *leaves),
            buf,
            dynamo=False,
            opset_version=17,
            input_names=names_in,
            output_names=names_out,
            dynamic_axes={n: {0: "B"} for n in names_in + names_out},
        )
    return onnx.load_from_string(buf.getvalue())


def inline(g: Graph, model: onnx.ModelProto, inputs: dict[str, str]) -> list[str]:
    """Copy ``model``'s nodes and weights into ``g`` with fresh names; returns its outputs.

    ``inputs`` maps the model's input names to values of ``g``.
    """
    prefix = g.fresh("cell") + "/"
    names = dict(inputs)
    for init in model.graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(init)
        copy.name = names[init.name] = prefix + init.name
        g.initializers.append(copy)
    for node in model.graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute):  # fmt: skip
            raise ValueError(f"cell: its traced step holds a {node.op_type} subgraph; unsupported")
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = prefix + node.name
        del copy.input[:]
        copy.input.extend(names.get(n, prefix + n) if n else "" for n in node.input)
        del copy.output[:]
        for n in node.output:
            names[n] = prefix + n
            copy.output.append(prefix + n)
        g.nodes.append(copy)
    return [names[o.name] for o in model.graph.output]


def _initial_state(g: Graph, cell: nn.Module, batch: str) -> tuple[Any, list[str]]:
    """``cell.initial_state`` for one row, checked to be the same for every row, broadcast."""
    one = cell.initial_state(1, dtype=torch.float32)
    two = cell.initial_state(2, dtype=torch.float32)
    for a, b in zip(tree_leaves(one), tree_leaves(two), strict=True):
        if not torch.equal(a.expand_as(b), b):
            raise ValueError(
                f"cell: {type(cell).__name__}.initial_state differs between rows; the export "
                "broadcasts one row's initial state over the batch"
            )
    values = []
    for leaf in tree_leaves(one):
        rest = g.ints(*leaf.shape[1:])
        values.append(g.op("Expand", [g.const(leaf), g.op("Concat", [batch, rest], axis=0)]))
    return one, values


Finals = list[tuple[str, int]]  # final-state leaves and their ranks


def emit_recurrent(
    g: Graph, rec: Recurrent, x: str, input_size: int, lengths: str | None
) -> tuple[str, Finals, int]:
    """One Recurrent over time-major ``x``: ``(y, final leaves, output width)``."""
    cell = rec.cell
    template, init = _initial_state(g, cell, g.dim(x, 1))
    shapes = [["B", *leaf.shape[1:]] for leaf in tree_leaves(template)]
    mask = lengths_mask(g, lengths, x) if lengths is not None else None
    if isinstance(cell, _BUILTIN) and engine_cell(cell) is not None:  # no override, no hook
        w = Weights(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
        lstm = cell.mode == "lstm"
        xs = g.matmul_t(x, w.w_ih, w.bias("ih"))  # every step's projection at once

        def step(body: Graph, xw_t: str, s: list[str]):
            h, c = cell_step(body, cell.mode, xw_t, s[0], s[1] if lstm else None, w)
            return h, [h] + ([c] if lstm else [])

        width, y_rank, out = _GATES[cell.mode] * cell.hidden_size, 2, cell.hidden_size
    else:
        traced = trace_cell(cell, input_size, template)
        n = len(init)
        xs = x

        def step(body: Graph, x_t: str, s: list[str]):
            feeds = {"x": x_t, **{f"s{k}": v for k, v in enumerate(s)}}
            outs = inline(body, traced, feeds)
            return outs[-1], outs[:n]

        with torch.no_grad():
            y1, _ = step_of(cell)(torch.zeros(1, input_size), template)
        width, y_rank, out = input_size, y1.dim(), int(y1.shape[-1])
    states = list(zip(init, shapes, strict=True))
    y, finals = scan_loop(g, xs, width, states, step, mask, rec.reverse, y_rank)
    return y, [(f, len(shape)) for f, shape in zip(finals, shapes, strict=True)], out


def emit_module(
    g: Graph, module: nn.Module, x: str, input_size: int, lengths: str | None
) -> tuple[str, Finals, int]:
    """Recurrent / Bidirectional / Stacked / seqlab layer over time-major ``x``."""
    if isinstance(module, Recurrent):
        return emit_recurrent(g, module, x, input_size, lengths)
    if isinstance(module, Bidirectional):
        y_f, s_f, w_f = emit_recurrent(g, module.fwd, x, input_size, lengths)
        y_b, s_b, w_b = emit_recurrent(g, module.bwd, x, input_size, lengths)
        if module.merge == "concat":
            return g.op("Concat", [y_f, y_b], axis=-1), s_f + s_b, w_f + w_b
        y = g.op({"sum": "Add", "mean": "Add", "mul": "Mul"}[module.merge], [y_f, y_b])
        if module.merge == "mean":
            y = g.op("Div", [y, g.const(2.0)])
        return y, s_f + s_b, w_f
    if isinstance(module, Stacked):
        finals: Finals = []
        for layer in module.layers:
            x, f, input_size = emit_module(g, layer, x, input_size, lengths)
            finals += f
        return x, finals, input_size
    if isinstance(module, RecurrentLayer):
        y, f = emit_layer(g, module, x, None, lengths, loop=True)
        return y, [(v, 3) for v in f], module.hidden_size * (2 if module.bidirectional else 1)
    raise TypeError(
        f"module: expected Recurrent, Bidirectional, Stacked or a seqlab layer, "
        f"got {type(module).__name__}"
    )


def _batch_first(module: nn.Module) -> bool:
    if isinstance(module, Stacked):
        return _batch_first(module.layers[0])
    return bool(getattr(module, "batch_first", False))


def wrapper_graph(module: nn.Module, input_size: int, with_lengths: bool) -> Graph:
    g = Graph("recurrent")
    bf = _batch_first(module)
    x = g.input("x", FLOAT, ["B", "T", input_size] if bf else ["T", "B", input_size])
    lengths = g.input("lengths", INT64, ["B"]) if with_lengths else None
    xt = g.op("Transpose", [x], perm=[1, 0, 2]) if bf else x
    y, finals, width = emit_module(g, module, xt, input_size, lengths)
    if bf:
        y = g.op("Transpose", [y], perm=[1, 0, 2])
    g.output("y", y, FLOAT, ["B", "T", width] if bf else ["T", "B", width])
    for k, (f, rank) in enumerate(finals):
        g.output(f"state_{k}", f, FLOAT, [None] * rank)
    return g
