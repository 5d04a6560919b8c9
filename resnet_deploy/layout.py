"""The bundle layout: every artifact's file name and kind, and the one shape of a validation record.

Every other module asks this one: none spells a bundle file name or builds a validation record itself. It also
names the files inside a Triton model version folder (``TRITON_*``: Triton's layout, which backends fill).
"""

from __future__ import annotations

import enum

MANIFEST = "manifest.json"
FP32_ONNX = "model.onnx"  # fp32, target portable: what TensorRT and every other runtime get
ORT_ONNX = "model.onnxruntime.onnx"  # fp32 with com.microsoft FusedConv, for ONNX Runtime with optimizations off
FP16_ONNX = "model.fp16.onnx"
BF16_ONNX = "model.bf16.onnx"  # strongly typed bf16 with fp32 I/O, for TensorRT on GPUs with bf16
EAGER_PROGRAM = "model.pt2"  # the eager reference as a torch.export program
FUSION_REPORT = "fusion_report.json"
CALIBRATION = "calibration.json"
INT8_ONNX_PATTERN = "model.int8.<target>.onnx"
PLAN_LAYERS_SUFFIX = ".layers.json"
# Triton's own names inside a model version folder (its layout, not the bundle's)
TRITON_ONNX = "model.onnx"
TRITON_PLAN = "model.plan"
TRITON_IR = "model.xml"
TRITON_IR_WEIGHTS = "model.bin"


class Kind(str, enum.Enum):
    """The ``kind`` tag of a manifest file entry: what the file is, whatever its name."""

    ONNX = "onnx"
    ONNX_DATA = "onnx-external-data"
    EAGER = "torch-exported-program"
    PLAN = "tensorrt-plan"
    PLAN_LAYERS = "tensorrt-layers"
    REPORT = "report"
    CALIBRATION = "calibration-cache"
    OPENVINO_IR = "openvino-ir"
    OPENVINO_WEIGHTS = "openvino-weights"

    def __str__(self) -> str:
        return self.value


def external_data(onnx_name: str) -> str:
    """The file holding an ONNX graph's weights when they are stored outside it."""
    return onnx_name + ".data"


def openvino_ir(precision) -> str:
    """The OpenVINO IR (``.xml``; its weights in ``ir_weights``) of the bundle's graph of ``precision``."""
    return "model.openvino.xml" if str(precision) == "fp32" else f"model.{precision}.openvino.xml"


def ir_weights(xml_name: str) -> str:
    """The ``.bin`` that holds an OpenVINO IR's weights, beside its ``.xml``."""
    return xml_name[: -len(".xml")] + ".bin"


def companions(name: str) -> list[str]:
    """Files that belong to an artifact and are checked and copied with it (external ONNX weights, IR weights)."""
    return [external_data(name)] + ([ir_weights(name)] if name.endswith(".xml") else [])


def reduced_onnx(precision) -> str:
    """The fp16 or bf16 graph (weights and activations in that format, fallback nodes in fp32)."""
    names = {"fp16": FP16_ONNX, "bf16": BF16_ONNX}
    return names[str(precision)]


def inference_validation(artifact: str, precision) -> str:
    """The validation key of ``artifact`` run at another inference precision than its own (an fp32 graph or IR
    that OpenVINO runs in bf16); the artifact's file entry lists it in ``inference_precisions``."""
    return f"{artifact}@{precision}"


def int8_onnx(target) -> str:
    """The INT8 graph shaped for ``target`` (tensorrt: symmetric Q/DQ; onnxruntime: U8S8 QDQ)."""
    return f"model.int8.{target}.onnx"


def triton_cc_plan(cc: str) -> str:
    """A Triton model's plan for one GPU compute capability (``cc_model_filenames``), e.g. ``model.sm86.plan``."""
    return f"model.sm{cc.replace('.', '')}.plan"


def plan(precision) -> str:
    """The TensorRT plan built from the bundle's graph of ``precision``."""
    return f"model.{precision}.plan"


def onnx_plan(onnx_name: str, precision) -> str:
    """The plan built from a lone ONNX file (``resnet-deploy build MODEL.onnx``), kept beside it."""
    return f"{onnx_name.removesuffix('.onnx')}.{precision}.plan"


def plan_layers(plan_name: str) -> str:
    """The engine-inspector layer JSON kept beside a plan."""
    stem = plan_name[: -len(".plan")] if plan_name.endswith(".plan") else plan_name
    return stem + PLAN_LAYERS_SUFFIX


def plan_sidecar(plan_name: str) -> str:
    """The build record beside a plan built from a lone ONNX file (outside a bundle)."""
    return plan_name + ".json"


def validation_record(parity, bar, *, backend: str, inputs: str, batches,
                      reference: str = "torch eager fp32", per_batch: dict | None = None, **extra) -> dict:
    """The one shape of a validation record: how the candidate ran, on what, against which bar, and whether it
    passed (NaN/Inf never passes: ``nonfinite`` names the side). ``parity`` is a ``validate.Parity`` and ``bar`` a
    ``validate.Bar`` (not imported: layout sits below everything and imports nothing of the package but enums)."""
    record = {"backend": backend, "reference": reference, "inputs": inputs, "batches": list(batches),
              **parity.to_dict(), "bar": bar.to_dict(), "passed": parity.meets(bar)}
    if per_batch is not None:
        record["per_batch"] = {str(b): p.to_dict() for b, p in per_batch.items()}
    return {**record, **extra}


def record_validation(manifest: dict, key: str, record: dict) -> dict:
    """Store ``record`` as ``manifest["validation"][key]`` (``fp32``, ``fp16``, a plan's file name ...)."""
    manifest.setdefault("validation", {})[key] = record
    return record
