"""Export graphs for seqlab's recurrent models (eval mode: dropout is the identity).

=====================  ===============================================  ==========================
model                  graph inputs                                     graph outputs
=====================  ===============================================  ==========================
SequenceClassifier     ``inputs`` (B, T) int64 ids or (B, T, I) float,  ``logits`` (B, C)
                       ``lengths`` (B,) int64
LanguageModel          ``tokens`` (B, T) int64, ``h0`` [``c0``]         ``logits`` (B, T, V),
                       (L, B, H) — T = 1 is the generation step          ``h_n`` [``c_n``]
Seq2Seq encoder        ``src`` (B, S) int64, ``src_lengths`` (B,)       ``h0`` [``c0``], ``memory``
                                                                        (B, S, M), ``keys``,
                                                                        ``mask`` (B, S) bool,
                                                                        ``feed`` (B, H_d)
Seq2Seq decoder step   ``token`` (B,) int64, ``h`` [``c``], ``memory``,  ``logits`` (B, V),
                       ``keys``, ``mask``, ``feed``                     ``h_out`` [``c_out``],
                                                                        ``feed_out``
=====================  ===============================================  ==========================
"""

from __future__ import annotations

from torch import nn

from seqlab.export.graph import BOOL, FLOAT, INT64, Graph
from seqlab.export.recurrent import Weights, cell_step, emit_layer
from seqlab.models.classifier import SequenceClassifier
from seqlab.models.encoders import CellStack, RecurrentEncoder
from seqlab.models.language_model import LanguageModel
from seqlab.models.seq2seq import Seq2Seq


def _rnn(enc: nn.Module) -> nn.Module:
    """The multi-layer recurrent layer inside a :class:`RecurrentEncoder`."""
    if not isinstance(enc, RecurrentEncoder):
        raise ValueError(
            f"encoder: only recurrent encoders export to ONNX, got {type(enc).__name__} "
            "(cell='transformer' is not supported)"
        )
    return enc.rnn


def encode_batch_first(
    g: Graph, enc: nn.Module, x: str, lengths: str | None, state, loop: bool
) -> tuple[str, tuple[str, ...]]:
    """RecurrentEncoder on batch-first ``x`` (B, T, I): ``(out (B, T, D·H), final states)``."""
    y, finals = emit_layer(
        g, _rnn(enc), g.op("Transpose", [x], perm=[1, 0, 2]), state, lengths, loop
    )
    return g.op("Transpose", [y], perm=[1, 0, 2]), finals


def top_hidden(g: Graph, h: str, directions: int, hidden: int) -> str:
    """The last layer's h (rows −D..), directions concatenated: (B, D·H)."""
    last = g.op("Slice", [h, g.ints(-directions), g.ints(2**62), g.ints(0)])
    return g.op("Reshape", [g.op("Transpose", [last], perm=[1, 0, 2]), g.ints(0, -1)])


def valid_mask(g: Graph, lengths: str, like_bt: str) -> str:
    """Bool (B, T), True where t < lengths[b]; ``like_bt`` is any (B, T, ...) value."""
    T = g.op("Squeeze", [g.dim(like_bt, 1)])
    steps = g.op("Range", [g.const(0, "i"), T, g.const(1, "i")])
    return g.op("Less", [g.unsqueeze(steps, 0), g.unsqueeze(lengths, 1)])


def masked_softmax(g: Graph, scores: str, mask: str) -> str:
    """softmax over the last axis with masked-out entries exactly 0 (as seqlab's)."""
    neg = g.const(float("-inf"))
    return g.op("Softmax", [g.op("Where", [mask, scores, neg])], axis=-1)


