"""Conv -> Sigmoid into ``com.microsoft.FusedConv`` (activation "Sigmoid"): the gate Conv of a squeeze-excitation
or ECA block; onnxruntime target only."""

from __future__ import annotations

from ...types import Target
from ...onnx_graph import Graph
from .base import Pass, Rewrite, common_scope
from .fuse_conv_relu import conv_check, to_fused


class FuseConvSigmoid(Pass):
    name = "fuse-conv-sigmoid"
    summary = "Conv -> Sigmoid (an SE / ECA gate) into com.microsoft.FusedConv(activation=Sigmoid)"
    targets = frozenset({Target.ONNXRUNTIME})

    def match(self, g: Graph):
        return [(g.producer(n.input[0]).name if g.producer(n.input[0]) is not None else "", n.name)
                for n in g.g.node if n.op_type == "Sigmoid" and n.domain in ("", "ai.onnx")]

    def check(self, g: Graph, m):
        return conv_check(g, g.nodes.get(m[0]), m[1])

    def rewrite(self, g: Graph, m) -> Rewrite:
        conv, sigmoid = g.nodes[m[0]], g.nodes[m[1]]
        scope = common_scope([conv, sigmoid])
        sources = self.sources(g, m)
        to_fused(g, conv, sigmoid.output[0], activation="Sigmoid")
        g.remove([sigmoid.name])
        return Rewrite(self.name, sources, (conv.name, "FusedConv"), scope)
