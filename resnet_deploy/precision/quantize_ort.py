"""INT8 for ONNX Runtime on x86: QDQ with uint8 activations and int8 per-channel weights (U8S8).

ONNX Runtime turns ``DQ -> Conv -> (Relu) -> Q`` into QLinearConv and ``DQ, DQ -> Add -> (Relu) -> Q`` into
QLinearAdd; a Relu before a Q with zero point 0 is dropped (uint8 clamps at 0). So every activation between
quantized ops gets one Q/DQ pair, except a tensor whose only reader is a Relu (the Relu output carries it), and
MaxPool keeps its input's scale so it runs on uint8 directly. Conv biases become int32 (input scale x weight
scale), as QLinearConv requires. (int8 activations, S8S8, ran slower than fp32 on this CPU.)
"""

from __future__ import annotations

import copy

import numpy as np

from ..onnx_graph import Graph
from .qdq import QuantizedGraph, asymmetric_uint8, finish, insert_qdq, kept_nodes, quantize_conv_weight

ACTIVATION_OPS = ("Conv", "Relu", "Add", "MaxPool")


def activation_tensors(model) -> list[str]:
    """Tensors that carry a Q/DQ pair: the input and outputs of Conv/Relu/Add/MaxPool (not those read only by Relu)."""
    idx = Graph(model)
    out = []
    feeds_conv = {n.input[0] for n in model.graph.node if n.op_type == "Conv"}
    for inp in model.graph.input:
        if inp.name in feeds_conv:
            out.append(inp.name)
    for n in model.graph.node:
        if n.op_type not in ACTIVATION_OPS:
            continue
        t = n.output[0]
        readers = idx.consumers_of(t)
        if readers and all(r.op_type == "Relu" for r in readers):
            continue
        out.append(t)
    return out


def tensors_to_calibrate(model) -> list[str]:
    return activation_tensors(model)


def quantize(model, ranges: dict[str, tuple[float, float]], exclude: set[str] = frozenset()) -> QuantizedGraph:
    """A copy of the fp32 ``model`` in U8S8 QDQ; Convs named in ``exclude`` read float input and weights."""
    model = copy.deepcopy(model)
    idx = Graph(model)
    tensors = activation_tensors(model)
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
    return QuantizedGraph(model, quantized, kept_nodes(model, quantized, exclude), list(scales))


def idx_input(conv) -> str:
    """The float tensor a (rewired) Conv reads: strip the ``_dequantized`` suffix of its Q/DQ pair."""
    name = conv.input[0]
    return name[: -len("_dequantized")] if name.endswith("_dequantized") else name