# ---------------------------------------------------------------- classifier
def classifier_body(
    g: Graph, model: SequenceClassifier, inputs: str, lengths: str | None, loop: bool
) -> str:
    """Logits (B, C) of a SequenceClassifier/SequenceRegressor."""
    c = model.config
    x = g.op("Gather", [g.const(model.embed.weight), inputs]) if c.vocab_size else inputs
    enc = model.encoder
    out, finals = encode_batch_first(g, enc, x, lengths, None, loop)
    if c.pooling == "last":
        r = top_hidden(g, finals[0], enc.directions, enc.hidden_size)
    else:
        valid = valid_mask(g, lengths, x) if lengths is not None else None
        if c.pooling == "mean":
            total = g.op("ReduceSum", [out, g.ints(1)], keepdims=0)
            if valid is None:
                n = g.op("Cast", [g.dim(out, 1)], to=FLOAT)
            else:
                n = g.op(
                    "Cast",
                    [g.op("ReduceSum", [g.op("Cast", [valid], to=INT64), g.ints(1)])],
                    to=FLOAT,
                )
            r = g.op("Div", [total, n])
        elif c.pooling == "max":
            if valid is not None:
                out = g.op("Where", [g.unsqueeze(valid, 2), out, g.const(float("-inf"))])
            r = g.op("ReduceMax", [out], axes=[1], keepdims=0)
        else:  # attention
            scores = g.squeeze(
                g.linear(g.op("Tanh", [g.linear(out, model.attn_w)]), model.attn_v), 2
            )
            if valid is None:
                a = g.op("Softmax", [scores], axis=-1)
            else:
                a = masked_softmax(g, scores, valid)
            r = g.op("ReduceSum", [g.op("Mul", [g.unsqueeze(a, 2), out]), g.ints(1)], keepdims=0)
    logits = g.linear(r, model.head)
    if model.ngrams is not None:
        logits = g.op("Add", [logits, _ngram_scores(g, model, inputs, lengths)])
    return logits


def _ngram_scores(g: Graph, model: SequenceClassifier, ids: str, lengths: str | None) -> str:
    """Σ over valid unigrams and hashed bigrams of U[key] (see SequenceClassifier)."""
    V, K = model.config.vocab_size, model.config.ngram_buckets
    T = g.dim(ids, 1)
    prev = g.op("Slice", [ids, g.ints(0), g.op("Sub", [T, g.ints(1)]), g.ints(1)])
    nxt = g.op("Slice", [ids, g.ints(1), T, g.ints(1)])
    h = g.op("Add", [g.op("Mul", [prev, g.const(1_000_003, "i")]), nxt])
    pairs = g.op("Add", [g.op("Mod", [h, g.const(K, "i")]), g.const(V, "i")])
    keys = g.op("Concat", [ids, pairs], axis=1)
    scores = g.op("Gather", [g.const(model.ngrams.weight), keys])  # (B, 2T-1, C)
    if lengths is not None:
        valid = g.op("Cast", [valid_mask(g, lengths, ids)], to=FLOAT)
        m = g.op("Concat", [valid, g.op("Slice", [valid, g.ints(1), T, g.ints(1)])], axis=1)
        scores = g.op("Mul", [scores, g.unsqueeze(m, 2)])
    return g.op("ReduceSum", [scores, g.ints(1)], keepdims=0)


def classifier_graph(model: SequenceClassifier, loop: bool = False) -> Graph:
    c = model.config
    g = Graph("sequence_classifier")
    if c.vocab_size:
        inputs = g.input("inputs", INT64, ["B", "T"])
    else:
        inputs = g.input("inputs", FLOAT, ["B", "T", c.input_size])
    lengths = g.input("lengths", INT64, ["B"])
    g.output(
        "logits", classifier_body(g, model, inputs, lengths, loop), FLOAT, ["B", c.num_classes]
    )
    return g


