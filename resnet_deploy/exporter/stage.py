"""The export stage: the eager model to ONNX (``model.onnx``, dynamic batch), checked against eager in ONNX
Runtime, and the eager reference kept as a ``torch.export`` program (``model.pt2``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import layout, validate
from ..layout import Kind
from .onnx_export import DEFAULT_OPSET, ExportResult, export_onnx, save_exported_program
from ..progress import step
from ..stages.reference import PARITY_BATCHES, Reference


NAME = "export"


@dataclass(frozen=True)
class ExportOptions:
    """How to export: crop size, opset, external weights (None: automatic past 2 GB), ONNX metadata props, and
    whether Conv+BN is folded in PyTorch first (``exporter.torch_fold``)."""

    input_size: tuple[int, int]
    opset: int = DEFAULT_OPSET
    external_data: bool | None = None
    metadata: dict = field(default_factory=dict)
    fold_bn: bool = True


@dataclass
class ExportStageResult:
    """The exported graph, its fp32 parity with eager (overall and per batch size) and the PyTorch-level fold."""

    onnx: ExportResult
    parity: validate.Parity
    per_batch: dict
    torch_fold: dict | None = None


def run(bundle, reference: Reference, options: ExportOptions) -> ExportStageResult:
    """Export ``reference.eager`` into ``bundle`` (a ``BundleWriter``) and validate it; raises ``CheckFailed``
    (nothing is written) when the graph does not match eager in fp32."""
    model = reference.eager
    folded = None
    if options.fold_bn:
        from .torch_fold import fold_conv_bn

        with step("Folding Conv+BatchNorm in PyTorch"):
            folded = fold_conv_bn(model)
    path = bundle.path / layout.FP32_ONNX
    tags = {"kind": Kind.ONNX, "precision": "fp32", "target": "portable", "opset": options.opset}
    with step("Exporting to ONNX"):  # the graph is recorded as it is written and handed to the next stage
        result = export_onnx(folded.model if folded else model, path, options.input_size, options.opset,
                             options.external_data, metadata=options.metadata,
                             save=lambda proto: bundle.add_graph(layout.FP32_ONNX, proto, external=False, **tags))
    with step("Validating ONNX Runtime vs eager"):
        from ..backends.onnxruntime import OnnxRuntimeRunner

        with OnnxRuntimeRunner(path) as ort:
            parity = reference.parity(ort)
    overall, bar = parity["overall"], reference.bar("fp32")
    layout.record_validation(bundle.manifest, "fp32", layout.validation_record(
        overall, bar, backend="onnxruntime-cpu", inputs=reference.parity_description(), batches=PARITY_BATCHES,
        per_batch=parity["per_batch"]))
    validate.require_parity("fp32 ONNX graph vs eager", overall, bar, where=lambda: reference.locate_nonfinite(path))
    with step("Saving the eager reference (torch.export)"):
        save_exported_program(model, bundle.path / layout.EAGER_PROGRAM, options.input_size)
    result.proto = None  # the bundle holds the graph for the next stage: no second reference to 100s of MB
    if result.external_data:  # written by the exporter itself
        bundle.add_file(layout.FP32_ONNX, **tags)
    bundle.add_file(layout.EAGER_PROGRAM, kind=Kind.EAGER, precision="fp32")
    if result.external_data:
        bundle.add_file(layout.external_data(layout.FP32_ONNX), kind=Kind.ONNX_DATA, precision="fp32")
    bundle.manifest["export"] = {"opset": result.opset, "seconds": round(result.seconds, 2),
                                 "exporter": "torch.onnx dynamo", "nodes": result.node_count,
                                 "op_counts": result.op_counts}
    return ExportStageResult(result, overall, parity["per_batch"], folded.to_dict() if folded else None)
