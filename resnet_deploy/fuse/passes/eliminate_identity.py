"""Remove Identity nodes by wiring their consumers to the Identity's input."""

from __future__ import annotations

from ...onnx_graph import Graph
from .base import Pass, Rewrite


class EliminateIdentity(Pass):
    name = "eliminate-identity"
    summary = "remove Identity nodes (consumers read the input directly)"

    def match(self, g: Graph):
        return [(n.name,) for n in g.g.node if n.op_type == "Identity" and n.domain in ("", "ai.onnx")]

    def check(self, g: Graph, m):
        node = g.nodes[m[0]]
        src, out = node.input[0], node.output[0]
        if out in g.outputs and (g.producer(src) is None or src in g.outputs or g.uses(src) > 1):
            return "it names a graph output that its input cannot take over"
        return None

    def rewrite(self, g: Graph, m) -> Rewrite:
        node = g.nodes[m[0]]
        src, out = node.input[0], node.output[0]
        if out in g.outputs:  # the producer writes the graph output name directly
            producer = g.producer(src)
            producer.output[list(producer.output).index(src)] = out
            g.drop_value_info([src])
        else:
            g.rename_uses(out, src)
            g.drop_value_info([out])
        g.remove([node.name])
        return Rewrite(self.name, [(m[0], "Identity")], None)
