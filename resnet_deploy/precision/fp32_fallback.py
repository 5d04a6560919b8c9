"""Mixed precision: keep in fp32 the nodes that make a reduced-precision graph miss its bar, and say why.

In the spirit of the INT8 budget (``int8_budget.py``): convert, check against eager, and while the bar is missed keep
more nodes in fp32, in this order, re-checking after each step (at most ``MAX_ATTEMPTS`` checks):

1. **range**: nodes that read or write a tensor out of the format's range on the reference inputs: larger than
   its largest finite value (``overflow``: fp16's 65504), or whose nonzero values mostly flush to zero or fall
   below the smallest normal (``underflow``); weights too; and the first nodes whose reduced output is NaN/Inf
   while their inputs are finite (``non-finite``). A tensor is held in fp32 only if its producer and all its
   consumers are, so all of them are kept.
2. **normalization / reduction** ops (``NORM_REDUCE_OPS``): sums over many values, where rounding accumulates.
3. **error**: the nodes whose own error stands out. Both graphs (the reduced one, or its emulation) run in ONNX
   Runtime with every intermediate tensor exposed on the reference inputs and are compared node by node: a node's
   *added* error is its output's relative RMS error against fp32 minus the largest of its inputs'. Nodes adding
   more than ``OUTLIER_FACTOR`` times the median (at most ``MAX_OUTLIERS``) are kept in one step.
4. **tail**: the last 1, 2, 4, ... compute nodes before the output, growing backwards (each recorded with its
   node-by-node error). Keeping a node alone in the middle of a reduced graph removes only its weights'
   rounding: the next reduced node rounds its output again through the Cast. A growing fp32 tail removes every
   rounding after its start, so each step can only help (keeping the ranked nodes one by one did not: on a
   small-logits resnet18 it made cosine worse at some steps).

The statistics come from ``ANALYSIS_SAMPLES`` reference inputs, run ``ANALYSIS_BATCH`` at a time so that a large
model's intermediates fit in memory.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import validate
from ..backends.onnxruntime import graph_outputs
from ..onnx_graph import FLOAT, Graph, appended, expose_outputs, name_nodes, tensor_types
from ..validate import Bar, Parity
from .reduced_convert import LAYOUT_OPS, Format, ReducedGraph, compute_nodes, convert

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 10  # checks against eager, the first (nothing kept beyond the user's and the policy's) included
ANALYSIS_SAMPLES = 8
ANALYSIS_BATCH = 1  # every intermediate of the batch is an output at once: one image keeps that small
FLUSH_LIMIT = 0.01  # share of a tensor's nonzero values that the format rounds to zero
SUBNORMAL_LIMIT = 0.25  # share of a tensor's nonzero values below the format's smallest normal (precision lost)
MIN_ADDED_ERROR = 1e-6  # a node adding less relative error than this is not worth keeping
OUTLIER_FACTOR = 10.0
MAX_OUTLIERS = 4
NORM_REDUCE_OPS = ("BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
                   "LpNormalization", "MeanVarianceNormalization", "GlobalAveragePool", "GlobalLpPool",
                   "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum",
                   "ReduceLogSumExp", "ReduceProd", "CumSum")


@dataclass
class ReducedTensorStats:
    """One tensor over the analysis inputs: its fp32 range, what the format would flush, and the reduced graph's
    error against fp32."""

    max_abs: float = 0.0
    nonzero: int = 0
    flush: int = 0
    subnormal: int = 0
    err2: float = 0.0
    ref2: float = 0.0
    reduced_nonfinite: bool = False
    reference_nonfinite: bool = False

    def add_reference(self, x: np.ndarray, fmt: Format) -> None:
        a = np.abs(x.astype(np.float64, copy=False))
        finite = np.isfinite(a)
        self.reference_nonfinite |= not bool(finite.all())
        a = a[finite]
        if a.size:
            self.max_abs = max(self.max_abs, float(a.max()))
        nz = a[a > 0]
        self.nonzero += int(nz.size)
        self.flush += int((nz < fmt.min_subnormal / 2).sum())
        self.subnormal += int((nz < fmt.min_normal).sum())

    def add_error(self, ref: np.ndarray, got: np.ndarray) -> None:
        r, g = ref.astype(np.float64, copy=False), got.astype(np.float64, copy=False)
        if not np.isfinite(g).all():
            self.reduced_nonfinite = True
            return
        self.err2 += float(((g - r) ** 2).sum())
        self.ref2 += float((r ** 2).sum())

    @property
    def rel_error(self) -> float:
        if self.reduced_nonfinite:
            return math.inf
        return math.sqrt(self.err2 / self.ref2) if self.ref2 > 0 else (0.0 if self.err2 == 0 else math.inf)

    def range_problem(self, fmt: Format) -> tuple[str, str] | None:
        """``(reason, detail)`` when the format cannot hold this tensor's values."""
        if self.max_abs > fmt.max_finite:
            return "overflow", f"max |x| {self.max_abs:.3g} > {fmt} max {fmt.max_finite:.6g}"
        if self.nonzero and self.flush / self.nonzero > FLUSH_LIMIT:
            return "underflow", f"{self.flush / self.nonzero:.1%} of its nonzero values flush to 0 in {fmt}"
        if self.nonzero and self.subnormal / self.nonzero > SUBNORMAL_LIMIT:
            return "underflow", (f"{self.subnormal / self.nonzero:.1%} of its nonzero values are below {fmt}'s "
                                 f"smallest normal {fmt.min_normal:.3g}")
        return None


