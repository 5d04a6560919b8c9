"""Small ONNX graph helpers shared by the precision passes: lookups, topological sort, Q/DQ node writing."""

from __future__ import annotations

from collections import defaultdict, deque

import numpy as np


class GraphIndex:
    """Producer / consumer / initializer lookups over an ``onnx.ModelProto`` graph (rebuild after edits)."""

    def __init__(self, model):
        from onnx import numpy_helper

        g = model.graph
        self.graph = g
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list] = defaultdict(list)
        for n in g.node:
            for i in n.input:
                self.consumers[i].append(n)
        self.init = {t.name: t for t in g.initializer}
        self._np = numpy_helper

    def array(self, name: str) -> np.ndarray:
        return self._np.to_array(self.init[name])

    def is_ancestor(self, tensor: str, of: str) -> bool:
        """Whether ``tensor`` is on a path into ``of`` (``of`` computed from ``tensor``)."""
        seen, todo = set(), [of]
        while todo:
            t = todo.pop()
            if t == tensor:
                return True
            if t in seen or t not in self.producer:
                continue
            seen.add(t)
            todo.extend(i for i in self.producer[t].input if i)
        return False


def topological_sort(model) -> None:
    """Reorder ``model.graph.node`` in place so every node follows the producers of its inputs (Kahn)."""
    g = model.graph
    nodes = list(g.node)
    available = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    producer = {o: k for k, n in enumerate(nodes) for o in n.output}
    deps = [{producer[i] for i in n.input if i not in available and i in producer} for n in nodes]
    users = defaultdict(list)
    for k, d in enumerate(deps):
        for p in d:
            users[p].append(k)
    pending = [len(d) for d in deps]
    ready = deque(k for k, c in enumerate(pending) if c == 0)
    order = []
    while ready:
        k = ready.popleft()
        order.append(k)
        for u in users[k]:
            pending[u] -= 1
            if pending[u] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        raise ValueError("graph has a cycle or an input nobody produces")
    del g.node[:]
    g.node.extend(nodes[k] for k in order)


def add_initializer(model, name: str, array: np.ndarray) -> str:
    from onnx import numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    return name


def qdq_pair(model, tensor: str, scale: float, zero_point: int, dtype, suffix: str = "") -> str:
    """Insert ``QuantizeLinear -> DequantizeLinear`` on ``tensor`` (per-tensor); returns the dequantized name."""
    from onnx import helper

    base = f"{tensor}{suffix}"
    s = add_initializer(model, f"{base}_scale", np.array(scale, dtype=np.float32))
    z = add_initializer(model, f"{base}_zero_point", np.array(zero_point, dtype=dtype))
    q, dq = f"{base}_quantized", f"{base}_dequantized"
    model.graph.node.extend([
        helper.make_node("QuantizeLinear", [tensor, s, z], [q], name=f"{base}_QuantizeLinear"),
        helper.make_node("DequantizeLinear", [q, s, z], [dq], name=f"{base}_DequantizeLinear"),
    ])
    return dq


def dequantized_initializer(model, name: str, values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray,
                            axis: int | None = 0) -> str:
    """Store quantized ``values`` as an initializer followed by a DequantizeLinear; returns the float name."""
    from onnx import helper

    q = add_initializer(model, f"{name}_quantized", values)
    s = add_initializer(model, f"{name}_scale", np.asarray(scale, dtype=np.float32))
    z = add_initializer(model, f"{name}_zero_point", zero_point)
    out = f"{name}_dequantized"
    attrs = {"axis": axis} if axis is not None and np.ndim(scale) == 1 else {}
    model.graph.node.append(helper.make_node("DequantizeLinear", [q, s, z], [out], name=f"{name}_DequantizeLinear",
                                             **attrs))
    return out


def replace_input(node, old: str, new: str) -> None:
    for k, name in enumerate(node.input):
        if name == old:
            node.input[k] = new


def quantize_weight_per_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output channel (axis 0), range [-127, 127] as TensorRT requires; (values, scales)."""
    amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1).astype(np.float64)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    shape = (-1,) + (1,) * (w.ndim - 1)
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale.astype(np.float32)


def remove_unused_initializers(model) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