# ---------------------------------------------------------------- language model
def lm_graph(model: LanguageModel, loop: bool = False) -> Graph:
    """tokens (B, T) + state → logits (B, T, V) + state; the same graph is the step (T = 1)."""
    c = model.config
    g = Graph("language_model")
    tokens = g.input("tokens", INT64, ["B", "T"])
    names = ("h0", "c0") if c.cell == "lstm" else ("h0",)
    state = tuple(g.input(n, FLOAT, [c.num_layers, "B", c.hidden_size]) for n in names)
    x = g.op("Gather", [g.const(model.embed.weight), tokens])
    out, finals = encode_batch_first(g, model.rnn, x, None, state, loop)
    g.output("logits", g.linear(out, model.out), FLOAT, ["B", "T", c.vocab_size])
    for n, v in zip(("h_n", "c_n"), finals, strict=False):
        g.output(n, v, FLOAT, [c.num_layers, "B", c.hidden_size])
    return g


# ---------------------------------------------------------------- seq2seq
def _merge_directions(g: Graph, s: str, D: int) -> str:
    """(Le·D, B, He) → (Le, B, D·He), as Seq2Seq._bridge's merge."""
    if D == 1:
        return s
    shape = g.op("Concat", [g.ints(-1, D), g.dim(s, 1), g.dim(s, 2)], axis=0)
    shaped = g.op("Reshape", [s, shape])
    return g.op("Reshape", [g.op("Transpose", [shaped], perm=[0, 2, 1, 3]), g.ints(0, 0, -1)])


def seq2seq_encoder_graph(model: Seq2Seq, loop: bool = False) -> Graph:
    c = model.config
    g = Graph("seq2seq_encoder")
    src = g.input("src", INT64, ["B", "S"])
    lengths = g.input("src_lengths", INT64, ["B"])
    x = src
    if c.reverse_source:
        x = g.op("ReverseSequence", [src, lengths], batch_axis=0, time_axis=1)
    e = g.op("Gather", [g.const(model.src_embed.weight), x])
    memory, final = encode_batch_first(g, model.encoder, e, lengths, None, loop)
    if c.reverse_source:
        memory = g.op("ReverseSequence", [memory, lengths], batch_axis=0, time_axis=1)
    mask = valid_mask(g, lengths, src)
    keys = memory
    attn = model.attention
    if attn is not None and attn.kind == "additive":
        keys = g.linear(memory, attn.w_m)
    elif attn is not None and attn.kind == "general":
        keys = g.linear(memory, attn.w)
    Hd, L, D = model.dec_hidden, c.decoder_layers, model.encoder.directions
    lstm_dec = c.decoder_cell == "lstm"
    B = g.dim(src, 0)
    if model.bridge == "none":
        h = g.zeros([g.ints(L), B, g.ints(Hd)])
        cc = h
    else:
        enc_h = _merge_directions(g, final[0], D)
        enc_c = _merge_directions(g, final[1], D) if len(final) == 2 else None
        shape = g.op("Concat", [g.ints(L), B, g.ints(Hd)], axis=0)
        if model.bridge == "identity":
            h = enc_h
            cc = enc_c if enc_c is not None else g.zeros([g.ints(L), B, g.ints(Hd)])
        else:
            top = g.slice(enc_h, 0, -1, 2**62)
            h = g.op("Expand", [g.op("Tanh", [g.linear(top, model.bridge_h)]), shape])
            if enc_c is not None and lstm_dec:
                cc = g.op("Expand", [g.linear(g.slice(enc_c, 0, -1, 2**62), model.bridge_c), shape])
            else:
                cc = g.zeros([g.ints(L), B, g.ints(Hd)])
    g.output("h0", h, FLOAT, [L, "B", Hd])
    if lstm_dec:
        g.output("c0", cc, FLOAT, [L, "B", Hd])
    M = model.memory_size
    g.output("memory", memory, FLOAT, ["B", "S", M])
    g.output("keys", keys, FLOAT, ["B", "S", None])
    g.output("mask", mask, BOOL, ["B", "S"])
    g.output("feed", g.zeros([B, g.ints(Hd)]), FLOAT, ["B", Hd])
    return g


