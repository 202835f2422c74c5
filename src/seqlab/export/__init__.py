"""Export seqlab models to ONNX, checked against onnxruntime.

``to_onnx(model, example_input, path)`` builds the graph with ``onnx.helper`` (see
:mod:`seqlab.export.graph` for why not ``torch.onnx``), runs it with onnxruntime on
``example_input``, compares every output with the model's own (eval mode, no grad) and only
then writes the file (atomically). What each model becomes is listed in
:mod:`seqlab.export.models` and :mod:`seqlab.export.layers`; the classic layers use ONNX's
own RNN/LSTM/GRU operators unless ``loop=True`` asks for the ``Scan`` lowering.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from seqlab.export.graph import OPSET, Graph, helper
from seqlab.export.layers import layer_graph
from seqlab.export.models import (
    classifier_body,
    classifier_graph,
    lm_graph,
    seq2seq_decoder_graph,
    seq2seq_encoder_graph,
)
from seqlab.export.wrappers import wrapper_graph
from seqlab.functional.scan import tree_leaves
from seqlab.layers import RecurrentLayer
from seqlab.models.classifier import SequenceClassifier
from seqlab.models.language_model import LanguageModel
from seqlab.models.seq2seq import Seq2Seq
from seqlab.wrappers import Bidirectional, Recurrent, Stacked

__all__ = ["ExportMismatchError", "OPSET", "to_onnx", "session", "seq2seq_paths"]


class ExportMismatchError(RuntimeError):
    """onnxruntime's output differs from the model's beyond the tolerance."""


def session(model_or_path: Any):
    """An onnxruntime CPU session for a ModelProto, bytes or a file path."""
    try:
        import onnxruntime as ort
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "checking the export needs onnxruntime: pip install 'seqlab[onnx]' or pass check=False"
        ) from err
    if hasattr(model_or_path, "SerializeToString"):
        model_or_path = model_or_path.SerializeToString()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(
        model_or_path if isinstance(model_or_path, bytes) else str(model_or_path),
        opts,
        providers=["CPUExecutionProvider"],
    )


def seq2seq_paths(path: str | Path) -> tuple[Path, Path]:
    """Where a Seq2Seq export goes: ``<stem>.encoder.onnx`` and ``<stem>.decoder.onnx``."""
    p = Path(path)
    stem = p.name[: -len(".onnx")] if p.name.endswith(".onnx") else p.name
    return p.with_name(stem + ".encoder.onnx"), p.with_name(stem + ".decoder.onnx")


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _compare(name: str, got: np.ndarray, want: Tensor, rtol: float, atol: float) -> None:
    want = _np(want)
    if got.shape != want.shape:
        raise ExportMismatchError(
            f"{name}: onnxruntime gave shape {got.shape}, the model {want.shape}"
        )
    if want.dtype == np.bool_:
        ok = bool((got == want).all())
        err = 0.0 if ok else 1.0
    else:
        ok = np.allclose(got, want, rtol=rtol, atol=atol)
        err = float(np.abs(got - want).max()) if got.size else 0.0
    if not ok:
        raise ExportMismatchError(
            f"{name}: onnxruntime differs from the model by up to {err:.3g} "
            f"(rtol={rtol}, atol={atol})"
        )


def _as_args(example_input: Any) -> tuple:
    return tuple(example_input) if isinstance(example_input, tuple | list) else (example_input,)


def _state_tuple(state: Any) -> tuple[Tensor, ...]:
    return (state,) if isinstance(state, Tensor) else tuple(state)


def _finalize(g: Graph, meta: dict[str, str]) -> Any:
    m = g.model(doc="exported by seqlab.export.to_onnx")
    for k, v in meta.items():
        entry = m.metadata_props.add()
        entry.key, entry.value = k, v
    return m


def _write(model_proto, path: Path) -> None:
    """Write atomically: a temporary file in the same folder, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(model_proto.SerializeToString())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_onnx(
    model: nn.Module,
    example_input: Any,
    path: str | Path,
    *,
    loop: bool = False,
    check: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    metadata: dict[str, Any] | None = None,
) -> list[Path]:
    """Export ``model`` to ONNX (opset 17) and return the written path(s).

    ``example_input`` is what ``model``'s forward takes, as a tuple:

    * ``seqlab.RNN/LSTM/GRU`` (or torch.nn's): ``x``, ``(x, state)`` or
      ``(x, state, lengths)``; the graph has a ``lengths``/state input when given.
    * ``seqlab.Recurrent(cell)``, ``Bidirectional``, ``Stacked`` (any cell, see
      :mod:`seqlab.export.wrappers`): ``x`` or ``(x, None, lengths)``; always a Scan.
    * :class:`SequenceClassifier` (and regressors): ``(inputs, lengths)`` or ``inputs``.
    * :class:`LanguageModel`: ``tokens`` or ``(tokens, state)``; the graph always takes and
      returns the state, so ``tokens`` of length 1 is the generation step.
    * :class:`Seq2Seq`: ``(src, src_lengths)``; writes two graphs, the encoder and the
      decoder step (see :func:`seq2seq_paths`).
    * the sunspots task's forecaster: ``x`` (B, W).

    With ``check`` (default) onnxruntime runs the graph on ``example_input`` and every
    output must equal the model's within ``rtol``/``atol`` (else
    :class:`ExportMismatchError` and nothing is written). ``loop=True`` lowers recurrent
    layers to ``Scan`` instead of ONNX's RNN/LSTM/GRU operators. ``metadata`` (JSON-able
    values) is stored in the model's ``metadata_props``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            jobs = _plan(model, _as_args(example_input), loop)
            protos = [
                (p_suffix, _finalize(g, meta), feeds, ref) for p_suffix, g, feeds, ref in jobs
            ]
            if check:
                for _, proto, feeds, ref in protos:
                    sess = session(proto)
                    names = [o.name for o in sess.get_outputs()]
                    got = sess.run(None, {k: _np(v) for k, v in feeds.items()})
                    for name, value in zip(names, got, strict=True):
                        _compare(name, value, ref[name], rtol, atol)  # every output
                    if callable(ref.get("__then__")):
                        ref["__then__"](sess)
    finally:
        model.train(was_training)
    written = []
    targets = seq2seq_paths(path) if isinstance(model, Seq2Seq) else (path,)
    for target, (_, proto, _, _) in zip(targets, protos, strict=True):
        _write(proto, target)
        written.append(target)
    return written


Job = tuple[str, Graph, dict[str, Tensor], dict[str, Any]]


def _plan(model: nn.Module, args: tuple, loop: bool) -> list[Job]:
    """Graphs to build, each with example feeds and the model's reference outputs."""
    if isinstance(model, RecurrentLayer | nn.RNNBase):
        return [_plan_layer(model, args, loop)]
    if isinstance(model, Recurrent | Bidirectional | Stacked):
        return [_plan_wrapper(model, args)]
    if isinstance(model, SequenceClassifier):
        return [_plan_classifier(model, args, loop)]
    if isinstance(model, LanguageModel):
        return [_plan_lm(model, args, loop)]
    if isinstance(model, Seq2Seq):
        return _plan_seq2seq(model, args, loop)
    net = getattr(model, "net", None)
    if isinstance(net, SequenceClassifier) and hasattr(model, "highway"):
        return [_plan_forecaster(model, args, loop)]
    raise TypeError(
        "model: expected seqlab.RNN/LSTM/GRU, Recurrent/Bidirectional/Stacked, "
        "SequenceClassifier, LanguageModel, Seq2Seq or the sunspots forecaster, "
        f"got {type(model).__name__}"
    )


