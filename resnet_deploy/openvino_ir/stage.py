"""The OpenVINO stage: OpenVINO IR (``.xml`` + ``.bin``) of the bundle's fp32 graph and of its INT8 graph, each
checked against the reference in OpenVINO's CPU runtime, for OpenVINO's C++ runtime and Triton's openvino backend.

The INT8 IR is converted from the bundle's U8S8 QDQ graph (target ``onnxruntime``), which OpenVINO runs faster
than the symmetric TensorRT-shaped one (measured in benchmarks/results/cpu_peers*.md); OpenVINO reads explicit
Q/DQ and runs it as fast as a graph NNCF quantized itself. Weights stay as they are (no fp16 compression), so
the IR computes what the ONNX graph it came from computes.

bf16 (``check_bf16``): OpenVINO runs the fp32 IR (or the fp32 graph) with bf16 inference precision on CPUs with
AVX-512 BF16 or AMX, faster than fp32 there (measured in benchmarks/results/cpu_peers_quiet.md); that run is checked
against eager on the bf16 bar and recorded under ``layout.inference_validation(artifact, "bf16")``, and the
artifact's file entry lists ``bf16`` in ``inference_precisions`` (which ``bench`` reads). On other CPUs it is
skipped with a note.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .. import layout, validate
from ..bundle import find_artifacts, locate
from ..errors import PrecisionFailed, UserError
from ..layout import Kind
from ..progress import step
from ..stages.base import record_failure
from ..stages.reference import Reference
from ..types import Target

# Which ONNX graph each IR is converted from: (precision, kind, targets in order of preference).
SOURCES = (("fp32", (Target.PORTABLE,)), ("int8", (Target.ONNXRUNTIME, Target.TENSORRT)))
VALIDATION_BATCH = 8
NAME = "openvino"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenVinoOptions:
    """``write_ir``: IR of the precisions the bundle has a graph for (``--target openvino``); ``check_bf16``:
    OpenVINO's bf16 run of the fp32 IR or graph (``--bf16`` or ``--target openvino``), a failure when
    ``bf16_required`` (``--bf16``), else a warning."""

    write_ir: bool = True
    check_bf16: bool = False
    bf16_required: bool = False
    precisions: tuple = ("fp32", "int8")


@dataclass
class OpenVinoStageResult:
    files: list[str] = field(default_factory=list)
    validation: dict = field(default_factory=dict)  # IR name -> validation record
    bf16: dict | None = None  # OpenVINO's bf16 run, or why it was skipped
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def sources(manifest: dict, precisions) -> list[tuple[str, str]]:
    """(precision, ONNX graph) pairs to convert: the preferred graph of each wanted precision the bundle has."""
    out = []
    for precision, targets in SOURCES:
        if precision not in precisions:
            continue
        names = [n for t in targets for n in find_artifacts(manifest, kind=Kind.ONNX, precision=precision,
                                                            target=t)]
        if names:
            out.append((precision, names[0]))
    return out


def bf16_artifact(manifest: dict) -> str | None:
    """What OpenVINO runs in bf16: the fp32 IR when the bundle has one, else the fp32 portable graph."""
    for kind, target in ((Kind.OPENVINO_IR, Target.OPENVINO), (Kind.ONNX, Target.PORTABLE)):
        names = find_artifacts(manifest, kind=kind, precision="fp32", target=target)
        if names:
            return names[0]
    return None


def check_bf16(bundle, reference: Reference) -> tuple[dict, validate.Parity]:
    """Run the bundle's fp32 IR (or graph) in OpenVINO with bf16 inference precision against eager; record it and,
    when it meets the bf16 bar, list bf16 in the artifact's ``inference_precisions``. Returns the record and the
    parity; the caller decides what a miss means."""
    from ..backends.openvino import OpenVinoRunner

    artifact = bf16_artifact(bundle.manifest)
    if artifact is None:
        raise UserError(f"bundle {str(bundle.out)!r} has no fp32 graph or IR for OpenVINO to run in bf16")
    with step(f"Checking {artifact} in OpenVINO with bf16 inference precision vs eager"):
        with OpenVinoRunner(locate(bundle, artifact), precision="bf16") as runner:
            got = validate.run_batches(runner, reference.inputs(), VALIDATION_BATCH)
    parity = validate.compare(reference.logits(), got, candidate_name="OpenVINO bf16")
    bar = reference.bar("bf16")
    record = layout.validation_record(parity, bar, backend="openvino-cpu (inference precision bf16)",
                                      inputs=reference.describe(), batches=[VALIDATION_BATCH], artifact=artifact)
    layout.record_validation(bundle.manifest, layout.inference_validation(artifact, "bf16"), record)
    entry = bundle.manifest["files"][artifact]
    runs_at = [p for p in entry.get("inference_precisions", []) if p != "bf16"]
    entry["inference_precisions"] = runs_at + (["bf16"] if record["passed"] else [])
    return record, parity


def run(bundle, reference: Reference, options: OpenVinoOptions) -> OpenVinoStageResult:
    """The OpenVINO stage on a ``BundleWriter`` / ``BundleUpdate``: the IRs (fp32 IRs meet the fp32 bar in OpenVINO
    with f32 inference precision, INT8 IRs the int8 bar; else ``CheckFailed``, nothing written), then OpenVINO's bf16
    run (``check_bf16_run``; a required one that misses its bar is recorded as a failure, like any precision)."""
    result = OpenVinoStageResult()
    if options.write_ir:
        write_irs(bundle, reference, options, result)
    if options.check_bf16:
        try:
            ov = check_bf16_run(bundle, reference, required=options.bf16_required)
        except PrecisionFailed as e:
            result.failures.append(record_failure(bundle.manifest, e))
            ov = e.record["openvino"]
        bundle.manifest.setdefault("precision", {}).setdefault("bf16", {})["openvino"] = result.bf16 = ov
        if ov.get("passed") is False:
            result.warnings.append(f"OpenVINO's bf16 run of {ov['artifact']} misses the bf16 bar (top-1 agreement "
                                   f"{ov['top1_agreement']:.1%}, spread error {ov['spread_error']}): run it with "
                                   "f32 inference precision")
    return result


def check_bf16_run(bundle, reference: Reference, required: bool) -> dict:
    """OpenVINO's bf16 run of the fp32 graph: checked and recorded, or skipped with a note where OpenVINO is missing
    or the CPU has no bf16. ``required`` (``--bf16`` given): a miss raises ``PrecisionFailed``."""
    from ..backends import table

    spec = table.get("openvino")
    if not spec.is_available():
        return {"skipped": "openvino is not installed (pip install 'resnet-deploy[openvino]')"}
    note = spec.cannot_run("bf16")
    if note:
        log.info("OpenVINO bf16 skipped: %s", note)
        return {"skipped": note}
    record, parity = check_bf16(bundle, reference)
    out = {"artifact": record["artifact"], "inference_precision": "bf16", "passed": record["passed"],
           "validation": layout.inference_validation(record["artifact"], "bf16"),
           "top1_agreement": parity.top1_agreement, "spread_error": parity.spread_error, "cosine": parity.cosine}
    if not record["passed"] and required:
        raise PrecisionFailed("bf16", validate.failure_message(f"OpenVINO bf16 run of {record['artifact']} vs eager",
                                                               parity, reference.bar("bf16")), {"openvino": out})
    return out


def write_irs(bundle, reference: Reference, options: OpenVinoOptions, result: OpenVinoStageResult) -> None:
    """Convert and check the IR of each precision the bundle has a graph for."""
    from ..backends.openvino import OpenVinoRunner, write_ir

    todo = sources(bundle.manifest, options.precisions)
    if not todo:
        raise UserError(f"bundle {str(bundle.out)!r} has no ONNX graph to convert to OpenVINO IR")
    for precision, onnx_name in todo:
        xml = layout.openvino_ir(precision)
        with step(f"Writing OpenVINO IR {xml} from {onnx_name} and checking it vs eager"):
            write_ir(locate(bundle, onnx_name), bundle.path / xml)
            # float layers in f32: the check is about the IR, not about OpenVINO's bf16 default on some CPUs
            with OpenVinoRunner(bundle.path / xml, precision="f32") as runner:
                got = validate.run_batches(runner, reference.inputs(), VALIDATION_BATCH)
        parity = validate.compare(reference.logits(), got, candidate_name="OpenVINO IR")
        bar = reference.bar(precision)
        record = layout.validation_record(parity, bar, backend="openvino-cpu (inference precision f32)",
                                          inputs=reference.describe(), batches=[VALIDATION_BATCH], source=onnx_name)
        layout.record_validation(bundle.manifest, xml, record)
        validate.require_parity(f"OpenVINO IR {xml} vs eager", parity, bar,
                                where=lambda: reference.locate_nonfinite())
        bundle.add_file(xml, kind=Kind.OPENVINO_IR, precision=precision, target=str(Target.OPENVINO),
                        source=onnx_name)
        bundle.add_file(layout.ir_weights(xml), kind=Kind.OPENVINO_WEIGHTS, precision=precision)
        result.files += [xml, layout.ir_weights(xml)]
        result.validation[xml] = record