def _attend(g: Graph, model: Seq2Seq, query: str, keys: str, memory: str, mask: str) -> str:
    """Context (B, M) of one query (B, Q) (Seq2Seq's Attention.forward)."""
    attn = model.attention
    if attn.kind == "additive":
        q = g.unsqueeze(g.linear(query, attn.w_q), 1)
        e = g.squeeze(g.linear(g.op("Tanh", [g.op("Add", [keys, q])]), attn.v), 2)
    else:
        e = g.squeeze(g.op("MatMul", [keys, g.unsqueeze(query, 2)]), 2)
    a = masked_softmax(g, e, mask)
    return g.squeeze(g.op("MatMul", [g.unsqueeze(a, 1), memory]), 1)


def _stack_step(g: Graph, stack: CellStack, x: str, h: str, c: str | None):
    """CellStack.step: per layer, project the input and run one cell step."""
    hs, cs = [], []
    for k, cell in enumerate(stack.cells):
        w = Weights(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
        xw = g.matmul_t(x, w.w_ih, w.bias("ih"))
        hk = g.squeeze(g.slice(h, 0, k, k + 1), 0)
        ck = g.squeeze(g.slice(c, 0, k, k + 1), 0) if c is not None else None
        x, c_new = cell_step(g, cell.mode, xw, hk, ck, w)
        hs.append(g.unsqueeze(x, 0))
        if c_new is not None:
            cs.append(g.unsqueeze(c_new, 0))
    cat = lambda parts: parts[0] if len(parts) == 1 else g.op("Concat", parts, axis=0)  # noqa: E731
    return x, cat(hs), (cat(cs) if cs else None)


def seq2seq_decoder_graph(model: Seq2Seq, loop: bool = False) -> Graph:
    c = model.config
    g = Graph("seq2seq_decoder_step")
    Hd, L, M = model.dec_hidden, c.decoder_layers, model.memory_size
    lstm = c.decoder_cell == "lstm"
    token = g.input("token", INT64, ["B"])
    h = g.input("h", FLOAT, [L, "B", Hd])
    cc = g.input("c", FLOAT, [L, "B", Hd]) if lstm else None
    memory = g.input("memory", FLOAT, ["B", "S", M])
    keys = g.input("keys", FLOAT, ["B", "S", None])
    mask = g.input("mask", BOOL, ["B", "S"])
    feed = g.input("feed", FLOAT, ["B", Hd])
    e = g.op("Gather", [g.const(model.tgt_embed.weight), token])  # (B, E)
    kind = c.attention
    if not c.input_feeding:
        state = (h, cc) if lstm else (h,)
        y, finals = emit_layer(g, _rnn(model.decoder), g.unsqueeze(e, 0), state, None, loop)
        y = g.squeeze(y, 0)
        h_out, c_out = finals[0], (finals[1] if lstm else None)
        o = y
        if model.attention is not None:
            ctx = _attend(g, model, y, keys, memory, mask)
            o = g.op("Tanh", [g.linear(g.op("Concat", [y, ctx], axis=-1), model.combine)])
    elif kind == "none":
        o, h_out, c_out = _stack_step(g, model.decoder, e, h, cc)
    elif kind == "additive":
        top = g.squeeze(g.slice(h, 0, -1, 2**62), 0)
        ctx = _attend(g, model, top, keys, memory, mask)
        y, h_out, c_out = _stack_step(g, model.decoder, g.op("Concat", [e, ctx], axis=-1), h, cc)
        o = g.op("Tanh", [g.linear(g.op("Concat", [y, ctx], axis=-1), model.combine)])
    else:
        y, h_out, c_out = _stack_step(g, model.decoder, g.op("Concat", [e, feed], axis=-1), h, cc)
        ctx = _attend(g, model, y, keys, memory, mask)
        o = g.op("Tanh", [g.linear(g.op("Concat", [y, ctx], axis=-1), model.combine)])
    g.output("logits", g.linear(o, model.out), FLOAT, ["B", c.tgt_vocab])
    g.output("h_out", h_out, FLOAT, [L, "B", Hd])
    if lstm:
        g.output("c_out", c_out, FLOAT, [L, "B", Hd])
    g.output("feed_out", o if c.input_feeding else feed, FLOAT, ["B", Hd])
    return g
