"""The fp16 / bf16 part of the precision stage: convert with the mixed-precision fallback, check against eager,
write the graph and record what stayed in fp32 and why; and OpenVINO's bf16 run of the fp32 graph.

How each graph is checked on this CPU (recorded as ``validated_by``):

- fp16: ONNX Runtime runs ``model.fp16.onnx`` itself (on x86 it computes fp16 nodes that lack fp16 kernels in
  fp32 between Casts it inserts: fp16 storage, fp32 arithmetic).
- bf16: ONNX Runtime's CPU has no bf16 Conv, so unless it can run ``model.bf16.onnx`` the check runs its
  emulation (``reduced.convert(emulate=True)``): the same graph in fp32 with every tensor the bf16 graph holds in
  bf16 rounded to bf16 (Cast there and back), i.e. what a bf16 engine with fp32 accumulation computes, rounding
  after every node (an engine that fuses Conv+Add+Relu rounds less often, so it can only do better).
"""

from __future__ import annotations

import logging

import numpy as np

from .. import layout, validate
from ..bundle import locate
from ..errors import UserError
from ..layout import Kind
from ..progress import step
from ..reference import Reference
from . import budget, fallback, reduced
from .reduced import BF16, FP16, Format

log = logging.getLogger(__name__)

EMULATION = ("onnxruntime-cpu emulation: the fp32 graph with every bf16 tensor rounded to bf16 (Cast to bf16 and "
             "back) after each node, as a bf16 engine with fp32 accumulation computes")
NATIVE = "onnxruntime-cpu running the {fmt} graph itself"
# ONNX Runtime graph level for checked graphs: "basic" keeps the emulation's Cast pairs (its later levels may
# remove Casts that look redundant)
CHECK_LEVEL = {False: "all", True: "basic"}
TARGETS = {"fp16": "portable", "bf16": "tensorrt"}  # bf16: for TensorRT; ONNX Runtime's CPU cannot run it


def user_keep(names) -> dict[str, dict]:
    """``--keep-fp32`` names as kept-node records."""
    return {n: {"reason": "user", "detail": "--keep-fp32"} for n in names}


def check_keep_fp32(model_path, names) -> None:
    """One line (exit 2) for an unknown ``--keep-fp32`` node, naming a few valid ones."""
    import onnx

    if names:
        reduced.check_keep(onnx.load(str(model_path)), names, graph_name=layout.FP32_ONNX)


def run_graph(model, data: np.ndarray, emulated: bool) -> np.ndarray:
    from ..backends.onnxruntime import OnnxRuntimeRunner

    with OnnxRuntimeRunner(model.SerializeToString(), graph_level=CHECK_LEVEL[emulated]) as runner:
        return validate.run_batches(runner, data, budget.EVAL_BATCH)


def ort_runs(graph: reduced.ReducedGraph, sample: np.ndarray) -> str | None:
    """None when ONNX Runtime (CPU) runs ``graph``, else its error's first line."""
    try:
        run_graph(graph.model, sample, emulated=False)
    except Exception as e:  # noqa: BLE001 - e.g. NOT_IMPLEMENTED: no bf16 kernel for Conv
        return str(e).strip().splitlines()[0][:200]
    return None


