"""Merge initializers with identical dtype, shape and bytes into one."""

from __future__ import annotations

import hashlib

from ...onnx_graph import Graph
from .base import Pass, Rewrite


def _key(t) -> tuple:
    from onnx import numpy_helper

    a = numpy_helper.to_array(t, base_dir="")
    return (t.data_type, tuple(t.dims), hashlib.sha256(a.tobytes()).hexdigest())


class DedupInitializers(Pass):
    name = "dedup-initializers"
    summary = "merge duplicate initializers (same dtype, shape and bytes)"

    def match(self, g: Graph):
        first: dict[tuple, str] = {}
        out = []
        for t in g.g.initializer:
            if t.name in g.inputs:  # an overridable input is not a constant
                continue
            key = _key(t)
            if key in first:
                out.append((t.name, first[key]))
            else:
                first[key] = t.name
        return out

    def run(self, g: Graph):
        res = super().run(g)
        gone = {r.sources[0][0] for r in res.rewrites}
        if gone:
            g.drop_initializers(gone)
        return res

    def alive(self, g: Graph, m) -> bool:
        return True

    def check(self, g: Graph, m):
        if m[0] in g.outputs:
            return "it is a graph output"
        return None

    def rewrite(self, g: Graph, m) -> Rewrite:
        g.rename_uses(m[0], m[1])
        return Rewrite(self.name, [(m[0], "initializer")], (m[1], "initializer"))
