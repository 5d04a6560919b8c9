"""The one ONNX graph helper: a thin mutable view over a ``ModelProto`` (lookups, constants, renames, order),
used by the fusion passes and the precision writers alike, and the graph facts every caller shares: node names,
tensor types, shape inference and intermediate tensors exposed as graph outputs.

Plain protobuf, no copies of weights: callers look nodes up by name, mutate them in place, and call
``remove`` / ``toposort``; the indices are rebuilt by ``refresh`` after a rewrite (graphs here are small).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections import defaultdict, deque
from pathlib import Path

import numpy as np

MS_DOMAIN = "com.microsoft"
FLOAT = 1  # onnx.TensorProto.FLOAT


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
        name_nodes(model)  # passes address nodes by name
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

    def array(self, name: str) -> np.ndarray:
        """The value of initializer ``name``."""
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name], base_dir="")

    def is_ancestor(self, tensor: str, of: str) -> bool:
        """Whether ``tensor`` is on a path into ``of`` (``of`` is computed from ``tensor``)."""
        seen, todo = set(), [of]
        while todo:
            t = todo.pop()
            if t == tensor:
                return True
            if t in seen or t not in self.producers:
                continue
            seen.add(t)
            todo.extend(i for i in self.producers[t].input if i)
        return False

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
            replace_input(n, old, new)

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
        drop_initializers(self.model, names)
        self.refresh()

    def toposort(self) -> None:
        """Stable topological order: a rewrite may place a node before one of its new inputs."""
        toposort(self.model)
        self.refresh()

    def ensure_opset(self, domain: str, version: int) -> None:
        if not any(o.domain == domain for o in self.model.opset_import):
            entry = self.model.opset_import.add()
            entry.domain, entry.version = domain, version


def name_nodes(model) -> None:
    """Give every node a unique name (``<op>_<index>`` where missing or repeated): nodes are addressed by name."""
    used = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in used:
            node.name = f"{node.op_type}_{i}"
        used.add(node.name)


def op_counts(model) -> dict[str, int]:
    """Node counts by op type (``domain:op`` outside the default domain), sorted by name."""
    out: dict[str, int] = {}
    for n in model.graph.node:
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}:{n.op_type}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items()))


def toposort(model) -> None:
    """Reorder ``model.graph.node`` in place so every node follows the producers of its inputs (Kahn's algorithm,
    stable: nodes already in order keep it). Raises ``ValueError`` on a cycle or an input nobody produces."""
    g = model.graph
    nodes = list(g.node)
    available = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    producer = {o: k for k, n in enumerate(nodes) for o in n.output}
    deps = [{producer[i] for i in n.input if i not in available and i in producer} for n in nodes]
    missing = [n.name for n in nodes if any(i not in available and i not in producer for i in n.input)]
    if missing:
        raise ValueError(f"graph has an input nobody produces at node {missing[0]!r}")
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
        raise ValueError(f"graph has a cycle at node {nodes[next(k for k, c in enumerate(pending) if c)].name!r}")
    copies = [type(nodes[k])() for k in order]  # copy before clearing: the repeated field owns its messages
    for c, k in zip(copies, order):
        c.CopyFrom(nodes[k])
    del g.node[:]
    g.node.extend(copies)


def add_initializer(model, name: str, array: np.ndarray) -> str:
    """Append an initializer (no check for an existing name: callers use fresh names)."""
    from onnx import numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    return name


def drop_initializers(model, names) -> None:
    """Remove the initializers named in ``names``."""
    names = set(names)
    keep = [t for t in model.graph.initializer if t.name not in names]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def prune_initializers(model) -> None:
    """Remove initializers no node (or graph output) reads, e.g. float weights replaced by quantized ones."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    drop_initializers(model, [t.name for t in model.graph.initializer if t.name not in used])


def replace_input(node, old: str, new: str) -> None:
    """Make ``node`` read ``new`` wherever it read ``old``."""
    for k, name in enumerate(node.input):
        if name == old:
            node.input[k] = new


LIGHT_BYTES = 4096  # initializers at least this large are shapes only to shape inference (weights, not shape args)


