"""Reduced-precision graphs: fp16 or bf16 weights and activations, chosen nodes kept in fp32.

One converter serves both formats and the fallback (``fp32_fallback.py``): every node that computes on float tensors
runs in the reduced format unless it is *kept* (by the user, by the fallback, or by policy), and a Cast goes
wherever a tensor crosses between a kept node and a reduced one. I/O stays fp32 through Casts at the edges unless
``low_io``. The result is strongly typed: the precision of every tensor is in the graph, as TensorRT 11 wants.

A node stays in fp32 by policy when its op is numerically unsafe in a reduced format (``KEEP_FP32_OPS``), when its
output type comes from an attribute (``TYPED_OPS``), or when the ONNX schema of its op, at the graph's opset, does
not accept the format (the reason says which). bf16 needs opset 22, where Conv and the pooling ops accept it:
the graph is converted to opset 22 first.

``emulate=True`` writes the same decisions into an fp32 graph in which every tensor that would be reduced is
rounded instead (Cast to the format and back): the numbers a reduced engine with fp32 accumulation gives, for
runtimes without bf16 kernels (ONNX Runtime's CPU). Tensor names of the original graph hold the reduced values in
both graphs, so the fallback can compare them node by node with the fp32 graph.
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..onnx_graph import FLOAT, infer_shapes, name_nodes, prune_initializers, tensor_types, toposort

log = logging.getLogger(__name__)

KEEP_FP32_OPS = ("Softmax", "LogSoftmax")  # exponentials over a whole row: fp16's range and rounding hurt
# ops that move data or round nothing themselves (Relu, MaxPool): one that reads only kept nodes' outputs stays fp32
# too (a Cast before it would round those outputs for nothing)
LAYOUT_OPS = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Expand", "Tile", "Slice",
              "Gather", "Split", "Concat", "MaxPool", "Relu")
# ops whose output type is set by an attribute, which the converter does not rewrite
TYPED_OPS = ("EyeLike", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
             "Bernoulli")


@dataclass(frozen=True)
class Format:
    """A reduced floating-point format: its ONNX type, its range, and the opset where a ResNet's ops accept it."""

    name: str
    elem_type: int
    type_str: str  # as ONNX schemas spell it
    max_finite: float
    min_normal: float
    min_subnormal: float
    min_opset: int

    def __str__(self) -> str:
        return self.name

    @property
    def numpy_type(self):
        if self.name == "fp16":
            return np.float16
        import ml_dtypes  # an onnx dependency

        return ml_dtypes.bfloat16

    def store(self, values: np.ndarray) -> np.ndarray:
        """``values`` in the format (round to nearest even), clipped to its finite range: a weight never becomes Inf
        (the fallback keeps the node of an out-of-range weight in fp32 instead)."""
        a = np.asarray(values, dtype=np.float32)
        return np.clip(a, -self.max_finite, self.max_finite).astype(self.numpy_type)

    def round(self, values: np.ndarray) -> np.ndarray:
        """``values`` as the format stores them, back in float32."""
        return self.store(values).astype(np.float32)


FP16 = Format("fp16", 10, "tensor(float16)", 65504.0, 2.0 ** -14, 2.0 ** -24, 1)
BF16 = Format("bf16", 16, "tensor(bfloat16)", float(np.finfo(np.float32).max) * (1 - 2.0 ** -8), 2.0 ** -126,
              2.0 ** -133, 22)


@dataclass
class ReducedGraph:
    """A converted graph and what stayed in fp32 (node -> ``{"op", "reason", "detail"}``). ``renamed`` maps an
    original tensor name to the name that holds the node's own output where the converter renamed it (an fp32
    graph output now read through a Cast)."""

    model: object
    format: Format
    low_io: bool
    emulated: bool
    kept: dict[str, dict] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)

    def tensor(self, original: str) -> str:
        return self.renamed.get(original, original)


def default_opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def compute_nodes(model, types: dict[str, int] | None = None) -> list:
    """Nodes that read or write a float tensor: the ones a format conversion concerns."""
    types = types if types is not None else tensor_types(model)
    return [n for n in model.graph.node if any(types.get(t) == FLOAT for t in (*n.input, *n.output) if t)]


def _fixed_float_inputs(schema, n_inputs: int) -> set[int]:
    """Input positions whose type is fixed ``tensor(float)`` (not a type variable): they stay fp32 in any node."""
    out = set()
    formal = list(schema.inputs)
    for i in range(n_inputs):
        p = formal[min(i, len(formal) - 1)] if formal else None
        if p is not None and p.type_str == "tensor(float)":
            out.add(i)
    return out