def add_reduced(bundle, fmt: Format, reference: Reference, held_out: Reference | None, keep_fp32=(),
                low_io: bool = False) -> dict:
    """Write ``model.<fmt>.onnx`` (fallback nodes in fp32) when it meets ``reference.bar(fmt)``; returns the manifest
    section. A graph that misses the bar even after the fallback raises ``PrecisionFailed`` (nothing written for
    it) with the attempts, the kept nodes and the last parity."""
    import onnx

    from ..errors import PrecisionFailed

    model = onnx.load(str(locate(bundle, layout.FP32_ONNX)))
    keep = user_keep(keep_fp32)
    if keep_fp32:
        reduced.check_keep(model, keep_fp32, graph_name=layout.FP32_ONNX)
    data, eager = reference.inputs(), reference.logits()
    emulate, why_emulated = False, None
    if fmt is BF16:
        why_emulated = ort_runs(reduced.convert(model, fmt, keep), data[:1])
        emulate = why_emulated is not None
    bar = reference.bar(str(fmt))
    with step(f"Converting to {fmt} and checking it vs eager (nodes that miss the bar fall back to fp32)"):
        res = fallback.convert_within_bar(model, fmt, bar, data, eager,
                                          lambda m: run_graph(m, data, emulate), keep=keep, low_io=low_io,
                                          emulate=emulate)
    name = layout.reduced_onnx(fmt)
    validated_by = EMULATION if emulate else NATIVE.format(fmt=fmt)
    record = layout.validation_record(res.parity, bar, backend="onnxruntime-cpu" + (" (bf16 emulated)" if emulate
                                                                                     else ""),
                                      inputs=reference.describe(), batches=[budget.EVAL_BATCH],
                                      validated_by=validated_by)
    layout.record_validation(bundle.manifest, str(fmt), record)
    out = {"file": name, "io": str(fmt) if low_io else "fp32 (Cast at the edges)", "passed": res.passed,
           "validated_by": validated_by, **({"emulated_because": why_emulated} if emulate else {}),
           "kept_fp32": res.kept, "attempts": res.attempts, "cosine": res.parity.cosine,
           "top1_agreement": res.parity.top1_agreement}
    if not res.passed:
        msg = validate.failure_message(f"{fmt} graph vs eager", res.parity, bar,
                                       reference.locate_nonfinite(res.checked.model) if res.parity.nonfinite else None)
        raise PrecisionFailed(f"{msg}, even with {len(res.kept)} node(s) kept in fp32 after {len(res.attempts)} "
                              f"attempt(s); {name} not written", precision=str(fmt), record=out)
    if held_out is not None:  # accuracy on the held-out set, as for INT8 (recorded, not gated)
        ref = held_out.logits()
        fp32 = budget.accuracy(ref, ref, held_out.labels)
        acc = budget.accuracy(run_graph(res.checked.model, held_out.inputs(), emulate), ref, held_out.labels)
        out.update({"fp32": fp32.to_dict(), str(fmt): acc.to_dict(), "drop_points": round(budget.drop(fp32, acc), 3)})
    reduced.save(res.graph, bundle.path / name)
    bundle.add_file(name, kind=Kind.ONNX, precision=str(fmt), target=TARGETS[str(fmt)],
                    io=str(fmt) if low_io else "fp32", kept_fp32=len(res.kept))
    return out


def add_openvino_bf16(bundle, reference: Reference, required: bool) -> dict:
    """OpenVINO's bf16 run of the fp32 graph: checked and recorded, or skipped with a note on CPUs without bf16.
    ``required`` (``--bf16`` given): a miss raises ``PrecisionFailed``; else it is recorded and warned about."""
    from .. import openvino_stage
    from ..errors import PrecisionFailed

    note = openvino_stage.bf16_unsupported()
    if note:
        log.info("OpenVINO bf16 skipped: %s", note)
        return {"skipped": note}
    record, parity = openvino_stage.check_bf16(bundle, reference)
    out = {"artifact": record["artifact"], "inference_precision": "bf16", "passed": record["passed"],
           "validation": layout.inference_validation(record["artifact"], "bf16"), "cosine": parity.cosine,
           "top1_agreement": parity.top1_agreement}
    if not record["passed"] and required:
        raise PrecisionFailed(validate.failure_message(f"OpenVINO bf16 run of {record['artifact']} vs eager", parity,
                                                       reference.bar("bf16")), precision="bf16", record=out)
    return out


def check_formats(fp16: bool, bf16: bool, fp16_io: bool, keep_fp32) -> None:
    """Option combinations, before any work."""
    if fp16_io and not fp16:
        raise UserError("--fp16-io only applies with --fp16")
    if keep_fp32 and not (fp16 or bf16):
        raise UserError("--keep-fp32 only applies with --fp16 or --bf16")


FORMATS = {"fp16": FP16, "bf16": BF16}