def _plan_layer(layer: nn.Module, args: tuple, loop: bool) -> Job:
    x = args[0]
    state = args[1] if len(args) > 1 else None
    lengths = args[2] if len(args) > 2 else None
    if x.dim() != 3:
        raise ValueError(f"example_input: expected a batched 3-D x, got shape {tuple(x.shape)}")
    g = layer_graph(layer, lengths is not None, state is not None, loop)
    if isinstance(layer, RecurrentLayer):
        y, final = layer(x, state, lengths=lengths)
    else:
        y, final = _torch_layer(layer, x, state, lengths)
    feeds = {"x": x}
    if lengths is not None:
        feeds["lengths"] = lengths.long()
    if state is not None:
        feeds.update(zip(("h0", "c0"), _state_tuple(state), strict=False))
    ref = {"y": y, **dict(zip(("h_n", "c_n"), _state_tuple(final), strict=False))}
    return "", g, feeds, ref


def _plan_wrapper(module: nn.Module, args: tuple) -> Job:
    x = args[0]
    if len(args) > 1 and args[1] is not None:
        raise ValueError(
            "example_input: Recurrent/Bidirectional/Stacked export starts from the cells' "
            "initial_state; pass (x,) or (x, None, lengths)"
        )
    lengths = args[2] if len(args) > 2 else None
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"example_input: expected a 3-D x, got {getattr(x, 'shape', x)!r}")
    y, final = module(x, None, lengths)
    g = wrapper_graph(module, x.shape[-1], lengths is not None)
    feeds = {"x": x, **({"lengths": lengths.long()} if lengths is not None else {})}
    ref = {"y": y, **{f"state_{k}": v for k, v in enumerate(tree_leaves(final))}}
    return "", g, feeds, ref


