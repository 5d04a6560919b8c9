"""Drop an Expand whose readers broadcast anyway: ``x * expand(g, shape(x))`` is ``x * g``.

timm's ECA gate ends in ``y.expand_as(x)``, which the exporter writes as Shape -> Concat -> Expand. When every
reader of the Expand is an elementwise Mul / Add / Sub / Div whose other input has exactly the Expand's output
shape (equal inferred shapes, or the Expand's target is ``Shape`` of that input), the readers take the Expand's
input directly: Expand's output shape is the broadcast of its input's shape with the target, so broadcasting the
input against the other operand gives the same shape and the same numbers. The Shape / Concat plumbing is then
dead and removed.
"""

from __future__ import annotations

from ...onnx_graph import Graph
from .base import Pass, Rewrite, common_scope

BROADCASTING = ("Mul", "Add", "Sub", "Div")


def known(shape) -> bool:
    return shape is not None and None not in shape and not any(str(d).startswith("unk__") for d in shape)


class DropBroadcastExpand(Pass):
    name = "drop-broadcast-expand"
    summary = "remove an Expand whose elementwise readers broadcast anyway (ECA's expand_as)"

    def match(self, g: Graph):
        return [(n.name,) for n in g.g.node if n.op_type == "Expand" and n.domain in ("", "ai.onnx")]

    def check(self, g: Graph, m):
        node = g.nodes[m[0]]
        out = node.output[0]
        if out in g.outputs:
            return "its output is a graph output"
        target = g.shape(out)
        shape_of = g.producer(node.input[1])
        for reader in g.consumers_of(out):
            if reader.op_type not in BROADCASTING or len(reader.input) != 2:
                return f"{reader.op_type} {reader.name!r} reads it and does not broadcast"
            other = reader.input[1] if reader.input[0] == out else reader.input[0]
            if other == out:
                return f"{reader.op_type} {reader.name!r} reads it twice"
            if shape_of is not None and shape_of.op_type == "Shape" and shape_of.input[0] == other \
                    and not any(a.name in ("start", "end") for a in shape_of.attribute):
                continue  # expand_as(other), literally
            if not known(target) or g.shape(other) != target:
                have = list(g.shape(other) or ["?"])
                return (f"{reader.op_type} {reader.name!r}'s other input is {have}, not {list(target or ['?'])}: "
                        "the Expand may set its output shape")
        return None

    def rewrite(self, g: Graph, m) -> Rewrite:
        node = g.nodes[m[0]]
        sources = self.sources(g, m)
        g.rename_uses(node.output[0], node.input[0])
        g.remove([node.name])
        return Rewrite(self.name, sources, None, common_scope([node]), "readers broadcast the input instead")
