"""Fold an inference BatchNormalization into the Conv that feeds it (with or without a Conv bias).

W' = W * s (per output channel), b' = (b - mean) * s + beta, with s = gamma / sqrt(var + eps); computed in
float64 and stored in the weight's dtype. A BN whose input is not a Conv output, or whose Conv output has other
consumers, stays (it is a standard op, valid in every target): ONNX Runtime and TensorRT run it as one per-channel
scale and shift, which is all a Mul + Add pair would be. A pre-activation BN (ResNet-V2: residual Add -> BN ->
Relu -> Conv) folds into neither side: its input is a sum, and a Relu separates it from the next Conv.
"""

from __future__ import annotations

import numpy as np

from ...onnx_graph import Graph, attr
from .base import Pass, Rewrite, common_scope


def kept(g: Graph, bn) -> str:
    """Why a BN with no Conv before it stays, for the report."""
    readers = g.consumers_of(bn.output[0])
    if readers and all(r.op_type == "Relu" for r in readers):
        return ("; pre-activation: a Relu stands between it and the next Conv, so it folds into neither and stays "
                "BatchNormalization (one per-channel scale and shift)")
    return "; it stays BatchNormalization (one per-channel scale and shift)"


class FoldBatchNorm(Pass):
    name = "fold-batchnorm"
    summary = "fold BatchNormalization into the preceding Conv (weights and bias rewritten)"

    def match(self, g: Graph):
        out = []
        for n in g.g.node:
            if n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx"):
                conv = g.producer(n.input[0])
                out.append((conv.name, n.name) if conv is not None else ("", n.name))
        return out

    def check(self, g: Graph, m):
        conv_name, bn_name = m
        bn = g.nodes[bn_name]
        conv = g.nodes.get(conv_name)
        if conv is None:
            return f"its input is a graph input or initializer, not a Conv output{kept(g, bn)}"
        if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
            return f"its input comes from {conv.op_type} {conv.name!r}, not a Conv{kept(g, bn)}"
        if attr(bn, "training_mode", 0) or len([o for o in bn.output if o]) > 1:
            return "it is in training mode (running statistics are outputs)"
        if g.uses(conv.output[0]) > 1:
            return f"the Conv output {conv.output[0]!r} has {g.uses(conv.output[0])} consumers"
        params = [g.const(t) for t in bn.input[1:5]]
        if any(p is None for p in params):
            return "its scale / bias / mean / var are not constant"
        if g.const(conv.input[1]) is None or (len(conv.input) > 2 and conv.input[2] and g.const(conv.input[2]) is None):
            return "the Conv weight or bias is not constant"
        w = g.const(conv.input[1])
        if any(p.shape != (w.shape[0],) for p in params):
            return f"BN parameters do not match the Conv's {w.shape[0]} output channels"
        return None

    def rewrite(self, g: Graph, m) -> Rewrite:
        conv, bn = g.nodes[m[0]], g.nodes[m[1]]
        sources = self.sources(g, m)
        gamma, beta, mean, var = (g.const(t).astype(np.float64) for t in bn.input[1:5])
        w = g.const(conv.input[1])
        has_bias = len(conv.input) > 2 and bool(conv.input[2])
        b = g.const(conv.input[2]).astype(np.float64) if has_bias else np.zeros(w.shape[0])
        s = gamma / np.sqrt(var + attr(bn, "epsilon", 1e-5))
        new_w = (w.astype(np.float64) * s.reshape(-1, *[1] * (w.ndim - 1))).astype(w.dtype)
        new_b = ((b - mean) * s + beta).astype(w.dtype)
        # Fresh initializer names: the originals may be shared with other nodes.
        w_name = g.set_const(g.fresh(conv.input[1]), new_w)
        b_name = g.set_const(g.fresh(conv.input[2] if has_bias else conv.input[1] + "_bias"), new_b)
        del conv.input[1:]
        conv.input.extend([w_name, b_name])
        old_out = conv.output[0]
        conv.output[0] = bn.output[0]
        scope = common_scope([conv, bn])
        g.remove([bn.name])
        g.drop_value_info([old_out])
        return Rewrite(self.name, sources, (conv.name, "Conv"), scope,
                       "bias added" if not has_bias else "")
