"""The INT8 accuracy budget: measure the INT8 graph against eager fp32 on held-out data, and back off when over
budget (``--max-drop``, in percentage points).

Over budget, every Conv is ranked by its *own* quantization error (its output with only its input and weights
quantized, against its fp32 output, both computed inside one ONNX Runtime session), and the most sensitive
ones stay in higher precision: 1, 2, 4, ... layers until the budget is met or half the Convs are excluded.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError
from ..onnx_graph import FLOAT, Graph, expose_outputs, toposort
from ..backends.onnxruntime import GRAPH_BATCH, run_graph
from ..validate import nonfinite_summary, topk_accuracy
from .quantize_common import (QuantizedGraph, asymmetric_uint8, dequantized_initializer, qdq_pair,
                              quantize_weight_per_channel, symmetric_scale)

log = logging.getLogger(__name__)

SENSITIVITY_SAMPLES = 32
EVAL_BATCH = GRAPH_BATCH


def check_max_drop(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    if not math.isfinite(v) or v < 0:
        raise UserError(f"--max-drop {value!r} must be a non-negative number of percentage points, e.g. 1.0")
    return v


def too_few_to_judge(samples: int, max_drop: float) -> str | None:
    """Why a missed budget says little when the gate set is tiny: one changed prediction moves the drop by
    100 / ``samples`` points, so below ``100 / max_drop`` samples a single image decides (None otherwise)."""
    if samples < 1 or max_drop <= 0 or 100.0 / samples <= max_drop:
        return None
    return (f"the accuracy gate had only {samples} samples, so one changed prediction is {100.0 / samples:.2f} "
            f"points: too few to judge a {max_drop:g}-point budget; give at least {math.ceil(100.0 / max_drop)} "
            "held-out images with --val DIR, or raise --max-drop")


@dataclass
class Accuracy:
    """Fractions, as everywhere else: top-1/top-5 against labels (when there are labels) and top-1 agreement with
    eager fp32. Only the budget and the drop are in percentage points."""

    samples: int
    agreement: float
    top1: float | None = None
    top5: float | None = None
    nonfinite: str | None = None  # NaN/Inf in the logits: counts as total loss, never a pass

    def to_dict(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def accuracy(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> Accuracy:
    """Agreement with ``reference`` (and top-1/top-5 with labels); rows holding NaN/Inf count as wrong."""
    finite = np.isfinite(logits).all(axis=1)
    pred = np.where(finite, np.nan_to_num(logits).argmax(1), -1)
    acc = Accuracy(len(logits), float((pred == reference.argmax(1)).mean()),
                   nonfinite=nonfinite_summary(logits, "graph"))
    if labels is not None:
        acc.top1 = float((pred == labels).mean())
        acc.top5 = topk_accuracy(logits, labels, 5)
    return acc


def drop(fp32: Accuracy, candidate: Accuracy) -> float:
    """Percentage points of top-1 lost (labelled data) or of disagreement with eager (unlabelled); non-finite
    logits lose everything (100 points), whatever argmax would say."""
    if candidate.nonfinite:
        return 100.0
    if fp32.top1 is not None and candidate.top1 is not None:
        return (fp32.top1 - candidate.top1) * 100
    return (1.0 - candidate.agreement) * 100


def sensitivity(model, ranges: dict, data: np.ndarray, symmetric: bool) -> list[tuple[str, float]]:
    """Each Conv's relative output error (||y_q - y||^2 / ||y||^2) with only its own input and weights quantized."""
    from ..backends.onnxruntime import OnnxRuntimeRunner

    m = copy.deepcopy(model)
    idx = Graph(m)
    pairs = []
    for n in list(m.graph.node):
        if n.op_type != "Conv" or n.input[0] not in ranges:
            continue
        lo, hi = ranges[n.input[0]]
        scale, zp = (symmetric_scale(lo, hi), 0) if symmetric else asymmetric_uint8(lo, hi)
        x = qdq_pair(m, n.input[0], scale, zp, np.int8 if symmetric else np.uint8, suffix=f"_sens_{n.name}")
        q, s = quantize_weight_per_channel(idx.array(n.input[1]))
        w = dequantized_initializer(m, f"{n.input[1]}_sens_{n.name}", q, s, np.zeros(len(s), np.int8), axis=0)
        twin = copy.deepcopy(n)
        twin.name = f"{n.name}_sens"
        twin.input[0], twin.input[1] = x, w
        twin.output[0] = f"{n.output[0]}_sens"
        m.graph.node.append(twin)
        pairs.append((n.name, n.output[0], twin.output[0]))
    names = [t for _, a, b in pairs for t in (a, b)]
    expose_outputs(m, names, dict.fromkeys(names, FLOAT), in_place=True)
    toposort(m)
    num = {p[0]: 0.0 for p in pairs}
    den = {p[0]: 0.0 for p in pairs}
    with OnnxRuntimeRunner(m.SerializeToString(), graph_level="basic", single_use=True) as runner:
        for i in range(0, len(data), EVAL_BATCH):
            outs = dict(zip(names, runner.run_all(data[i:i + EVAL_BATCH], names)))
            for name, a, b in pairs:
                num[name] += float(np.sum((outs[b].astype(np.float64) - outs[a]) ** 2))
                den[name] += float(np.sum(outs[a].astype(np.float64) ** 2))
    errs = [(name, num[name] / max(den[name], 1e-30)) for name, _, _ in pairs]
    return sorted(errs, key=lambda e: -e[1])


@dataclass
class BudgetResult:
    graph: QuantizedGraph
    fp32: Accuracy
    int8: Accuracy
    drop: float
    passed: bool
    excluded: list[str] = field(default_factory=list)
    attempts: list[dict] = field(default_factory=list)
    ranking: list[tuple[str, float]] = field(default_factory=list)
    logits: np.ndarray | None = field(default=None, repr=False)  # the final graph's logits on the gate data


def quantize_within_budget(model, ranges: dict, quantize: Callable, symmetric: bool, data: np.ndarray,
                   reference: np.ndarray, labels: np.ndarray | None, max_drop: float) -> BudgetResult:
    """Quantize; while the drop exceeds ``max_drop``, keep more of the most sensitive Convs in fp32."""
    fp32 = accuracy(reference, reference, labels)
    graph = quantize(model, ranges)
    logits = run_graph(graph.model, data, EVAL_BATCH)
    acc = accuracy(logits, reference, labels)
    d = drop(fp32, acc)
    attempts = [{"excluded": 0, "drop_points": round(d, 3), **acc.to_dict()}]
    ranking: list = []
    excluded: list[str] = []
    n_convs = len(graph.quantized)
    k = 1
    while d > max_drop and k <= max(1, n_convs // 2):
        if not ranking:
            ranking = sensitivity(model, ranges, data[:SENSITIVITY_SAMPLES], symmetric)
            log.info("over budget (%.2f > %.2f points): most sensitive layers %s", d, max_drop, ranking[:4])
        excluded = [name for name, _ in ranking[:k]]
        graph = quantize(model, ranges, set(excluded))
        logits = run_graph(graph.model, data, EVAL_BATCH)
        acc = accuracy(logits, reference, labels)
        d = drop(fp32, acc)
        attempts.append({"excluded": k, "drop_points": round(d, 3), **acc.to_dict()})
        k *= 2
    return BudgetResult(graph, fp32, acc, d, d <= max_drop, excluded, attempts, ranking, logits)
