"""``bench`` accounts for every artifact of the bundle: measured, or skipped with the backend table's reason."""

from __future__ import annotations

from resnet_deploy.backends import table
from resnet_deploy.bench.coverage import skipped_artifacts
from resnet_deploy.bench.report import to_markdown
from resnet_deploy.bench.runners import select_cases
from resnet_deploy.types import Precision

# the files of an export with --bf16 --int8 (both INT8 targets), without the openvino target
FILES = {
    "model.onnx": {"kind": "onnx", "precision": "fp32", "target": "portable"},
    "model.pt2": {"kind": "torch-exported-program", "precision": "fp32"},
    "model.onnxruntime.onnx": {"kind": "onnx", "precision": "fp32", "target": "onnxruntime"},
    "fusion_report.json": {"kind": "report"},
    "model.bf16.onnx": {"kind": "onnx", "precision": "bf16", "target": "tensorrt"},
    "calibration.json": {"kind": "calibration-cache", "precision": "int8"},
    "model.int8.tensorrt.onnx": {"kind": "onnx", "precision": "int8", "target": "tensorrt"},
    "model.int8.onnxruntime.onnx": {"kind": "onnx", "precision": "int8", "target": "onnxruntime"},
}
MANIFEST = {"files": FILES, "validation": {}}


def _gpu_backends_missing() -> bool:
    return not any(table.get(n).is_available() for n in ("onnxruntime-tensorrt", "onnxruntime-cuda"))


def test_every_model_file_is_measured_or_skipped_with_a_reason():
    cases, _ = select_cases(MANIFEST)
    skipped = {s["artifact"]: s for s in skipped_artifacts(MANIFEST, cases)}
    measured = {c.artifact for c in cases}
    models = {n for n, e in FILES.items() if e["kind"] not in ("report", "calibration-cache")}
    assert measured | set(skipped) == models and not measured & set(skipped)
    assert {"model.int8.tensorrt.onnx", "model.bf16.onnx"} <= set(skipped)  # the two the issue saw vanish
    tensorrt = skipped["model.int8.tensorrt.onnx"]
    assert tensorrt["kind"] == "onnx" and tensorrt["precision"] == "int8" and tensorrt["target"] == "tensorrt"
    assert "onnxruntime-tensorrt int8" in tensorrt["reason"]
    assert "at int8 this run measured onnxruntime model.int8.onnxruntime.onnx" in tensorrt["reason"]
    if _gpu_backends_missing():
        assert "install it with pip install 'resnet-deploy[gpu]'" in tensorrt["reason"]  # the table's hint


def test_a_narrowed_run_says_what_was_not_selected():
    backends, precisions = ["onnxruntime"], [Precision.INT8]
    cases, _ = select_cases(MANIFEST, backends, precisions)
    skipped = {s["artifact"]: s["reason"] for s in skipped_artifacts(MANIFEST, cases, backends, precisions)}
    assert "eager fp32, eager-channels-last fp32, torch-compile fp32: not selected (--backend onnxruntime)" \
        in skipped["model.pt2"]
    assert "onnxruntime fp32: precision not selected (--precision int8)" in skipped["model.onnxruntime.onnx"]


def test_the_markdown_names_each_rows_artifact_and_lists_the_skipped_ones():
    lat = {"p50": 1.0, "p90": 1.0, "p99": 1.0, "mean": 1.0, "std": 0.0}
    report = {"machine": {"cpu": "c", "cores_logical": 2}, "model": {"arch": "resnet18"}, "config": {},
              "results": [{"backend": "onnxruntime", "precision": "int8", "artifact": "model.int8.onnxruntime.onnx",
                           "batch": 1, "latency_ms": lat, "throughput_ips": 1000.0, "accuracy": None}],
              "skipped": [{"artifact": "model.bf16.onnx", "kind": "onnx", "precision": "bf16", "target": "tensorrt",
                           "reason": "onnxruntime-tensorrt bf16: not here"}]}
    md = to_markdown(report)
    assert "| backend | precision | artifact | batch |" in md
    assert "| onnxruntime | int8 | model.int8.onnxruntime.onnx | 1 |" in md
    assert "- model.bf16.onnx (onnx, bf16, tensorrt): skipped: onnxruntime-tensorrt bf16: not here" in md