def _torch_layer(layer: nn.RNNBase, x: Tensor, state: Any, lengths: Tensor | None):
    """torch.nn's layer with seqlab's lengths convention (packing), as the reference."""
    if state is not None and not isinstance(state, Tensor):
        state = tuple(state)
    if lengths is None:
        return layer(x, state)
    rnn = nn.utils.rnn
    packed = rnn.pack_padded_sequence(x, lengths.cpu(), layer.batch_first, enforce_sorted=False)
    out, final = layer(packed, state)
    T = x.shape[1 if layer.batch_first else 0]
    return rnn.pad_packed_sequence(out, layer.batch_first, total_length=T)[0], final


def _plan_classifier(model: SequenceClassifier, args: tuple, loop: bool) -> Job:
    inputs = args[0]
    lengths = args[1] if len(args) > 1 and args[1] is not None else None
    logits = model(inputs, lengths)
    if lengths is None:
        lengths = torch.full((inputs.shape[0],), inputs.shape[1], dtype=torch.long)
    return (
        "",
        classifier_graph(model, loop),
        {"inputs": inputs, "lengths": lengths.long()},
        {"logits": logits},
    )


def _plan_lm(model: LanguageModel, args: tuple, loop: bool) -> Job:
    tokens = args[0]
    state = args[1] if len(args) > 1 and args[1] is not None else model.start(tokens.shape[0])
    logits, final = model(tokens, state)
    feeds = {"tokens": tokens, **dict(zip(("h0", "c0"), _state_tuple(state), strict=False))}
    ref = {"logits": logits, **dict(zip(("h_n", "c_n"), _state_tuple(final), strict=False))}
    return "", lm_graph(model, loop), feeds, ref


def _plan_seq2seq(model: Seq2Seq, args: tuple, loop: bool) -> list[Job]:
    src = args[0]
    lengths = args[1] if len(args) > 1 and args[1] is not None else None
    if lengths is None:
        lengths = torch.full((src.shape[0],), src.shape[1], dtype=torch.long)
    lstm = model.config.decoder_cell == "lstm"
    state = model.start(src, lengths)
    rnn = _state_tuple(state.rnn)
    enc_ref = {
        "h0": rnn[0],
        **({"c0": rnn[1]} if lstm else {}),
        "memory": state.memory,
        "keys": state.keys,
        "mask": state.mask,
        "feed": state.feed,
    }
    # The decoder step is checked over a few greedy steps from the encoder's state.
    steps: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []
    tok = torch.full((src.shape[0],), model.config.bos_id, dtype=torch.long)
    s = state
    for _ in range(3):
        feeds = {"token": tok, "h": _state_tuple(s.rnn)[0], "memory": s.memory, "keys": s.keys,
                 "mask": s.mask, "feed": s.feed}  # fmt: skip
        if lstm:
            feeds["c"] = s.rnn[1]
        logits, s = model.step(tok, s)
        new = _state_tuple(s.rnn)
        out = {"logits": logits, "h_out": new[0], "feed_out": s.feed}
        if lstm:
            out["c_out"] = new[1]
        steps.append((feeds, out))
        tok = logits.argmax(-1)
    dec_ref: dict[str, Any] = dict(steps[0][1])
    dec_ref["__then__"] = _check_steps(steps[1:])
    return [
        ("encoder", seq2seq_encoder_graph(model, loop), {"src": src, "src_lengths": lengths.long()},
         enc_ref),
        ("decoder", seq2seq_decoder_graph(model, loop), steps[0][0], dec_ref),
    ]  # fmt: skip


def _check_steps(steps) -> Callable:
    def run(sess) -> None:
        names = [o.name for o in sess.get_outputs()]
        for k, (feeds, want) in enumerate(steps, start=2):
            got = sess.run(None, {n: _np(v) for n, v in feeds.items()})
            for name, value in zip(names, got, strict=True):
                _compare(f"decoder step {k} {name}", value, want[name], 1e-4, 1e-5)

    return run


def _plan_forecaster(model: nn.Module, args: tuple, loop: bool) -> Job:
    """The sunspots forecaster: ŷ = head(r) + highway(x) (see seqlab.tasks.sunspots)."""
    x = args[0]
    g = Graph("forecaster")
    W = x.shape[1]
    xi = g.input("x", helper.TensorProto.FLOAT, ["B", W])
    y = g.squeeze(classifier_body(g, model.net, g.unsqueeze(xi, 2), None, loop), 1)
    if model.highway is not None:
        y = g.op("Add", [y, g.squeeze(g.linear(xi, model.highway), 1)])
    g.output("y", y, helper.TensorProto.FLOAT, ["B"])
    return "", g, {"x": x}, {"y": model(x)}
