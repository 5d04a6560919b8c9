"""What both INT8 writers share: Q/DQ node writing, scales from ranges, weight quantization, the result of a pass."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..onnx_graph import Graph, add_initializer, prune_initializers, replace_input, toposort

def qdq_pair(model, tensor: str, scale: float, zero_point: int, dtype, suffix: str = "") -> str:
    """Insert ``QuantizeLinear -> DequantizeLinear`` on ``tensor`` (per-tensor); returns the dequantized name."""
    from onnx import helper

    base = f"{tensor}{suffix}"
    s = add_initializer(model, f"{base}_scale", np.array(scale, dtype=np.float32))
    z = add_initializer(model, f"{base}_zero_point", np.array(zero_point, dtype=dtype))
    q, dq = f"{base}_quantized", f"{base}_dequantized"
    model.graph.node.extend([
        helper.make_node("QuantizeLinear", [tensor, s, z], [q], name=f"{base}_QuantizeLinear"),
        helper.make_node("DequantizeLinear", [q, s, z], [dq], name=f"{base}_DequantizeLinear"),
    ])
    return dq


def dequantized_initializer(model, name: str, values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
                            axis: int | None = 0) -> str:
    """Store quantized ``values`` as an initializer followed by a DequantizeLinear; returns the float name."""
    from onnx import helper

    q = add_initializer(model, f"{name}_quantized", values)
    s = add_initializer(model, f"{name}_scale", np.asarray(scale, dtype=np.float32))
    z = add_initializer(model, f"{name}_zero_point", zero_point)
    out = f"{name}_dequantized"
    attrs = {"axis": axis} if axis is not None and np.ndim(scale) == 1 else {}
    model.graph.node.append(helper.make_node("DequantizeLinear", [q, s, z], [out], name=f"{name}_DequantizeLinear",
                                             **attrs))
    return out


def quantize_weight_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (axis 0), range [-127, 127] as TensorRT requires; (values, scales)."""
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float64)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    shape = (-1,) + (1,) * (w.ndim - 1)
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


@dataclass
class QuantizedGraph:
    """An INT8 graph and what it quantized, kept in higher precision, and placed Q/DQ on."""

    model: object
    quantized: list[str]
    kept: dict[str, str]  # node name -> why it stays in higher precision
    qdq_tensors: list[str] = field(default_factory=list)


def symmetric_scale(lo: float, hi: float) -> float:
    amax = max(abs(lo), abs(hi))
    return float(amax / 127.0) if amax > 0 else 1.0


def asymmetric_uint8(lo: float, hi: float) -> tuple[float, int]:
    """uint8 scale and zero point for a range widened to include 0 (so 0 and ReLU are exact)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo <= 0:
        return 1.0, 0
    scale = (hi - lo) / 255.0
    return float(scale), int(np.clip(round(-lo / scale), 0, 255))


def quantize_conv_weight(model, idx: Graph, conv, input_scale: float | None = None) -> None:
    """Per-channel symmetric int8 weight behind a DequantizeLinear; with ``input_scale`` also an int32 bias."""
    w_name = conv.input[1]
    q, scales = quantize_weight_per_channel(idx.array(w_name))
    conv.input[1] = dequantized_initializer(model, w_name, q, scales, np.zeros(len(scales), np.int8), axis=0)
    if input_scale is not None and len(conv.input) > 2 and conv.input[2] in idx.inits:
        b_name = conv.input[2]
        b_scale = (scales.astype(np.float64) * input_scale).astype(np.float32)
        qb = np.round(idx.array(b_name) / b_scale).astype(np.int32)
        conv.input[2] = dequantized_initializer(model, b_name, qb, b_scale, np.zeros(len(b_scale), np.int32),
                                                axis=0)


def insert_qdq(model, tensor: str, consumers: list, scale: float, zero_point: int, dtype) -> str:
    dq = qdq_pair(model, tensor, scale, zero_point, dtype)
    for node in consumers:
        replace_input(node, tensor, dq)
    return dq


def finish(model) -> None:
    """Drop replaced float weights and restore topological order (the checker demands it)."""
    prune_initializers(model)
    toposort(model)


def kept_nodes(model, quantized: list[str], exclude: set[str]) -> dict[str, str]:
    kept = {}
    for n in model.graph.node:
        if n.name in exclude:
            kept[n.name] = "sensitive: excluded by the accuracy gate"
        elif n.op_type in ("Gemm", "MatMul") and n.name not in quantized:
            kept[n.name] = "classifier head kept fp32 by policy"
    return kept
