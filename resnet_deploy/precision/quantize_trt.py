"""INT8 for TensorRT: symmetric Q/DQ (zero point 0) placed by TensorRT's fusion rules.

- Every body Conv's activation input and its weights (per output channel) are quantized.
- At a residual Add only the shortcut input is quantized (identity, downsample Conv, ResNet-D's AvgPool -> Conv,
  ResNet-V2's pre-activation Conv); the main-branch input stays float and nothing sits between its Conv (or an SE
  block's Mul) and the Add / Relu, so TensorRT fuses Conv + Add (+ ReLU), or Mul + Add + ReLU, into one kernel
  that reads the quantized shortcut.
- An AveragePool whose output is quantized (ResNet-D's shortcut) reads its input through Q/DQ as well, so that
  TensorRT runs DQ -> AvgPool -> Q as one INT8 pooling layer.
- SE / ECA gates (GlobalAveragePool / ReduceMean -> small Convs -> Sigmoid -> Mul) stay float: they hold a few
  thousandths of the compute, and the gate multiplies every channel of the block's output.
- A classifier written as a 1x1 Conv stays float, as the Gemm head does.
"""

from __future__ import annotations

import copy

import numpy as np

from .residual_blocks import gate_convs, head_convs, residual_branches
from ..onnx_graph import Graph
from .quantize_common import QuantizedGraph, finish, insert_qdq, kept_nodes, quantize_conv_weight, symmetric_scale

__all__ = ["placement", "quantize", "residual_branches", "tensors_to_calibrate"]


def float_convs(model) -> dict[str, str]:
    """Conv name -> why it stays float by policy (SE / ECA gates, a Conv classifier)."""
    kept = {name: f"squeeze-excitation / ECA gate of {mul} kept float (tiny; scales every channel)"
            for name, mul in gate_convs(model).items()}
    kept.update({name: "classifier head kept fp32 by policy" for name in head_convs(model)})
    return kept


def placement(model, exclude: set[str] = frozenset()) -> dict[str, list]:
    """Tensor -> the consumer nodes that read it through Q/DQ (Conv inputs, residual shortcuts, AvgPool inputs)."""
    idx = Graph(model)
    skip = set(exclude) | set(float_convs(model))
    where: dict[str, list] = {}
    for n in model.graph.node:
        if n.op_type == "Conv" and n.name not in skip:
            where.setdefault(n.input[0], []).append(n)
        elif n.op_type == "Add":
            branches = residual_branches(idx, n)
            if branches is not None:
                where.setdefault(branches[1], []).append(n)
    for n in model.graph.node:
        if n.op_type == "AveragePool" and n.output[0] in where:
            where.setdefault(n.input[0], []).append(n)
    return where


def tensors_to_calibrate(model) -> list[str]:
    return list(placement(model))


def quantize(model, ranges: dict[str, tuple[float, float]], exclude: set[str] = frozenset()) -> QuantizedGraph:
    """A copy of the fp32 ``model`` with TensorRT-style Q/DQ; Convs named in ``exclude`` stay float."""
    model = copy.deepcopy(model)
    idx = Graph(model)
    policy = float_convs(model)
    where = placement(model, exclude)
    for tensor, consumers in where.items():
        insert_qdq(model, tensor, consumers, symmetric_scale(*ranges[tensor]), 0, np.int8)
    quantized = []
    for n in list(model.graph.node):
        if n.op_type == "Conv" and n.name not in exclude and n.name not in policy:
            quantize_conv_weight(model, idx, n)
            quantized.append(n.name)
    finish(model)
    kept = {**policy, **kept_nodes(model, quantized, exclude)}
    return QuantizedGraph(model, quantized, kept, list(where))
