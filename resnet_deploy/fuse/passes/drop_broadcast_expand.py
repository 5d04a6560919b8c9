"""Drop an Expand whose readers broadcast anyway: ``x * expand(g, shape(x))`` is ``x * g``.

timm's ECA gate ends in ``y.expand_as(x)``, which the exporter writes as Shape -> Concat -> Expand. When every
reader of the Expand is an elementwise Mul / Add / Sub / Div whose other input has exactly the Expand's output
shape, and the Expand's input broadcasts to it, the readers take the Expand's input directly; the Shape / Concat
plumbing is then dead and removed.
"""

from __future__ import annotations

from ..graph import Graph
from .base import Pass, Rewrite, common_scope

BROADCASTING = ("Mul", "Add", "Sub", "Div")


def broadcasts_to(small: tuple, big: tuple) -> bool:
    """Numpy-style: ``small`` right-aligned against ``big``, each dim 1 or equal (symbolic names compared)."""
    if len(small) > len(big):
        return False
    return all(s == 1 or s == b for s, b in zip(reversed(small), reversed(big)))


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
        target, src = g.shape(out), g.shape(node.input[0])
        if target is None or src is None or None in target or None in src:
            return "its input or output shape is unknown (run shape inference first)"
        if not broadcasts_to(src, target):
            return f"its input {list(src)} does not broadcast to {list(target)}"
        for reader in g.consumers_of(out):
            if reader.op_type not in BROADCASTING or len(reader.input) != 2:
                return f"{reader.op_type} {reader.name!r} reads it and does not broadcast"
            other = reader.input[1] if reader.input[0] == out else reader.input[0]
            if other == out or g.shape(other) != target:
                return (f"{reader.op_type} {reader.name!r}'s other input is {list(g.shape(other) or ['?'])}, not "
                        f"{list(target)}: the Expand sets its output shape")
        return None

    def rewrite(self, g: Graph, m) -> Rewrite:
        node = g.nodes[m[0]]
        sources = self.sources(g, m)
        g.rename_uses(node.output[0], node.input[0])
        g.remove([node.name])
        return Rewrite(self.name, sources, None, common_scope([node]), "readers broadcast the input instead")
