"""The fp16 / bf16 part of the precision stage: convert with the mixed-precision fallback, check against eager,
write the graph and record what stayed in fp32 and why.

How each graph is checked on this CPU (recorded as ``validated_by``): by its *emulation*
(``reduced_convert.convert(emulate=True)``), the same decisions in an fp32 graph in which every tensor the reduced graph
holds in fp16/bf16 is rounded to that format (Cast there and back) after each node: the numbers a reduced engine
with fp32 accumulation computes (an engine that fuses Conv+Add+Relu rounds less often, so it can only do better).
ONNX Runtime's CPU is no such engine: it has no bf16 Conv at all, and for an fp16 graph it computes the nodes that
lack fp16 kernels in fp32 and drops the Casts between them, so an fp16 activation that overflows (> 65504) may
never be rounded there. The written graph is run in ONNX Runtime too where it can be (fp16), and must meet the
bar there as well; where it cannot (bf16), the manifest says why.
"""

from __future__ import annotations

import logging

import numpy as np

from .. import layout, validate
from ..errors import UserError
from ..layout import Kind
from ..progress import step
from ..stages.reference import Reference
from ..backends.onnxruntime import run_graph
from . import fp32_fallback, int8_budget, reduced_convert
from .reduced_convert import BF16, FP16, Format, check_written

log = logging.getLogger(__name__)

EMULATION = ("onnxruntime-cpu emulation: the fp32 graph with every {fmt} tensor rounded to {fmt} (Cast to {fmt} "
             "and back) after each node: what a reduced-precision engine with fp32 accumulation computes")
# ONNX Runtime graph level: "basic" keeps the emulation's Cast pairs (checked: same logits as with no
# optimization); "all" removes some of them
CHECK_LEVEL = {False: "all", True: "basic"}
TARGETS = {"fp16": "portable", "bf16": "tensorrt"}  # bf16: for TensorRT; ONNX Runtime's CPU cannot run it


def user_keep(names) -> dict[str, dict]:
    """``--keep-fp32`` names as kept-node records."""
    return {n: {"reason": "user", "detail": "--keep-fp32"} for n in names}


def check_keep_fp32(model, names) -> None:
    """One line (exit 2) for an unknown ``--keep-fp32`` node of ``model`` (the fp32 ``ModelProto``), naming a few
    valid ones."""
    if names:
        reduced_convert.check_keep(model, names, graph_name=layout.FP32_ONNX)


def check_graph(model, data: np.ndarray, emulated: bool) -> np.ndarray:
    """Logits of a checked graph (the emulation, or the reduced graph itself) in ONNX Runtime (CPU)."""
    return run_graph(model, data, int8_budget.EVAL_BATCH, CHECK_LEVEL[emulated])


def add_reduced(bundle, fmt: Format, reference: Reference, held_out: Reference | None, keep_fp32=(),
                low_io: bool = False) -> dict:
    """Write ``model.<fmt>.onnx`` (fallback nodes in fp32) when it meets ``reference.bar(fmt)``; returns the manifest
    section. A graph that misses the bar even after the fallback raises ``PrecisionFailed`` (nothing written for
    it) with the attempts, the kept nodes and the last parity."""
    model = bundle.graph(layout.FP32_ONNX)  # the fused graph the fusion stage handed over (read, never changed)
    keep = user_keep(keep_fp32)
    if keep_fp32:
        reduced_convert.check_keep(model, keep_fp32, graph_name=layout.FP32_ONNX)
    data, eager = reference.inputs(), reference.logits()
    bar = reference.bar(str(fmt))
    with step(f"Converting to {str(fmt).upper()} and checking it vs eager (nodes missing the bar fall back to fp32)"):
        res = fp32_fallback.convert_within_bar(model, fmt, bar, data, eager, lambda m: check_graph(m, data, True),
                                               keep=keep, low_io=low_io, emulate=True)
    name = layout.reduced_onnx(fmt)
    out = {"file": name, "io": str(fmt) if low_io else "fp32 (Cast at the edges)",
           "validated_by": EMULATION.format(fmt=fmt), "kept_fp32": res.kept, "attempts": res.attempts,
           "top1_agreement": res.parity.top1_agreement, "spread_error": res.parity.spread_error,
           "cosine": res.parity.cosine}
    native, parity = None, res.parity
    if res.passed:
        with step(f"Running {name} itself in ONNX Runtime (CPU)"):
            native = run_native(res.graph, data, eager)
        if isinstance(native, validate.Parity):
            out["onnxruntime_cpu"] = native.to_dict()
            parity = native if not native.meets(bar) else parity
        else:
            out["onnxruntime_cpu"] = {"skipped": native}
    passed = parity.meets(bar)
    record = layout.validation_record(parity, bar, backend="onnxruntime-cpu", inputs=reference.describe(),
                                      batches=[int8_budget.EVAL_BATCH], validated_by=out["validated_by"],
                                      **({"onnxruntime_cpu": out["onnxruntime_cpu"]} if native is not None else {}))
    layout.record_validation(bundle.manifest, str(fmt), record)
    out["passed"] = passed
    if not passed:
        from ..errors import PrecisionFailed

        what = f"{fmt} graph vs eager" + (" (run by ONNX Runtime)" if parity is native else "")
        where = reference.locate_nonfinite(res.checked.model) if parity.nonfinite else None
        raise PrecisionFailed(str(fmt), f"{validate.failure_message(what, parity, bar, where)}, even with "
                              f"{len(res.kept)} node(s) kept in fp32 after {len(res.attempts)} attempt(s); {name} "
                              "not written", {**out, "file": None})
    if held_out is not None:  # accuracy on the held-out set, as for INT8 (recorded, not gated)
        ref = held_out.logits()
        fp32 = int8_budget.accuracy(ref, ref, held_out.labels)
        acc = int8_budget.accuracy(check_graph(res.checked.model, held_out.inputs(), True), ref, held_out.labels)
        out.update({"fp32": fp32.to_dict(), str(fmt): acc.to_dict(),
                    "drop_points": round(int8_budget.drop(fp32, acc), 3)})
    bundle.add_graph(name, res.graph.model, external=False, kind=Kind.ONNX, precision=str(fmt),
                     target=TARGETS[str(fmt)], io=str(fmt) if low_io else "fp32", kept_fp32=len(res.kept))
    check_written(bundle.path / name)
    return out


def run_native(graph: reduced_convert.ReducedGraph, data: np.ndarray, eager: np.ndarray) -> "validate.Parity | str":
    """The graph itself in ONNX Runtime (CPU) against eager; or why ONNX Runtime cannot run it (e.g. no bf16 Conv
    kernel), as a string."""
    try:
        logits = check_graph(graph.model, data, False)
    except Exception as e:  # noqa: BLE001 - NOT_IMPLEMENTED and the like: recorded, the emulation stands
        return "ONNX Runtime cannot run it: " + str(e).strip().splitlines()[0][:200]
    return validate.compare(eager, logits, candidate_name=f"{graph.format} graph in ONNX Runtime")


def check_formats(fp16: bool, bf16: bool, fp16_io: bool, keep_fp32) -> None:
    """Option combinations, before any work."""
    if fp16_io and not fp16:
        raise UserError("--fp16-io only applies with --fp16")
    if keep_fp32 and not (fp16 or bf16):
        raise UserError("--keep-fp32 only applies with --fp16 or --bf16")