def schema_problem(node, opset: int, fmt: Format) -> str | None:
    """Why the ONNX schema of ``node``'s op at ``opset`` cannot take ``fmt`` where it takes float, None when it can."""
    import onnx

    if node.domain not in ("", "ai.onnx"):
        return f"{node.domain} op: its {fmt} support is unknown"
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except Exception:  # noqa: BLE001 - an op unknown to this onnx: leave it as it is
        return f"op unknown to onnx {onnx.__version__}"
    for c in schema.type_constraints:
        allowed = set(c.allowed_type_strs)
        if "tensor(float)" in allowed and fmt.type_str not in allowed:
            return f"ONNX {node.op_type}-{schema.since_version} has no {fmt} ({c.type_param_str})"
    return None


def policy_reasons(model, fmt: Format, types: dict[str, int] | None = None) -> dict[str, dict]:
    """Nodes that stay fp32 whatever the user or the fallback says, with the reason."""
    types = types if types is not None else tensor_types(model)
    opset = max(default_opset(model), fmt.min_opset)
    out = {}
    for n in compute_nodes(model, types):
        if n.op_type in KEEP_FP32_OPS:
            why = f"{n.op_type} is kept in fp32 (range and rounding of exponentials)"
        elif n.op_type in TYPED_OPS:
            why = f"{n.op_type} sets its output type by attribute"
        else:
            why = schema_problem(n, opset, fmt)
        if why:
            out[n.name] = {"op": n.op_type, "reason": "policy", "detail": why}
    return out


def follow_kept(model, kept: dict[str, dict], types: dict[str, int]) -> None:
    """Keep in fp32 the data-movement nodes (``LAYOUT_OPS``) whose float inputs all come from kept nodes."""
    producer = {o: n for n in model.graph.node for o in n.output if o}
    inits = {t.name for t in model.graph.initializer}
    for n in model.graph.node:  # topological order: a chain of them follows its head
        if n.op_type not in LAYOUT_OPS or n.name in kept:
            continue
        sources = [producer.get(t) for t in n.input if t and types.get(t) == FLOAT and t not in inits]
        if sources and all(p is not None and p.name in kept for p in sources):
            kept[n.name] = {"op": n.op_type, "reason": "follows",
                            "detail": f"reads only kept nodes' outputs ({sources[0].name!r})"}


class _Writer:
    """One conversion: the graph being rewritten and the Casts / reduced weights it added (shared per tensor)."""

    def __init__(self, model, fmt: Format, low_nodes: set[str], low_io: bool, emulate: bool, types: dict):
        self.m, self.fmt, self.low_nodes, self.low_io, self.emulate = model, fmt, low_nodes, low_io, emulate
        self.g = model.graph
        self.types = types
        self.inits = {t.name: t for t in self.g.initializer}
        self.graph_inputs = {i.name for i in self.g.input}
        self.producer = {o: n for n in self.g.node for o in n.output if o}
        self.new_nodes: list = []
        self._casts: dict[tuple[str, str], str] = {}
        self._weights: dict[str, str] = {}

    def is_float(self, t: str) -> bool:
        return bool(t) and self.types.get(t) == FLOAT

    def reduced_home(self, t: str) -> bool:
        """Whether tensor ``t`` is held in the reduced format (before any Cast is added)."""
        if t in self.graph_inputs:
            return self.low_io
        p = self.producer.get(t)
        return p is not None and p.name in self.low_nodes

    def _cast(self, src: str, dst: str, to: int, name: str):
        from onnx import helper

        self.new_nodes.append(helper.make_node("Cast", [src], [dst], to=to, name=name))

    def to_reduced(self, t: str) -> str:
        """``t`` (fp32) as the reduced format: a Cast, or in emulation a Cast there and back (rounding)."""
        key = (t, "low")
        if key not in self._casts:
            out = f"{t}_to_{self.fmt}"
            if self.emulate:
                self._cast(t, f"{out}_stored", self.fmt.elem_type, f"{out}_Cast")
                self._cast(f"{out}_stored", out, FLOAT, f"{out}_CastBack")
            else:
                self._cast(t, out, self.fmt.elem_type, f"{out}_Cast")
            self._casts[key] = out
        return self._casts[key]

    def to_fp32(self, t: str) -> str:
        """``t`` (reduced) as fp32; in emulation it already is (rounded values in fp32)."""
        if self.emulate:
            return t
        key = (t, "fp32")
        if key not in self._casts:
            out = f"{t}_to_fp32"
            self._cast(t, out, FLOAT, f"{out}_Cast")
            self._casts[key] = out
        return self._casts[key]

    def reduced_weight(self, name: str) -> str:
        """A reduced copy of initializer ``name`` (rounded fp32 values in emulation)."""
        from onnx import numpy_helper

        if name not in self._weights:
            values = numpy_helper.to_array(self.inits[name])
            stored = self.fmt.round(values) if self.emulate else self.fmt.store(values)
            new = f"{name}_{self.fmt}"
            self.g.initializer.append(numpy_helper.from_array(stored, new))
            self._weights[name] = new
        return self._weights[name]

    def retype_attribute(self, node) -> None:
        """A reduced Cast-to-float, Constant or ConstantOfShape now makes the reduced format."""
        from onnx import numpy_helper

        if self.emulate:
            return  # outputs are rounded after the node instead
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                a.i = self.fmt.elem_type
            elif a.name == "value" and a.t.data_type == FLOAT and node.op_type in ("Constant", "ConstantOfShape"):
                a.t.CopyFrom(numpy_helper.from_array(self.fmt.store(numpy_helper.to_array(a.t)), a.t.name))

    def rename_output(self, node, k: int, new: str) -> None:
        old = node.output[k]
        node.output[k] = new
        for n in itertools.chain(self.g.node, self.new_nodes):
            if n is node:
                continue
            for i, name in enumerate(n.input):
                if name == old:
                    n.input[i] = new