def _weight_stats(array: np.ndarray, fmt: Format) -> ReducedTensorStats:
    s = ReducedTensorStats()
    s.add_reference(array, fmt)
    return s


@dataclass
class Analysis:
    """Per-tensor statistics of the fp32 graph and of one reduced graph on the same inputs."""

    stats: dict[str, ReducedTensorStats]
    weights: dict[str, ReducedTensorStats]


def analyze(fp32_model, reduced: ReducedGraph, data: np.ndarray) -> Analysis:
    """Run both graphs with every float node output exposed and gather ``ReducedTensorStats`` per original
    tensor."""
    fmt = reduced.format
    types = tensor_types(fp32_model)
    nodes = compute_nodes(fp32_model, types)
    inputs = [i.name for i in fp32_model.graph.input if types.get(i.name) == FLOAT]
    tensors = list(dict.fromkeys([*inputs, *(o for n in nodes for o in n.output if types.get(o) == FLOAT)]))
    stats = {t: ReducedTensorStats() for t in tensors}
    # both graphs get their tensors exposed in place for their sessions and back as they were (no weight copies)
    with appended(fp32_model) as ref, appended(reduced.model) as red:
        expose_outputs(ref, tensors, in_place=True)
        expose_outputs(red, [reduced.tensor(t) for t in tensors], in_place=True)
        batches = zip(graph_outputs(ref, data, ANALYSIS_BATCH), graph_outputs(red, data, ANALYSIS_BATCH))
        first = next(batches, None)  # both sessions exist now: the graphs can be given back
    for ref_out, red_out in itertools.chain([first] if first is not None else [], batches):
        for t in tensors:
            stats[t].add_reference(ref_out[t], fmt)
            # an input reaches the reduced graph's nodes rounded at the edge: that is its error
            got = fmt.round(ref_out[t]) if t in inputs else red_out.get(reduced.tensor(t))
            if got is not None:
                stats[t].add_error(ref_out[t], got)
    from onnx import numpy_helper

    weights = {w.name: _weight_stats(numpy_helper.to_array(w), fmt) for w in fp32_model.graph.initializer
               if w.data_type == FLOAT}
    return Analysis(stats, weights)


@dataclass
class Candidate:
    node: str
    op: str
    reason: str
    detail: str
    score: float = 0.0

    def record(self) -> dict:
        return {"op": self.op, "reason": self.reason, "detail": self.detail}


