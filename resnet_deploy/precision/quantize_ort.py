"""INT8 for ONNX Runtime on x86: QDQ with uint8 activations and int8 per-channel weights (U8S8).

ONNX Runtime turns ``DQ -> Conv -> (Relu) -> Q`` into QLinearConv and ``DQ, DQ -> Add -> (Relu) -> Q`` into
QLinearAdd; a Relu before a Q with zero point 0 is dropped (uint8 clamps at 0). Likewise (checked with a
session's optimized-model dump) Mul -> QLinearMul (an SE block's scale, broadcasting), Sigmoid -> QLinearSigmoid,
AveragePool -> QLinearAveragePool (ResNet-D shortcuts), GlobalAveragePool -> QLinearGlobalAveragePool (SE squeeze
and head, after the reduce-mean-to-pool fusion; ReduceMean itself is not quantized). So every input and output
of those ops gets one Q/DQ pair, except a tensor whose only reader is a Relu (the Relu output carries it), and
MaxPool keeps its input's scale so it runs on uint8 directly. A pre-activation BatchNormalization runs float
between its DQ and the Relu's Q. Conv biases become int32 (input scale x weight scale), as QLinearConv requires.
A classifier written as a 1x1 Conv stays float like the Gemm head. (int8 activations, S8S8, ran slower than fp32
on this CPU.)
"""

from __future__ import annotations

import copy

import numpy as np

from .residual_blocks import head_convs
from ..onnx_graph import Graph
from .quantize_common import QuantizedGraph, asymmetric_uint8, finish, insert_qdq, kept_nodes, quantize_conv_weight

QLINEAR_OPS = ("Conv", "Add", "Mul", "Sigmoid", "AveragePool", "GlobalAveragePool", "MaxPool")
ACTIVATION_OPS = (*QLINEAR_OPS, "Relu")


def activation_tensors(model) -> list[str]:
    """Tensors that carry a Q/DQ pair: the activation inputs and the outputs of the ops ONNX Runtime runs in QLinear
    form (and Relu outputs), except those read only by a Relu and the input of a Conv classifier."""
    idx = Graph(model)
    head = head_convs(model)
    consts = set(idx.inits) | {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    out: list[str] = []
    for n in model.graph.node:
        if n.op_type in QLINEAR_OPS and n.name not in head:
            out.extend(t for t in n.input[:2 if n.op_type in ("Add", "Mul") else 1] if t and t not in consts)
        if n.op_type in ACTIVATION_OPS and n.name not in head:
            out.append(n.output[0])
    keep = []
    for t in dict.fromkeys(out):
        readers = idx.consumers_of(t)
        if readers and all(r.op_type == "Relu" for r in readers):
            continue
        keep.append(t)
    return keep


def tensors_to_calibrate(model) -> list[str]:
    return activation_tensors(model)


def quantize(model, ranges: dict[str, tuple[float, float]], exclude: set[str] = frozenset()) -> QuantizedGraph:
    """A copy of the fp32 ``model`` in U8S8 QDQ; Convs named in ``exclude`` read float input and weights."""
    model = copy.deepcopy(model)
    idx = Graph(model)
    tensors = activation_tensors(model)
    chosen, exclude = set(exclude), set(exclude) | head_convs(model)
    ranges = dict(ranges)
    for n in model.graph.node:  # MaxPool output shares its input's range: its Q/DQ then cancels out
        if n.op_type == "MaxPool" and n.input[0] in ranges:
            ranges[n.output[0]] = ranges[n.input[0]]
    scales = {}
    for t in tensors:
        scale, zp = asymmetric_uint8(*ranges[t])
        readers = [r for r in idx.consumers_of(t) if r.name not in exclude]
        if readers:
            insert_qdq(model, t, readers, scale, zp, np.uint8)
            scales[t] = scale
    quantized = []
    for n in list(model.graph.node):
        if n.op_type == "Conv" and n.name not in exclude:
            quantize_conv_weight(model, idx, n, input_scale=scales.get(idx_input(n)))
            quantized.append(n.name)
    finish(model)
    kept = kept_nodes(model, quantized, chosen)
    kept.update({name: "classifier head kept fp32 by policy" for name in head_convs(model)})
    return QuantizedGraph(model, quantized, kept, list(scales))


def idx_input(conv) -> str:
    """The float tensor a (rewired) Conv reads: strip the ``_dequantized`` suffix of its Q/DQ pair."""
    name = conv.input[0]
    return name[: -len("_dequantized")] if name.endswith("_dequantized") else name
