"""Recognise squeeze-excitation (SE) and ECA blocks and record them in the fusion report; the graph is unchanged.

SE: ``x * Sigmoid(Conv(Relu(Conv(mean_hw(x)))))``; ECA: ``x * Sigmoid(Conv1d(mean_hw(x)))`` (with Reshape /
Expand plumbing). No ONNX or ONNX Runtime operator computes a whole block, so nothing is fused here: the block's
Convs fuse with their activations (fuse-conv-relu, fuse-conv-sigmoid), its squeeze becomes GlobalAveragePool
(reduce-mean-to-pool), ECA's Expand goes (drop-broadcast-expand), and the channel-wise Mul stays. The INT8
writers use the same recognition to keep the gate path in float for TensorRT.
"""

from __future__ import annotations

import logging

from ...onnx_graph import Graph
from .base import Declined, Pass, PassResult, Rewrite, common_scope

log = logging.getLogger(__name__)

SHAPE_OPS = ("Reshape", "Expand", "Unsqueeze", "Squeeze", "Flatten")
GATES = ("Sigmoid", "HardSigmoid")
POOLS = ("ReduceMean", "GlobalAveragePool")
GATE_BODY = ("Conv", "Relu", *SHAPE_OPS)


def _skip_shape_ops(g: Graph, tensor: str, path: list):
    """The producer of ``tensor`` past Reshape / Expand / ... (collected into ``path``)."""
    node = g.producer(tensor)
    while node is not None and node.op_type in SHAPE_OPS:
        path.append(node)
        node = g.producer(node.input[0])
    return node


def gate_of(g: Graph, mul) -> "tuple[str, list] | None":
    """(scaled input, [gate nodes from the Mul back]) when one Mul input ends in a Sigmoid-like gate."""
    if len(mul.input) != 2:
        return None
    for k in (0, 1):
        path: list = []
        node = _skip_shape_ops(g, mul.input[k], path)
        if node is not None and node.op_type in GATES:
            return mul.input[1 - k], [*path, node]
    return None


class SqueezeExcitation(Pass):
    name = "squeeze-excitation"
    summary = "recognise squeeze-excitation / ECA blocks and report them (no ONNX Runtime op fuses a whole block)"

    def match(self, g: Graph):
        return [(n.name,) for n in g.g.node if n.op_type == "Mul" and n.domain in ("", "ai.onnx")
                and gate_of(g, n) is not None]

    def check(self, g: Graph, m):
        mul = g.nodes[m[0]]
        x, path = gate_of(g, mul)
        node = g.producer(path[-1].input[0])
        while node is not None and node.op_type in GATE_BODY:
            if g.uses(node.output[0]) > 1:
                return f"{node.op_type} {node.name!r} on the gate path has other readers"
            path.append(node)
            node = g.producer(node.input[0])
        if node is None or node.op_type not in POOLS:
            what = f"{node.op_type} {node.name!r}" if node is not None else "a graph input"
            return f"the gate starts at {what}, not a global average (ReduceMean / GlobalAveragePool)"
        if node.input[0] != x:
            return f"the gate pools {node.input[0]!r}, not the tensor it scales ({x!r})"
        if not any(n.op_type == "Conv" for n in path):
            return "the gate has no Conv (not an SE / ECA block)"
        path.append(node)
        self._paths[mul.name] = path
        return None

    def describe(self, g: Graph, m) -> Rewrite:
        mul = g.nodes[m[0]]
        path = list(reversed(self._paths.pop(mul.name)))
        convs = [n for n in path if n.op_type == "Conv"]
        weights = [g.const(c.input[1]) for c in convs]
        shapes = [w.shape if w is not None else None for w in weights]
        if len(convs) == 1 and shapes[0] is not None and len(shapes[0]) == 3:
            kind = f"ECA (Conv1d over channels, kernel {shapes[0][-1]})"
        elif len(convs) == 2 and all(s is not None and len(s) == 4 for s in shapes):
            kind = f"squeeze-excitation ({shapes[0][1]} -> {shapes[0][0]} -> {shapes[1][0]} channels)"
        else:
            kind = f"gated block ({len(convs)} Conv)"
        chain = " -> ".join(n.op_type for n in path if n.op_type not in SHAPE_OPS) + " -> Mul"
        nodes = [n.name for n in path] + [mul.name]
        return Rewrite(self.name, self.sources(g, nodes), (mul.name, "Mul"), common_scope([g.nodes[n] for n in nodes]),
                       f"{kind}: {chain}; kept as is: no ONNX Runtime op computes the whole block")

    def run(self, g: Graph) -> PassResult:
        self._paths: dict[str, list] = {}
        res = PassResult(self.name)
        for m in self.match(g):
            reason = self.check(g, m)
            if reason:
                res.declined.append(Declined(self.name, list(m), reason))
                log.info("%s declined %s: %s", self.name, m[0], reason)
            else:
                res.found.append(self.describe(g, m))
        return res