def range_candidates(model, analysis: Analysis, fmt: Format) -> list[Candidate]:
    """Producer and consumers of every out-of-range tensor (activations and weights), and the first nodes whose
    reduced output is non-finite while their inputs are finite."""
    idx = Graph(model)
    nodes = compute_nodes(model)
    names = {n.name for n in nodes}

    def consumers(t: str) -> list:
        return [n for n in idx.consumers_of(t) if n.name in names]

    out: dict[str, Candidate] = {}

    def flag(n, reason, detail):
        out.setdefault(n.name, Candidate(n.name, n.op_type, reason, detail))

    for n in nodes:
        for t in n.output:
            s = analysis.stats.get(t)
            problem = s.range_problem(fmt) if s is not None else None
            if problem:
                for m in [n, *consumers(t)]:
                    flag(m, problem[0], f"tensor {t!r}: {problem[1]}")
    for i in model.graph.input:
        s = analysis.stats.get(i.name)
        problem = s.range_problem(fmt) if s is not None else None
        if problem:
            for m in consumers(i.name):
                flag(m, problem[0], f"input {i.name!r}: {problem[1]}")
    for name, s in analysis.weights.items():
        problem = s.range_problem(fmt)
        if problem:
            for m in consumers(name):
                flag(m, problem[0], f"weight {name!r}: {problem[1]}")
    for n in nodes:
        outs = [analysis.stats[t] for t in n.output if t in analysis.stats]
        ins = [analysis.stats[t] for t in n.input if t in analysis.stats]
        if any(s.reduced_nonfinite and not s.reference_nonfinite for s in outs) \
                and not any(s.reduced_nonfinite for s in ins):
            flag(n, "non-finite", f"its {fmt} output holds NaN/Inf where fp32 is finite")
    return list(out.values())


def policy_candidates(model) -> list[Candidate]:
    return [Candidate(n.name, n.op_type, "normalization" if "Norm" in n.op_type else "reduction",
                      f"{n.op_type} sums over many values") for n in compute_nodes(model)
            if n.op_type in NORM_REDUCE_OPS]


def error_outliers(model, analysis: Analysis) -> list[Candidate]:
    """The nodes adding far more error than the typical node (``OUTLIER_FACTOR`` x the median), worst first."""
    ranking = error_ranking(model, analysis)
    if len(ranking) < 3:
        return ranking[:MAX_OUTLIERS]
    median = float(np.median([c.score for c in ranking]))
    return [c for c in ranking if c.score > OUTLIER_FACTOR * median][:MAX_OUTLIERS]


def tail(model, analysis: Analysis) -> list[Candidate]:
    """Compute nodes from the output backwards, each with its node-by-node error (for the record)."""
    out = []
    for n in reversed(compute_nodes(model)):
        e = max((analysis.stats[t].rel_error for t in n.output if t in analysis.stats), default=0.0)
        out.append(Candidate(n.name, n.op_type, "tail", f"in the fp32 tail (its output's relative error in the "
                                                        f"reduced graph was {e:.2e})", e))
    return out


def error_ranking(model, analysis: Analysis) -> list[Candidate]:
    """Nodes by the relative error they add (their output's minus their inputs' worst), largest first."""
    out = []
    for n in compute_nodes(model):
        outs = [analysis.stats[t].rel_error for t in n.output if t in analysis.stats]
        if not outs:
            continue
        ins = [analysis.stats[t].rel_error for t in n.input if t in analysis.stats]
        worst_out, worst_in = max(outs), max(ins, default=0.0)
        added = worst_out - worst_in if math.isfinite(worst_out) and math.isfinite(worst_in) else 0.0
        if added > MIN_ADDED_ERROR:
            out.append(Candidate(n.name, n.op_type, "error", f"adds {added:.2e} relative error (output "
                                                             f"{worst_out:.2e}, inputs {worst_in:.2e})", added))
    return sorted(out, key=lambda c: -c.score)