def convert(model, fmt: Format, keep: "dict[str, dict] | Iterable[str]" = (), low_io: bool = False,
            emulate: bool = False) -> ReducedGraph:
    """A copy of ``model`` in ``fmt`` with the nodes in ``keep`` (names; or name -> reason record) and the policy
    nodes in fp32. Passes the full ONNX checker (nodes topologically sorted)."""
    import onnx

    keep = dict(keep) if isinstance(keep, dict) else {k: {"reason": "user", "detail": "--keep-fp32"} for k in keep}
    m = copy.deepcopy(model)
    name_nodes(m)
    if not emulate and default_opset(m) < fmt.min_opset:
        m = onnx.version_converter.convert_version(m, fmt.min_opset)
    del m.graph.value_info[:]
    types = tensor_types(m)
    ops = {n.name: n.op_type for n in m.graph.node}
    kept = {name: {"op": ops.get(name, "?"), **why} for name, why in keep.items()}
    for name, why in policy_reasons(m, fmt, types).items():
        kept.setdefault(name, why)
    follow_kept(m, kept, types)
    low = {n.name for n in compute_nodes(m, types) if n.name not in kept}
    w = _Writer(m, fmt, low, low_io and not emulate, emulate, types)  # emulation: fp32 I/O, rounded at the edge
    opset = default_opset(m)

    for node in list(m.graph.node):
        reduced = node.name in low
        fixed = _fixed_float_inputs(onnx.defs.get_schema(node.op_type, opset, node.domain), len(node.input)) \
            if reduced and node.domain in ("", "ai.onnx") else set()
        for i, t in enumerate(node.input):
            if not w.is_float(t):
                continue
            want_low = reduced and i not in fixed
            if t in w.inits and t not in w.graph_inputs:
                if want_low:
                    node.input[i] = w.reduced_weight(t)
                continue
            have_low = w.reduced_home(t)
            if want_low and not have_low:
                node.input[i] = w.to_reduced(t)
            elif have_low and not want_low:
                node.input[i] = w.to_fp32(t)
        if reduced:
            w.retype_attribute(node)

    renamed = {}
    if emulate:  # every reduced node's float output is rounded right after the node, under its original name
        for node in list(m.graph.node):
            if node.name not in low:
                continue
            for k, o in enumerate(node.output):
                if w.is_float(o):
                    node.output[k] = f"{o}_unrounded"
                    w._cast(node.output[k], f"{o}_stored", fmt.elem_type, f"{o}_Cast")
                    w._cast(f"{o}_stored", o, FLOAT, f"{o}_CastBack")
    else:
        for out in m.graph.output:
            p = w.producer.get(out.name)
            if p is None or not w.is_float(out.name):  # an input passed straight through keeps its type
                continue
            have_low = w.reduced_home(out.name)
            if have_low == low_io:
                continue
            new = f"{out.name}_{fmt}" if have_low else f"{out.name}_fp32"
            w.rename_output(p, list(p.output).index(out.name), new)
            renamed[out.name] = new
            w._cast(new, out.name, FLOAT if have_low else fmt.elem_type, f"{out.name}_Cast")
        for vi in itertools.chain(m.graph.input, m.graph.output):
            if low_io and vi.type.tensor_type.elem_type == FLOAT:
                vi.type.tensor_type.elem_type = fmt.elem_type
    m.graph.node.extend(w.new_nodes)
    prune_initializers(m)
    toposort(m)
    m = infer_shapes(m)
    return ReducedGraph(m, fmt, low_io, emulate, kept, renamed)


def check_written(path) -> None:
    """The full ONNX checker on a graph file just written (a failure is a bug in the writer)."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


def check_keep(model, names: Iterable[str], what: str = "--keep-fp32", graph_name: str = "the fp32 graph") -> None:
    """A ``UserError`` naming the first unknown node and a few valid names."""
    from ..errors import UserError

    m = copy.deepcopy(model)
    name_nodes(m)
    known = [n.name for n in compute_nodes(m)]
    for name in names:
        if name not in known:
            sample = ", ".join(known[:4])
            raise UserError(f"unknown {what} node {name!r}: {graph_name} has no such node; its {len(known)} nodes "
                            f"include {sample}, ...")
