"""INT8 for TensorRT: symmetric Q/DQ (zero point 0) placed by TensorRT's fusion rules.

- Every Conv's activation input and its weights (per output channel) are quantized.
- At a residual Add only the shortcut (identity or downsample) input is quantized; the conv-branch input stays
  float and nothing sits between that Conv and its Add / Relu, so TensorRT fuses Conv + Add + ReLU into one
  INT8 kernel that reads the quantized shortcut.
"""

from __future__ import annotations

import copy

import numpy as np

from ..onnx_graph import Graph
from .qdq import QuantizedGraph, finish, insert_qdq, kept_nodes, quantize_conv_weight, symmetric_scale


def residual_branches(idx: Graph, add) -> tuple[str, str] | None:
    """(conv-branch input, shortcut input) of a residual Add, or None when it is not one."""
    if len(add.input) != 2:
        return None
    a, b = add.input
    pa, pb = idx.producer(a), idx.producer(b)
    a_conv = pa is not None and pa.op_type == "Conv"
    b_conv = pb is not None and pb.op_type == "Conv"
    if a_conv and not b_conv:
        return a, b
    if b_conv and not a_conv:
        return b, a
    if a_conv and b_conv:  # downsample block: the shortcut Conv reads what the main branch started from
        if idx.is_ancestor(pb.input[0], pa.input[0]):
            return a, b
        if idx.is_ancestor(pa.input[0], pb.input[0]):
            return b, a
    return None


def placement(model, exclude: set[str] = frozenset()) -> dict[str, list]:
    """Tensor -> the consumer nodes that read it through Q/DQ (Conv inputs and residual shortcuts)."""
    idx = Graph(model)
    where: dict[str, list] = {}
    for n in model.graph.node:
        if n.op_type == "Conv" and n.name not in exclude:
            where.setdefault(n.input[0], []).append(n)
        elif n.op_type == "Add":
            branches = residual_branches(idx, n)
            if branches is not None:
                where.setdefault(branches[1], []).append(n)
    return where


def tensors_to_calibrate(model) -> list[str]:
    return list(placement(model))


def quantize(model, ranges: dict[str, tuple[float, float]], exclude: set[str] = frozenset()) -> QuantizedGraph:
    """A copy of the fp32 ``model`` with TensorRT-style Q/DQ; Convs named in ``exclude`` stay float."""
    model = copy.deepcopy(model)
    idx = Graph(model)
    where = placement(model, exclude)
    for tensor, consumers in where.items():
        insert_qdq(model, tensor, consumers, symmetric_scale(*ranges[tensor]), 0, np.int8)
    quantized = []
    for n in list(model.graph.node):
        if n.op_type == "Conv" and n.name not in exclude:
            quantize_conv_weight(model, idx, n)
            quantized.append(n.name)
    finish(model)
    return QuantizedGraph(model, quantized, kept_nodes(model, quantized, exclude), list(where))
