"""Conv -> Relu into ONNX Runtime's ``com.microsoft.FusedConv`` (activation "Relu"); onnxruntime target only."""

from __future__ import annotations

import onnx
from onnx import TensorProto

from ...types import Target
from ...onnx_graph import MS_DOMAIN, Graph
from .base import Pass, Rewrite, common_scope


def conv_check(g: Graph, conv, consumer_name: str) -> str | None:
    """Shared checks: a standard float32 Conv whose output feeds only ``consumer_name``."""
    if conv is None:
        return "its input is not produced by a node"
    if conv.op_type != "Conv" or conv.domain not in ("", "ai.onnx"):
        return f"its input comes from {conv.op_type} {conv.name!r}, not a Conv"
    out = conv.output[0]
    if g.uses(out) > 1:
        return f"the Conv output {out!r} has {g.uses(out) - 1} other consumer(s) besides {consumer_name!r}"
    etype = g.elem_type(conv.input[1])
    if etype not in (0, TensorProto.FLOAT):
        return f"FusedConv runs float32 only on the CPU (weight type {TensorProto.DataType.Name(etype)})"
    return None


def to_fused(g: Graph, conv, output: str, z: str | None = None, activation: str | None = "Relu") -> None:
    """Turn ``conv`` into FusedConv writing ``output``: ``activation`` (Relu, Sigmoid, or None for none) applied
    to Conv + ``z``, the summed input (the residual)."""
    old = conv.output[0]
    conv.op_type, conv.domain = "FusedConv", MS_DOMAIN
    if activation:
        conv.attribute.append(onnx.helper.make_attribute("activation", activation))
    if z is not None:
        while len(conv.input) < 3:
            conv.input.append("")  # no bias: an empty name is a missing optional input
        conv.input.append(z)
    conv.output[0] = output
    g.ensure_opset(MS_DOMAIN, 1)
    g.drop_value_info([old])


class FuseConvRelu(Pass):
    name = "fuse-conv-relu"
    summary = "Conv -> Relu into com.microsoft.FusedConv(activation=Relu)"
    targets = frozenset({Target.ONNXRUNTIME})

    def match(self, g: Graph):
        return [(g.producer(n.input[0]).name if g.producer(n.input[0]) is not None else "", n.name)
                for n in g.g.node if n.op_type == "Relu" and n.domain in ("", "ai.onnx")]

    def check(self, g: Graph, m):
        return conv_check(g, g.nodes.get(m[0]), m[1])

    def rewrite(self, g: Graph, m) -> Rewrite:
        conv, relu = g.nodes[m[0]], g.nodes[m[1]]
        scope = common_scope([conv, relu])
        sources = self.sources(g, m)
        to_fused(g, conv, relu.output[0])
        g.remove([relu.name])
        return Rewrite(self.name, sources, (conv.name, "FusedConv"), scope)
