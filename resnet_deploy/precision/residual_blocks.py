"""Which Convs are not body Convs, for the INT8 writers: the gates of squeeze-excitation / ECA blocks and a
classifier written as a 1x1 Conv (timm's ResNet-V2 head); and which input of a residual Add is the shortcut."""

from __future__ import annotations

from collections import deque

from ..onnx_graph import Graph

SHAPE_OPS = ("Reshape", "Expand", "Unsqueeze", "Squeeze", "Flatten")
GATES = ("Sigmoid", "HardSigmoid")
POOLS = ("ReduceMean", "GlobalAveragePool")


def gate_convs(model) -> dict[str, str]:
    """Conv name -> the Mul it gates, for every Conv on an SE / ECA gate path: pooled ``x`` -> Convs / Relu ->
    Sigmoid -> (Reshape / Expand) -> Mul with ``x`` itself."""
    idx = Graph(model)
    out: dict[str, str] = {}
    for mul in (n for n in model.graph.node if n.op_type == "Mul" and len(n.input) == 2):
        for k in (0, 1):
            node = idx.producer(mul.input[k])
            while node is not None and node.op_type in SHAPE_OPS:
                node = idx.producer(node.input[0])
            if node is None or node.op_type not in GATES:
                continue
            convs = []
            node = idx.producer(node.input[0])
            while node is not None and node.op_type in ("Conv", "Relu", *SHAPE_OPS):
                if node.op_type == "Conv":
                    convs.append(node.name)
                node = idx.producer(node.input[0])
            if convs and node is not None and node.op_type in POOLS and node.input[0] == mul.input[1 - k]:
                out.update({c: mul.name for c in convs})
    return out


def head_convs(model) -> set[str]:
    """Convs whose output reaches a graph output through shape ops only: a classifier written as a 1x1 Conv."""
    idx = Graph(model)
    outputs = {o.name for o in model.graph.output}
    found = set()
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        t = conv.output[0]
        while t not in outputs:
            readers = idx.consumers_of(t)
            if len(readers) != 1 or readers[0].op_type not in SHAPE_OPS:
                break
            t = readers[0].output[0]
        if t in outputs:
            found.add(conv.name)
    return found


def _hops(idx: Graph, tensor: str) -> dict[str, int]:
    """Every tensor ``tensor`` is computed from, with the fewest nodes between them (0 for itself)."""
    dist = {tensor: 0}
    todo = deque([tensor])
    while todo:
        t = todo.popleft()
        node = idx.producer(t)
        if node is None:
            continue
        for i in node.input:
            if i and i not in idx.inits and i not in dist:
                dist[i] = dist[t] + 1
                todo.append(i)
    return dist


def residual_branches(idx: Graph, add) -> tuple[str, str] | None:
    """(main-branch input, shortcut input) of a residual Add, or None when it is not one.

    The two inputs are traced back to where they split; the shortcut is the one with fewer nodes since the split:
    none for an identity shortcut, a Conv (torchvision's downsample), AvgPool -> Conv (ResNet-D), a Conv reading
    the pre-activation (ResNet-V2). The main branch ends in a Conv, or in an SE / ECA block's Mul.
    """
    if len(add.input) != 2 or add.input[0] == add.input[1] or any(t in idx.inits for t in add.input):
        return None
    a, b = add.input
    da, db = _hops(idx, a), _hops(idx, b)
    common = set(da) & set(db)
    if not common:
        return None
    split = min(common, key=lambda t: da[t] + db[t])
    if da[split] == db[split]:
        return None
    return (a, b) if da[split] > db[split] else (b, a)
