"""Keras 3 recurrent layers ⇄ seqlab layers, with equal outputs.

Keras (any backend) keeps, per cell, ``kernel`` (I, G·H), ``recurrent_kernel`` (H, G·H) and
``bias``; seqlab keeps torch.nn's ``weight_ih`` (G·H, I), ``weight_hh`` (G·H, H), ``bias_ih``
and ``bias_hh``. So ``weight_ih = kernelᵀ`` and ``weight_hh = recurrent_kernelᵀ``, with the
row blocks in each library's gate order:

==========  ================  ==========  =============================================
Keras       gate order        seqlab      biases
==========  ================  ==========  =============================================
SimpleRNN   h                 RNN         ``bias`` = b_ih + b_hh (Keras has one)
LSTM        i, f, c, o        LSTM        same order (c = g); ``bias`` = b_ih + b_hh
GRU         z, r, h           GRU         r, z, n. ``reset_after=True``: ``bias`` (2, 3H) =
                                          [b_ih; b_hh]. ``reset_after=False`` (Cho):
                                          ``bias`` (3H,) = b_ih + b_hh, seqlab's
                                          ``GRU(reset_after=False)``
==========  ================  ==========  =============================================

The equations are then the same: Keras's GRU ``h = z ⊙ h₋₁ + (1 − z) ⊙ ĥ`` is seqlab's, and
``reset_after=False`` scales h₋₁ by r before the candidate's recurrent product in both.
``Bidirectional`` (``merge_mode="concat"``) is a seqlab layer with ``bidirectional=True``
(Keras's backward layer reads the sequence reversed and its outputs are flipped back, as
seqlab's). A ``Sequential`` of recurrent layers is one multi-layer seqlab layer when the
layers agree (kind, units, direction, bias), else a :class:`seqlab.Stacked` of layers.

Converted seqlab layers are ``batch_first=True`` (Keras's layout). A Keras layer with
``return_sequences=False`` returns seqlab's ``outputs[:, -1]`` (unidirectional) or the top
layer's final states concatenated (bidirectional). Keras is an optional dependency:
``pip install 'seqlab[keras]'``; use any backend (``KERAS_BACKEND=torch`` needs no other
framework).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seqlab.layers import GRU, LSTM, RNN, RecurrentLayer
from seqlab.wrappers import Stacked

__all__ = ["from_keras", "to_keras"]

_GRU_PERM = [1, 0, 2]  # Keras z, r, h <-> seqlab r, z, n (its own inverse)


def _keras():
    try:
        import keras
    except ImportError as err:
        raise ImportError(
            "seqlab.convert needs Keras 3: pip install 'seqlab[keras]' (keras==3.15.1); "
            "KERAS_BACKEND=torch needs no other framework"
        ) from err
    return keras


def _blocks(a: np.ndarray, gates: int, perm: list[int] | None, axis: int) -> np.ndarray:
    if perm is None:
        return a
    parts = np.split(a, gates, axis=axis)
    return np.concatenate([parts[k] for k in perm], axis=axis)


def _act_name(fn: Any) -> str:
    return getattr(fn, "__name__", str(fn))


# ---------------------------------------------------------------- Keras → seqlab
def _cell_spec(layer) -> dict[str, Any]:
    """Kind and options of one Keras SimpleRNN/LSTM/GRU, with clear errors for the rest."""
    keras = _keras()
    kind = type(layer).__name__
    if not isinstance(layer, keras.layers.SimpleRNN | keras.layers.LSTM | keras.layers.GRU):
        raise TypeError(
            f"layer: expected a Keras SimpleRNN, LSTM, GRU, Bidirectional or a Sequential of "
            f"them, got {kind} ({layer.name!r})"
        )
    act = _act_name(layer.activation)
    spec: dict[str, Any] = {"kind": kind, "units": layer.units, "bias": layer.use_bias}
    if kind == "SimpleRNN":
        if act not in ("tanh", "relu"):
            raise ValueError(f"{layer.name}: activation: expected tanh or relu, got {act}")
        spec["nonlinearity"] = act
    else:
        rec = _act_name(layer.recurrent_activation)
        if act != "tanh" or rec != "sigmoid":
            raise ValueError(
                f"{layer.name}: expected activation='tanh', recurrent_activation='sigmoid' "
                f"(seqlab's cells), got {act!r}, {rec!r}"
            )
    if kind == "GRU":
        spec["reset_after"] = bool(layer.reset_after)
    return spec


def _to_seqlab_params(spec: dict[str, Any], weights: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """Keras [kernel, recurrent_kernel, (bias)] → seqlab w_ih, w_hh, b_ih, b_hh."""
    kind = spec["kind"]
    gates = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[kind]
    perm = _GRU_PERM if kind == "GRU" else None
    kernel, recurrent = weights[0], weights[1]
    out = {
        "weight_ih": _blocks(kernel, gates, perm, 1).T,
        "weight_hh": _blocks(recurrent, gates, perm, 1).T,
    }
    if spec["bias"]:
        b = weights[2]
        if kind == "GRU" and spec["reset_after"]:
            out["bias_ih"] = _blocks(b[0], gates, perm, 0)
            out["bias_hh"] = _blocks(b[1], gates, perm, 0)
        else:
            out["bias_ih"] = _blocks(b, gates, perm, 0)
            out["bias_hh"] = np.zeros_like(b)
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in out.items()}


def _unwrap(layer) -> tuple[list, bool]:
    """([forward cell layer, (backward)], bidirectional) of a Keras RNN or Bidirectional."""
    keras = _keras()
    if isinstance(layer, keras.layers.Bidirectional):
        if layer.merge_mode != "concat":
            raise ValueError(
                f"{layer.name}: merge_mode: expected 'concat', got {layer.merge_mode!r}"
            )
        return [layer.forward_layer, layer.backward_layer], True
    spec = _cell_spec(layer)  # raises for non-recurrent layers
    if layer.go_backwards:
        raise ValueError(
            f"{layer.name}: go_backwards=True on its own (outside Bidirectional) is not "
            "supported; reverse the input instead"
        )
    del spec
    return [layer], False


def _new_layer(spec: dict[str, Any], input_size: int, layers: int, bidirectional: bool):
    common = dict(
        num_layers=layers, bias=spec["bias"], batch_first=True, bidirectional=bidirectional
    )
    H = spec["units"]
    if spec["kind"] == "SimpleRNN":
        return RNN(input_size, H, nonlinearity=spec["nonlinearity"], **common)
    if spec["kind"] == "LSTM":
        return LSTM(input_size, H, **common)
    return GRU(input_size, H, reset_after=spec["reset_after"], **common)


def _input_size(layer) -> int:
    cell = layer.forward_layer.cell if hasattr(layer, "forward_layer") else layer.cell
    if not cell.built:
        raise ValueError(f"{layer.name}: the Keras layer is not built; call it on an input first")
    return int(cell.kernel.shape[0])


def _convert_group(group: list) -> RecurrentLayer:
    """Consecutive Keras layers that make one multi-layer seqlab layer."""
    cells, bidirectional = _unwrap(group[0])
    spec = _cell_spec(cells[0])
    module = _new_layer(spec, _input_size(group[0]), len(group), bidirectional)
    params = {}
    for k, layer in enumerate(group):
        for d, cell_layer in enumerate(_unwrap(layer)[0]):
            suffix = f"_l{k}" + ("_reverse" if d else "")
            for name, t in _to_seqlab_params(spec, cell_layer.get_weights()).items():
                params[name + suffix] = t
    module.load_state_dict(params, strict=True)
    return module


def _signature(layer) -> tuple:
    cells, bidirectional = _unwrap(layer)
    spec = _cell_spec(cells[0])
    return (*sorted(spec.items()), bidirectional)


def from_keras(layer_or_file: Any, *, template: Any = None) -> nn.Module:
    """A seqlab module with the same outputs as a Keras recurrent layer or model.

    ``layer_or_file``: a built Keras ``SimpleRNN``/``LSTM``/``GRU``/``Bidirectional``, a
    ``Sequential`` whose layers are those (``InputLayer`` aside),
    a ``.keras`` file, or a ``.weights.h5`` file together with ``template``, the Keras model
    it was saved from (a weights file holds no architecture). Returns a batch-first
    ``seqlab.RNN``/``LSTM``/``GRU`` (multi-layer for a uniform stack) or a
    :class:`seqlab.Stacked` of them.
    """
    keras = _keras()
    obj = layer_or_file
    if isinstance(obj, str | Path):
        path = Path(obj)
        if not path.is_file():
            raise FileNotFoundError(f"layer_or_file: no such file {path}")
        if path.name.endswith(".weights.h5"):
            if template is None:
                raise ValueError(
                    f"{path.name}: a .weights.h5 file holds no architecture; pass "
                    "template=<the Keras model it was saved from>"
                )
            template.load_weights(str(path))
            obj = template
        elif path.suffix == ".keras":
            obj = keras.saving.load_model(str(path), compile=False)
        else:
            raise ValueError(f"layer_or_file: expected a .keras or .weights.h5 file, got {path}")
    if isinstance(obj, keras.Model) and not isinstance(obj, keras.Sequential):
        raise TypeError(
            f"{obj.name}: only Sequential models convert (a chain of recurrent layers); for a "
            "functional model convert its recurrent layers one by one (model.get_layer(name))"
        )
    if isinstance(obj, keras.Sequential):
        layers = [lay for lay in obj.layers if not isinstance(lay, keras.layers.InputLayer)]
        for lay in layers:
            if isinstance(lay, keras.layers.Masking):
                raise ValueError(
                    f"{lay.name}: Masking has no seqlab layer; drop it and pass lengths= to the "
                    "converted layer (padding at the end: seqlab carries the state over padded "
                    "steps and outputs 0 there)"
                )
        if not layers:
            raise ValueError(f"{obj.name}: no recurrent layers found")
    elif isinstance(obj, keras.layers.Layer):
        layers = [obj]
    else:
        raise TypeError(f"layer_or_file: expected a Keras layer, model or file path, got {obj!r}")
    signatures = [_signature(lay) for lay in layers]
    if all(s == signatures[0] for s in signatures):
        return _convert_group(layers)
    return Stacked([_convert_group([lay]) for lay in layers])


# ---------------------------------------------------------------- seqlab → Keras
def _keras_weights(layer: RecurrentLayer, suffix: str) -> list[np.ndarray]:
    mode = layer.mode
    gates = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3, "gru_reset_before": 3}[mode]
    perm = _GRU_PERM if mode.startswith("gru") else None
    w_ih, w_hh, b_ih, b_hh = (None if t is None else t.detach().cpu().numpy()
                              for t in layer.weights(suffix))  # fmt: skip
    out = [_blocks(w_ih.T, gates, perm, 1), _blocks(w_hh.T, gates, perm, 1)]
    if b_ih is not None:
        if mode == "gru":
            out.append(np.stack([_blocks(b_ih, gates, perm, 0), _blocks(b_hh, gates, perm, 0)]))
        else:
            out.append(_blocks(b_ih + b_hh, gates, perm, 0))
    return out


def _keras_layer(keras, layer: RecurrentLayer, go_backwards: bool = False):
    opts = dict(units=layer.hidden_size, use_bias=layer.bias, return_sequences=True,
                go_backwards=go_backwards)  # fmt: skip
    if layer.mode.startswith("rnn"):
        return keras.layers.SimpleRNN(activation=layer.mode[4:], **opts)
    if layer.mode == "lstm":
        return keras.layers.LSTM(**opts)
    return keras.layers.GRU(reset_after=layer.mode == "gru", **opts)


def to_keras(module: nn.Module):
    """A Keras layer (one layer) or ``Sequential`` (a stack) with ``module``'s outputs.

    ``module``: a ``seqlab.RNN``/``LSTM``/``GRU`` (load a torch.nn layer's state_dict into
    one first) or a :class:`seqlab.Stacked` of them. Keras layers return full sequences
    (``return_sequences=True``), batch first; bidirectional layers become
    ``Bidirectional(..., merge_mode="concat")``.
    """
    keras = _keras()
    if isinstance(module, Stacked):
        parts = list(module.layers)
    elif isinstance(module, RecurrentLayer):
        parts = [module]
    else:
        raise TypeError(
            f"module: expected seqlab.RNN/LSTM/GRU or seqlab.Stacked, got {type(module).__name__}"
        )
    out_layers, size = [], parts[0].input_size
    for part in parts:
        if not isinstance(part, RecurrentLayer):
            raise TypeError(
                f"module: Stacked entries must be RNN/LSTM/GRU, got {type(part).__name__}"
            )
        for k in range(part.num_layers):
            fwd = _keras_layer(keras, part)
            lay = fwd
            if part.bidirectional:
                lay = keras.layers.Bidirectional(
                    fwd, backward_layer=_keras_layer(keras, part, True)
                )
            lay(np.zeros((1, 1, size), np.float32))  # build
            cells = [lay.forward_layer, lay.backward_layer] if part.bidirectional else [lay]
            for d, cell in enumerate(cells):
                cell.set_weights(_keras_weights(part, f"_l{k}" + ("_reverse" if d else "")))
            out_layers.append(lay)
            size = part.hidden_size * (2 if part.bidirectional else 1)
    if len(out_layers) == 1:
        return out_layers[0]
    return keras.Sequential([keras.Input((None, parts[0].input_size)), *out_layers])
