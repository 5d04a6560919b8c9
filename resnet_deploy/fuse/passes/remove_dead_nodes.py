"""Remove nodes whose outputs nobody reads, and initializers no node uses."""

from __future__ import annotations

from ...onnx_graph import Graph
from .base import Pass, PassResult, Rewrite


class RemoveDeadNodes(Pass):
    name = "remove-dead-nodes"
    summary = "remove nodes with unused outputs and unused initializers"

    def match(self, g: Graph):
        return [(n.name,) for n in reversed(g.g.node)]  # reversed: a chain of dead nodes goes in one sweep

    def check(self, g: Graph, m):
        node = g.nodes[m[0]]
        if any(g.uses(o) for o in node.output if o):
            return "in use"
        return None

    def rewrite(self, g: Graph, m) -> Rewrite:
        op = g.nodes[m[0]].op_type
        g.remove([m[0]])
        return Rewrite(self.name, [(m[0], op)], None)

    def run(self, g: Graph) -> PassResult:
        res = super().run(g)
        res.declined = []  # live nodes are not worth a line each
        used = {i for n in g.g.node for i in n.input} | g.outputs
        unused = [t for t in g.g.initializer if t.name not in used and t.name not in g.inputs]
        if unused:
            g.drop_initializers(t.name for t in unused)
            res.rewrites.append(Rewrite(self.name, [(t.name, "initializer") for t in unused], None,
                                        detail=f"{len(unused)} unused initializer(s)"))
        return res