def take_tail(remaining: list[Candidate], n: int) -> list[Candidate]:
    """The next ``n`` nodes of the tail that round something, with the data-movement nodes among them for free."""
    out, counted = [], 0
    for c in remaining:
        if counted >= n:
            break
        out.append(c)
        counted += c.op not in LAYOUT_OPS
    return out


@dataclass
class FallbackResult:
    """The graph to write (converted with the final kept set), the graph that was checked (the same, or its
    emulation), how it compared with eager, and the attempts."""

    graph: ReducedGraph
    checked: ReducedGraph
    parity: Parity
    passed: bool
    kept: dict[str, dict]
    attempts: list[dict] = field(default_factory=list)


def _attempt(step: str, added: list[Candidate], kept: dict, parity: Parity, bar: Bar) -> dict:
    return {"step": step, "added": [c.node for c in added], "kept_fp32": len(kept), "passed": parity.meets(bar),
            **{k: v for k, v in parity.to_dict().items() if k != "samples"}}


def convert_within_bar(model, fmt: Format, bar: Bar, data: np.ndarray, reference: np.ndarray,
                       run: Callable[[object], np.ndarray], *, keep: dict | None = None, low_io: bool = False,
                       emulate: bool = False, max_attempts: int = MAX_ATTEMPTS) -> FallbackResult:
    """Convert ``model`` to ``fmt`` and, while its logits on ``data`` miss ``bar`` against ``reference`` (eager),
    keep more nodes in fp32 (module docstring). ``run(model) -> logits`` runs a checked graph; ``emulate`` checks
    the emulation graph (``reduced_convert.convert(emulate=True)``) instead of the graph written. ``keep``: node ->
    reason record (the user's ``--keep-fp32``)."""
    names = [n.name for n in model.graph.node]
    if not all(names) or len(set(names)) != len(names):  # nodes are addressed by name: name a copy
        model = copy.deepcopy(model)
        name_nodes(model)
    # else ``model`` is only read (a bundle's graph is shared with later stages; every conversion copies it)
    kept = dict(keep or {})
    attempts: list[dict] = []

    def check(step: str, added: list[Candidate]):
        checked = convert(model, fmt, kept, low_io, emulate=emulate)
        parity = validate.compare(reference, run(checked.model), candidate_name=f"{fmt} graph")
        attempts.append(_attempt(step, added, checked.kept, parity, bar))
        log.info("%s attempt %d (%s): %d node(s) in fp32, %s", fmt, len(attempts), step, len(checked.kept), parity)
        return checked, parity

    checked, parity = check("convert", [])
    cache: dict = {}

    def analysis() -> Analysis:  # of the graph checked last, computed at most once per graph
        if cache.get("graph") is not checked:
            cache.update(graph=checked, analysis=analyze(model, checked, data[:ANALYSIS_SAMPLES]))
        return cache["analysis"]

    steps = [("range", lambda: range_candidates(model, analysis(), fmt)), ("policy", lambda: policy_candidates(model)),
             ("error", lambda: error_outliers(model, analysis()))]
    ranking: list[Candidate] | None = None
    k, in_tail, limit = 1, 0, max(1, len(compute_nodes(model)) // 2)  # the tail stops at half the graph
    while not parity.meets(bar) and len(attempts) < max_attempts:
        if steps:
            step, find = steps.pop(0)
            new = [c for c in find() if c.node not in checked.kept]
        else:
            step = "tail"
            if ranking is None:
                ranking = tail(model, analysis())
            new = take_tail([c for c in ranking if c.node not in checked.kept], min(k, limit - in_tail))
            k, in_tail = k * 2, in_tail + len(new)
            if not new:
                break
        if new:
            for c in new:
                kept[c.node] = c.record()
            checked, parity = check(step, new)
    graph = checked if not emulate else convert(model, fmt, kept, low_io)
    return FallbackResult(graph, checked, parity, parity.meets(bar), checked.kept, attempts)
