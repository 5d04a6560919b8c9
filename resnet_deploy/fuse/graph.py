"""A thin mutable view over an ONNX ``ModelProto`` for the fusion passes: lookups, constants, renames, order.

Plain protobuf, no copies of weights: passes look nodes up by name, mutate them in place, and call
``remove`` / ``toposort``; the indices are rebuilt by ``refresh`` after every rewrite (graphs here are small).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

MS_DOMAIN = "com.microsoft"


def attr(node, name: str, default=None):
    """The value of a node attribute (ints, floats, strings decoded), or ``default``."""
    import onnx

    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def name_scopes(node) -> list[str]:
    """The torch module path the dynamo exporter recorded for a node (empty for other producers)."""
    import ast

    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                value = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return []
            return [str(v) for v in value] if isinstance(value, list) else []
    return []


def constant_value(node) -> "np.ndarray | None":
    """The value of a Constant node in any of its numeric forms (None for strings / sparse)."""
    from onnx import numpy_helper

    a = node.attribute[0]
    if a.name == "value":
        return numpy_helper.to_array(a.t)
    forms = {"value_float": (a.f, np.float32), "value_floats": (list(a.floats), np.float32),
             "value_int": (a.i, np.int64), "value_ints": (list(a.ints), np.int64)}
    if a.name in forms:
        value, dtype = forms[a.name]
        return np.asarray(value, dtype=dtype)
    return None


class Graph:
    """The main graph of ``model`` with producer / consumer / initializer indices."""

    def __init__(self, model):
        self.model = model
        self.g = model.graph
        self._counter = 0
        used = set()
        for i, node in enumerate(self.g.node):  # passes address nodes by name: make names present and unique
            if not node.name or node.name in used:
                node.name = f"{node.op_type}_{i}"
            used.add(node.name)
        self.refresh()

    def refresh(self) -> None:
        self.nodes = {n.name: n for n in self.g.node}
        self.producers = {o: n for n in self.g.node for o in n.output if o}
        self.consumers: dict[str, list] = defaultdict(list)
        for n in self.g.node:
            for i in n.input:
                if i:
                    self.consumers[i].append(n)
        self.inits = {t.name: t for t in self.g.initializer}
        self.inputs = {i.name for i in self.g.input}
        self.outputs = {o.name for o in self.g.output}
        self.shapes = {v.name: v for v in [*self.g.value_info, *self.g.input, *self.g.output]}

    def producer(self, tensor: str):
        return self.producers.get(tensor)

    def consumers_of(self, tensor: str) -> list:
        return self.consumers.get(tensor, [])

    def uses(self, tensor: str) -> int:
        """Consumers plus one if the tensor is a graph output."""
        return len(self.consumers_of(tensor)) + (tensor in self.outputs)

    def const(self, tensor: str) -> "np.ndarray | None":
        """The value of a constant tensor (initializer that is not an overridable input, or a Constant node)."""
        from onnx import numpy_helper

        if tensor in self.inits and tensor not in self.inputs:
            return numpy_helper.to_array(self.inits[tensor], base_dir="")
        node = self.producer(tensor)
        if node is not None and node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.attribute:
            return constant_value(node)
        return None

    def set_const(self, name: str, value: np.ndarray) -> str:
        """Add or replace an initializer."""
        from onnx import numpy_helper

        tensor = numpy_helper.from_array(np.ascontiguousarray(value), name)
        for i, t in enumerate(self.g.initializer):
            if t.name == name:
                self.g.initializer[i].CopyFrom(tensor)
                break
        else:
            self.g.initializer.append(tensor)
        self.inits[name] = tensor
        return name

    def fresh(self, base: str) -> str:
        """A tensor / node name not used anywhere in the graph."""
        taken = set(self.producers) | set(self.inits) | self.inputs | set(self.nodes)
        while True:
            self._counter += 1
            name = f"{base}_fused{self._counter}"
            if name not in taken:
                return name

    def shape(self, tensor: str) -> "tuple | None":
        """Static / symbolic dims of a tensor from value_info (ints or dim_param strings), None when unknown."""
        vi = self.shapes.get(tensor)
        if vi is None and tensor in self.inits:
            return tuple(self.inits[tensor].dims)
        if vi is None or not vi.type.tensor_type.HasField("shape"):
            return None
        dims = []
        for d in vi.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        return tuple(dims)

    def elem_type(self, tensor: str) -> int:
        vi = self.shapes.get(tensor)
        if vi is not None:
            return vi.type.tensor_type.elem_type
        if tensor in self.inits:
            return self.inits[tensor].data_type
        return 0

    def rename_uses(self, old: str, new: str) -> None:
        """Make every consumer of ``old`` read ``new`` instead."""
        for n in self.consumers_of(old):
            for i, name in enumerate(n.input):
                if name == old:
                    n.input[i] = new

    def remove(self, names) -> None:
        """Drop nodes by name (their value_info goes too)."""
        names = set(names)
        keep = [n for n in self.g.node if n.name not in names]
        dead_tensors = {o for n in self.g.node if n.name in names for o in n.output} - {o for n in keep for o in n.output}
        del self.g.node[:]
        self.g.node.extend(keep)
        self.drop_value_info(dead_tensors)

    def drop_value_info(self, tensors) -> None:
        tensors = set(tensors)
        keep_vi = [v for v in self.g.value_info if v.name not in tensors]
        del self.g.value_info[:]
        self.g.value_info.extend(keep_vi)
        self.refresh()

    def drop_initializers(self, names) -> None:
        names = set(names)
        keep = [t for t in self.g.initializer if t.name not in names]
        del self.g.initializer[:]
        self.g.initializer.extend(keep)
        self.refresh()

    def toposort(self) -> None:
        """Stable topological order: a rewrite may place a node before one of its new inputs."""
        ready = set(self.inputs) | set(self.inits) | {""}
        pending = list(self.g.node)
        order = []
        while pending:
            rest = []
            for n in pending:
                if all(i in ready for i in n.input):
                    order.append(n)
                    ready.update(n.output)
                else:
                    rest.append(n)
            if len(rest) == len(pending):
                raise ValueError(f"graph has a cycle or a missing input at node {rest[0].name!r}")
            pending = rest
        copies = [type(n)() for n in order]
        for c, n in zip(copies, order):
            c.CopyFrom(n)
        del self.g.node[:]
        self.g.node.extend(copies)
        self.refresh()

    def ensure_opset(self, domain: str, version: int) -> None:
        if not any(o.domain == domain for o in self.model.opset_import):
            entry = self.model.opset_import.add()
            entry.domain, entry.version = domain, version


def op_counts(model) -> dict[str, int]:
    """Node counts by op type (``domain:op`` outside the default domain), sorted by name."""
    out: dict[str, int] = {}
    for n in model.graph.node:
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))
