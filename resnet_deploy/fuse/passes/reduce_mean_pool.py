"""ReduceMean over H and W of an NCHW tensor into GlobalAveragePool (the same numbers).

The dynamo exporter writes ``x.mean((2, 3))`` (timm's SE / ECA squeeze and its head pooling) as ReduceMean.
ONNX Runtime quantizes GlobalAveragePool (QLinearGlobalAveragePool) but not ReduceMean, and TensorRT maps it to
a pooling layer; so the INT8 graphs keep the squeeze in 8 bits. With keepdims=0 the rewrite applies only when
every consumer is a Reshape, whose result does not depend on its input's shape.
"""

from __future__ import annotations

from ...onnx_graph import Graph, attr
from .base import Pass, Rewrite, common_scope


def reduce_axes(g: Graph, node) -> "list[int] | None":
    """The axes of a ReduceMean (the input of opset 18, the attribute before), None when not constant."""
    if len(node.input) > 1 and node.input[1]:
        value = g.const(node.input[1])
        return None if value is None else [int(v) for v in value.reshape(-1)]
    axes = attr(node, "axes")
    return list(axes) if axes is not None else None


class ReduceMeanToPool(Pass):
    name = "reduce-mean-to-pool"
    summary = "ReduceMean over H,W of a 4-D tensor into GlobalAveragePool (quantizable by ONNX Runtime)"

    def match(self, g: Graph):
        return [(n.name,) for n in g.g.node if n.op_type == "ReduceMean" and n.domain in ("", "ai.onnx")]

    def check(self, g: Graph, m):
        node = g.nodes[m[0]]
        shape = g.shape(node.input[0])
        if shape is None:
            return "the rank of its input is unknown (run shape inference first)"
        if len(shape) != 4:
            return f"its input has rank {len(shape)}, not 4 (NCHW)"
        axes = reduce_axes(g, node)
        if axes is None:
            return "its axes are not constant" if len(node.input) > 1 else "it reduces every axis (no axes given)"
        if sorted(a % 4 for a in axes) != [2, 3]:
            return f"it reduces axes {axes}, not H and W"
        if not attr(node, "keepdims", 1):
            readers = g.consumers_of(node.output[0])
            if node.output[0] in g.outputs or any(r.op_type != "Reshape" for r in readers):
                others = sorted({r.op_type for r in readers if r.op_type != "Reshape"}) or ["graph output"]
                return f"keepdims=0 and its output feeds {', '.join(others)}, which depends on the (N, C) shape"
        return None

    def rewrite(self, g: Graph, m) -> Rewrite:
        import onnx

        node = g.nodes[m[0]]
        sources = self.sources(g, m)
        keep = attr(node, "keepdims", 1)
        pool = onnx.helper.make_node("GlobalAveragePool", [node.input[0]], [node.output[0]], name=node.name)
        pool.metadata_props.extend(node.metadata_props)
        node.CopyFrom(pool)
        if not keep:
            g.drop_value_info([node.output[0]])  # now (N, C, 1, 1), not (N, C)
        return Rewrite(self.name, sources, (node.name, "GlobalAveragePool"), common_scope([node]),
                       "" if keep else "keepdims=0: its Reshape consumers take (N, C, 1, 1) alike")
