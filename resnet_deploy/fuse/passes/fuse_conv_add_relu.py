"""Conv -> residual Add -> Relu into one ``com.microsoft.FusedConv`` with the shortcut as its summed input Z.

FusedConv computes Relu(Conv(X, W, B) + Z). When both Add inputs are Conv outputs (a downsample block), the
earlier Conv in graph order (the main branch in a torch export) is fused and the other becomes Z.
"""

from __future__ import annotations

from ...types import Target
from ...onnx_graph import Graph
from .base import Pass, Rewrite, common_scope
from .fuse_conv_relu import conv_check, to_fused


def no_conv(g: Graph, add) -> str:
    """The decline reason for an Add with no Conv input, naming what feeds it (e.g. an SE block's Mul)."""
    kinds = [p.op_type if p is not None else "graph input" for p in (g.producer(t) for t in add.input)]
    return f"neither Add input is a Conv output (they come from {' and '.join(kinds)})"


def residual_check(g: Graph, conv_name: str, add_name: str) -> str | None:
    """Shared by the residual fusions: the Conv feeds only the Add, and the other input Z has the Conv's shape."""
    add = g.nodes[add_name]
    reason = conv_check(g, g.nodes[conv_name], add_name)
    if reason:
        return reason
    conv_out = g.nodes[conv_name].output[0]
    z = next(t for t in add.input if t != conv_out) if add.input[0] != add.input[1] else None
    if z is None:
        return "the Add sums the Conv output with itself"
    a, b = g.shape(conv_out), g.shape(z)
    if a is None or b is None or None in a or None in b:
        return "the shapes of the Add inputs are unknown (run shape inference first)"
    if a != b:
        return f"the Add broadcasts ({list(a)} + {list(b)}); FusedConv needs Z shaped like its output"
    return None


def residual_matches(g: Graph) -> list[tuple[str, str, str]]:
    """(conv, add, relu) for every two-input Add; ``relu`` is the one Relu its output feeds, else "". The Conv is
    one that passes the checks if any, then the earlier one; "" when neither input is a Conv output."""
    order = {n.name: i for i, n in enumerate(g.g.node)}
    out = []
    for add in g.g.node:
        if add.op_type != "Add" or add.domain not in ("", "ai.onnx") or len(add.input) != 2:
            continue
        users = g.consumers_of(add.output[0])
        relu_name = users[0].name if len(users) == 1 and users[0].op_type == "Relu" else ""
        convs = [p for p in (g.producer(t) for t in add.input) if p is not None and p.op_type == "Conv"]
        convs.sort(key=lambda c: (residual_check(g, c.name, add.name) is not None, order[c.name]))
        out.append((convs[0].name if convs else "", add.name, relu_name))
    return out


class FuseConvAddRelu(Pass):
    name = "fuse-conv-add-relu"
    summary = "Conv -> Add(shortcut) -> Relu into com.microsoft.FusedConv(activation=Relu, Z=shortcut)"
    targets = frozenset({Target.ONNXRUNTIME})

    def match(self, g: Graph):
        return residual_matches(g)  # Adds without a Relu too: their decline says so

    def check(self, g: Graph, m):
        conv_name, add_name, relu_name = m
        add = g.nodes[add_name]
        if not conv_name:
            return no_conv(g, add)
        if not relu_name:
            return "the Add output does not feed exactly one Relu"
        if g.uses(add.output[0]) > 1:
            return f"the Add output {add.output[0]!r} is also a graph output"
        return residual_check(g, conv_name, add_name)

    def rewrite(self, g: Graph, m) -> Rewrite:
        conv, add, relu = (g.nodes[n] for n in m)
        scope = common_scope([conv, add, relu])
        sources = self.sources(g, m)
        z = next(t for t in add.input if t != conv.output[0])
        zsrc = g.producer(z)
        to_fused(g, conv, relu.output[0], z=z)
        g.remove([add.name, relu.name])
        detail = f"Z = {z} from {zsrc.op_type if zsrc is not None else 'graph input'}"
        return Rewrite(self.name, sources, (conv.name, "FusedConv"), scope, detail)
