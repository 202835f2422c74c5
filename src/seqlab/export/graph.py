"""A small ONNX graph builder on top of ``onnx.helper``: unique names, constants, nodes.

Why by hand rather than ``torch.onnx``: seqlab's layers run through their own engine (a C++
extension or a custom ``autograd.Function``), which torch's exporters do not trace into
ONNX's recurrent operators, and mapping gate orders, ``linear_before_reset`` and
``sequence_lens`` is exactly the part we want explicit and tested. Every value is a string
name; :meth:`Graph.op` adds a node and returns its output name(s).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import count

import numpy as np
import torch
from torch import Tensor

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "seqlab.export needs the 'onnx' package: pip install 'seqlab[onnx]' "
        "(onnx==1.23.2, onnxruntime==1.31.1)"
    ) from err

OPSET = 17
FLOAT, INT64, INT32, BOOL = (
    TensorProto.FLOAT,
    TensorProto.INT64,
    TensorProto.INT32,
    TensorProto.BOOL,
)
Dim = int | str | None


class Graph:
    """Nodes, initializers and graph inputs/outputs of one ONNX graph (or Scan body).

    A body graph shares its parent's name counter, so its names never shadow outer ones;
    it may read the parent's values (e.g. weights) by name.
    """

    def __init__(self, name: str = "seqlab", parent: Graph | None = None) -> None:
        self.name = name
        self._ids = parent._ids if parent is not None else count()
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._consts: dict[tuple, str] = {}

    def fresh(self, hint: str = "v") -> str:
        return f"{hint}_{next(self._ids)}"

    # ------------------------------------------------------------------ values
    def const(self, value, hint: str = "c", dtype=np.float32) -> str:
        """An initializer from a tensor/array/number (float32 unless ``dtype`` or int)."""
        if isinstance(value, Tensor):
            value = value.detach().cpu().numpy()
        arr = np.asarray(value)
        if arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        elif arr.dtype.kind == "b":
            arr = arr.astype(np.bool_)
        else:
            arr = arr.astype(dtype)
        small = arr.size <= 16
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if small else None
        if key is not None and key in self._consts:
            return self._consts[key]
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        if key is not None:
            self._consts[key] = name
        return name

    def ints(self, *values: int) -> str:
        """A 1-D int64 constant (shapes, axes, slice bounds)."""
        return self.const(np.array(values, dtype=np.int64), "i")

    def op(self, op_type: str, inputs: Sequence[str], n_out: int = 1, **attrs):
        """Add a node; returns its output name (or a list of ``n_out`` names)."""
        outs = [self.fresh(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def input(self, name: str, elem_type: int, shape: Sequence[Dim]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def output(self, name: str, value: str, elem_type: int, shape: Sequence[Dim]) -> None:
        """Expose ``value`` as graph output ``name`` (through an Identity node); ``shape``
        entries are sizes, symbolic names or None (unknown)."""
        self.nodes.append(helper.make_node("Identity", [value], [name]))
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    # ------------------------------------------------------------ shorthands
    def matmul_t(self, x: str, weight: Tensor, bias: Tensor | None = None) -> str:
        """``x @ weightᵀ (+ bias)`` over the last axis (weight as (out, in), like nn.Linear)."""
        y = self.op("MatMul", [x, self.const(weight.detach().t().contiguous(), "w")])
        return y if bias is None else self.op("Add", [y, self.const(bias, "b")])

    def linear(self, x: str, module: torch.nn.Linear) -> str:
        return self.matmul_t(x, module.weight, module.bias)

    def slice(self, x: str, axis: int, start: int, end: int) -> str:
        return self.op("Slice", [x, self.ints(start), self.ints(end), self.ints(axis)])

    def split(self, x: str, axis: int, parts: int, size: int) -> list[str]:
        return self.op("Split", [x, self.ints(*([size] * parts))], n_out=parts, axis=axis)

    def dim(self, x: str, axis: int) -> str:
        """The size of ``x`` along ``axis`` as a 1-element int64 tensor."""
        return self.op("Shape", [x], start=axis, end=axis + 1)

    def zeros(self, shape_parts: Sequence[str]) -> str:
        """float32 zeros whose shape is the concatenation of 1-D int64 ``shape_parts``."""
        shape = self.op("Concat", list(shape_parts), axis=0)
        zero = helper.make_tensor("zero", FLOAT, [1], [0.0])
        return self.op("ConstantOfShape", [shape], value=zero)

    def unsqueeze(self, x: str, *axes: int) -> str:
        return self.op("Unsqueeze", [x, self.ints(*axes)])

    def squeeze(self, x: str, *axes: int) -> str:
        return self.op("Squeeze", [x, self.ints(*axes)])

    def graph(self) -> onnx.GraphProto:
        return helper.make_graph(
            self.nodes, self.name, self.inputs, self.outputs, self.initializers
        )

    def model(self, doc: str = "") -> onnx.ModelProto:
        m = helper.make_model(
            self.graph(),
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="seqlab",
            doc_string=doc,
        )
        m.ir_version = 8  # opset 17's IR; read by onnxruntime >= 1.14
        onnx.checker.check_model(m, full_check=True)
        return m
