"""Conv -> residual Add with no Relu after it (a pre-activation block) into ``com.microsoft.FusedConv`` with the
shortcut as its summed input Z and no activation: FusedConv computes Conv(X, W, B) + Z."""

from __future__ import annotations

from ...types import Target
from ...onnx_graph import Graph
from .base import Pass, Rewrite, common_scope
from .fuse_conv_add_relu import no_conv, residual_check, residual_matches
from .fuse_conv_relu import to_fused


class FuseConvAdd(Pass):
    name = "fuse-conv-add"
    summary = "Conv -> Add(shortcut) not followed by a Relu (pre-activation) into com.microsoft.FusedConv(Z=shortcut)"
    targets = frozenset({Target.ONNXRUNTIME})

    def match(self, g: Graph):
        return [(conv, add) for conv, add, relu in residual_matches(g) if not relu]

    def check(self, g: Graph, m):
        conv_name, add_name = m
        if not conv_name:
            return no_conv(g, g.nodes[add_name])
        return residual_check(g, conv_name, add_name)

    def rewrite(self, g: Graph, m) -> Rewrite:
        conv, add = g.nodes[m[0]], g.nodes[m[1]]
        scope = common_scope([conv, add])
        sources = self.sources(g, m)
        z = next(t for t in add.input if t != conv.output[0])
        zsrc = g.producer(z)
        to_fused(g, conv, add.output[0], z=z, activation=None)
        g.remove([add.name])
        detail = f"no activation; Z = {z} from {zsrc.op_type if zsrc is not None else 'graph input'}"
        return Rewrite(self.name, sources, (conv.name, "FusedConv"), scope, detail)
