"""Export graphs for a bare recurrent layer (seqlab.RNN/LSTM/GRU or their torch.nn twins).

Graph inputs: ``x`` (T, B, I) (or (B, T, I) with ``batch_first``), optionally ``lengths``
int64 (B,) and the initial state ``h0`` (``c0``) (L·D, B, H). Outputs: ``y`` in ``x``'s
layout with D·H features, ``h_n`` (and ``c_n``) (L·D, B, H).
"""

from __future__ import annotations

from seqlab.export.graph import FLOAT, INT64, Graph
from seqlab.export.recurrent import emit_layer, layer_mode


def layer_graph(layer, with_lengths: bool, with_state: bool, loop: bool) -> Graph:
    g = Graph("recurrent_layer")
    I, H = layer.input_size, layer.hidden_size
    LD = layer.num_layers * (2 if layer.bidirectional else 1)
    bf = layer.batch_first
    x = g.input("x", FLOAT, ["B", "T", I] if bf else ["T", "B", I])
    lengths = g.input("lengths", INT64, ["B"]) if with_lengths else None
    lstm = layer_mode(layer) == "lstm"
    names = ("h0", "c0") if lstm else ("h0",)
    state = tuple(g.input(n, FLOAT, [LD, "B", H]) for n in names) if with_state else None
    xt = g.op("Transpose", [x], perm=[1, 0, 2]) if bf else x
    y, finals = emit_layer(g, layer, xt, state, lengths, loop)
    if bf:
        y = g.op("Transpose", [y], perm=[1, 0, 2])
    D = 2 if layer.bidirectional else 1
    g.output("y", y, FLOAT, ["B", "T", D * H] if bf else ["T", "B", D * H])
    for n, v in zip(("h_n", "c_n"), finals, strict=False):
        g.output(n, v, FLOAT, [LD, "B", H])
    return g
