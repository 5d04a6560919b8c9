"""The OpenVINO stage: OpenVINO IR (``.xml`` + ``.bin``) of the bundle's fp32 graph and of its INT8 graph, each
checked against the reference in OpenVINO's CPU runtime, for OpenVINO's C++ runtime and Triton's openvino backend.

The INT8 IR is converted from the bundle's U8S8 QDQ graph (target ``onnxruntime``), which OpenVINO runs faster
than the symmetric TensorRT-shaped one (measured in benchmarks/results/cpu_peers*.md); OpenVINO reads explicit
Q/DQ and runs it as fast as a graph NNCF quantized itself. Weights stay as they are (no fp16 compression), so
the IR computes what the ONNX graph it came from computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import layout, validate
from .bundle import find_artifacts, locate
from .errors import UserError
from .layout import Kind
from .progress import step
from .reference import Reference
from .types import Target

# Which ONNX graph each IR is converted from: (precision, kind, targets in order of preference).
SOURCES = (("fp32", (Target.PORTABLE,)), ("int8", (Target.ONNXRUNTIME, Target.TENSORRT)))
VALIDATION_BATCH = 8


@dataclass
class OpenVinoOptions:
    """Which precisions to convert (those the bundle has a graph for)."""

    precisions: tuple = ("fp32", "int8")


@dataclass
class OpenVinoStageResult:
    files: list[str] = field(default_factory=list)
    validation: dict = field(default_factory=dict)  # IR name -> validation record


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


def run(bundle, reference: Reference, options: OpenVinoOptions) -> OpenVinoStageResult:
    """Write and check the IRs on a ``BundleWriter`` / ``BundleUpdate``. fp32 IRs meet the fp32 bar (OpenVINO with
    f32 inference precision); INT8 IRs the int8 bar. Raises ``CheckFailed`` (nothing written) otherwise."""
    from .backends.openvino import OpenVinoRunner, write_ir

    todo = sources(bundle.manifest, options.precisions)
    if not todo:
        raise UserError(f"bundle {str(bundle.out)!r} has no ONNX graph to convert to OpenVINO IR")
    result = OpenVinoStageResult()
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
    return result