def _copy_fields(src, dst, skip: str) -> None:
    """Copy every set field of message ``src`` into the empty ``dst``, except the field named ``skip``."""
    for fd, value in src.ListFields():
        if fd.name == skip:
            continue
        repeated = getattr(fd, "is_repeated", None)  # protobuf >= 6.31; ``label`` is deprecated there
        if repeated if isinstance(repeated, bool) else fd.label == fd.LABEL_REPEATED:
            getattr(dst, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def weightless_copy(model):
    """A copy of ``model`` whose initializers of ``LIGHT_BYTES`` or more keep name, type and dims but no data: all
    that shape inference reads of a weight (it reads the values only of small ones, shape and axes arguments)."""
    import onnx

    light = onnx.ModelProto()
    _copy_fields(model, light, skip="graph")
    _copy_fields(model.graph, light.graph, skip="initializer")
    for t in model.graph.initializer:
        if t.HasField("raw_data") and t.ByteSize() >= LIGHT_BYTES:
            _copy_fields(t, light.graph.initializer.add(), skip="raw_data")
        else:
            light.graph.initializer.add().CopyFrom(t)
    return light


def infer_shapes(model, *, data_prop: bool = False, weights: bool = True):
    """``onnx.shape_inference.infer_shapes(model, data_prop=...)``, without passing the weights through it.

    ONNX's Python entry point serializes the whole model, infers, and parses the result back: ~0.2-0.4 s per call
    for resnet50's 100 MB of weights, seven calls per export. This infers on ``weightless_copy(model)`` and then puts
    the data into the result: the same result as ONNX's own. With ``weights=False`` the data stays out, for callers
    that only read shapes and types. ``model`` itself is only read (clearing and restoring its data in place would
    leave a dead copy of the weights in its protobuf arena for as long as it lives)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(weightless_copy(model), data_prop=data_prop)
    if not weights:
        return inferred
    src, out = model.graph.initializer, inferred.graph.initializer
    if len(out) != len(src) or any(o.name != t.name for o, t in zip(out, src)):  # never seen: be exact anyway
        return onnx.shape_inference.infer_shapes(model, data_prop=data_prop)
    for o, t in zip(out, src):
        if t.HasField("raw_data") and not o.HasField("raw_data"):
            o.raw_data = t.raw_data
    return inferred


def tensor_types(model) -> dict[str, int]:
    """Element type of every typed tensor (inputs, outputs, initializers, inferred intermediates)."""
    inferred = infer_shapes(model, weights=False)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in itertools.chain(g.input, g.output, g.value_info)}
    types.update({t.name: t.data_type for t in g.initializer})
    for n in g.node:  # Constant outputs are typed by their attribute even where inference left them out
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            types.setdefault(n.output[0], n.attribute[0].t.data_type)
    return types


def expose_outputs(model, names, types: "dict[str, int] | None" = None, *, in_place: bool = False):
    """``model`` (a copy, or ``model`` itself with ``in_place``) with the tensors ``names`` appended to its graph
    outputs in that order, each typed from ``types`` (default ``tensor_types(model)``) with no shape. A name that is
    an output already, or has no known type, is left out. Returns the model."""
    from onnx import helper

    m = model if in_place else copy.deepcopy(model)
    types = tensor_types(m) if types is None else types
    have = {o.name for o in m.graph.output}
    for t in names:
        if t not in have and types.get(t):
            m.graph.output.append(helper.make_tensor_value_info(t, types[t], None))
            have.add(t)
    return m


EXTERNAL_DATA_THRESHOLD = 2 * 1024**3  # protobuf's hard limit for one file


def save_model(proto, path: "str | Path", external_data: bool = False) -> None:
    """Write ``proto`` to ``path``; with ``external_data`` its weights go to ``<name>.data`` beside it."""
    import onnx

    path = Path(path)
    if external_data:
        onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(proto, str(path))


@contextlib.contextmanager
def appended(model):
    """Change ``model`` in place for the block and undo it on exit: nodes, initializers and value_info appended
    inside the block are removed and the graph outputs restored. For graphs too big to copy, edited only by
    appending (a statistics graph serialised for one session); an edit of an existing entry would not be undone."""
    g = model.graph
    sizes = len(g.node), len(g.initializer), len(g.value_info)
    outputs = [copy.deepcopy(o) for o in g.output]
    try:
        yield model
    finally:
        del g.node[sizes[0]:]
        del g.initializer[sizes[1]:]
        del g.value_info[sizes[2]:]
        del g.output[:]
        g.output.extend(outputs)


def copy_model(model):
    """A copy of ``model`` to rewrite (the passes change a ``ModelProto`` in place)."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out
