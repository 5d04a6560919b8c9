"""Constant folding: Constant nodes become initializers, and a node whose inputs are all constant is computed
once (with the ONNX reference evaluator) and replaced by its result."""

from __future__ import annotations

import numpy as np
import onnx

from ...onnx_graph import Graph
from .base import Pass, PassResult, Rewrite

MAX_FOLDED_ELEMENTS = 1 << 20  # folding must not blow up the file (e.g. a constant Expand or Tile)
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
                    "Bernoulli"}


def evaluate(node, values: list[np.ndarray], opset: int) -> list[np.ndarray]:
    """Run one standard node on constant inputs."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    names = [f"in{i}" if name else "" for i, name in enumerate(node.input)]
    probe = onnx.helper.make_node(node.op_type, names, [f"out{i}" for i in range(len(node.output))],
                                  domain=node.domain)
    probe.attribute.extend(node.attribute)
    feeds = {n: v for n, v in zip(names, values) if n}
    ev = ReferenceEvaluator(onnx.helper.make_model(
        onnx.helper.make_graph([probe], "fold", [onnx.helper.make_tensor_value_info(n, 0, None) for n in feeds],
                               [onnx.helper.make_tensor_value_info(o, 0, None) for o in probe.output]),
        opset_imports=[onnx.helper.make_opsetid("", opset)]))
    return ev.run(None, feeds)


class FoldConstants(Pass):
    name = "fold-constants"
    summary = "Constant nodes to initializers; nodes with only constant inputs computed once"

    def match(self, g: Graph):
        return [(n.name,) for n in g.g.node if n.domain in ("", "ai.onnx")
                and (n.op_type == "Constant" or (n.input and all(g.const(i) is not None for i in n.input if i))
                     or (n.op_type == "CastLike" and g.const(n.input[0]) is not None and g.elem_type(n.input[1])))]

    def check(self, g: Graph, m):
        node = g.nodes[m[0]]
        if node.op_type in NONDETERMINISTIC:
            return "the op is random"
        if any(o in g.outputs for o in node.output):
            return "its output is a graph output"
        if node.op_type == "Constant":
            value = g.const(node.output[0])
            if value is None:
                return f"Constant with {node.attribute[0].name!r} (only numeric dense values are converted)"
            self._values[node.name] = [value]
            return None
        if node.op_type == "CastLike":  # only the target's dtype matters, and type inference knows it
            dtype = onnx.helper.tensor_dtype_to_np_dtype(g.elem_type(node.input[1]))
            self._values[node.name] = [g.const(node.input[0]).astype(dtype)]
            return None
        opset = next((o.version for o in g.model.opset_import if o.domain in ("", "ai.onnx")), 18)
        values = evaluate(node, [g.const(i) if i else None for i in node.input], opset)
        if any(np.asarray(v).size > MAX_FOLDED_ELEMENTS for v in values):
            return f"its result has more than {MAX_FOLDED_ELEMENTS} elements (would grow the file)"
        self._values[node.name] = values
        return None

    def run(self, g: Graph) -> PassResult:
        """Repeat until nothing folds: folding one node can make its consumers constant."""
        self._values: dict[str, list] = {}
        total = PassResult(self.name)
        while True:
            res = super().run(g)
            total.rewrites += res.rewrites
            if not res.rewrites:
                total.declined = res.declined
                return total

    def rewrite(self, g: Graph, m) -> Rewrite:
        node = g.nodes[m[0]]
        values = self._values.pop(node.name)
        op = node.op_type
        outputs = list(node.output)
        g.remove([node.name])
        for name, value in zip(outputs, values):
            g.set_const(name, np.asarray(value))
        return Rewrite(self.name, [(m[0], op)], (outputs[0], "initializer"))
