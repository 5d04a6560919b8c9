"""Which artifact each backend benchmarks: chosen by manifest tags (kind / precision / target), never by name."""

from __future__ import annotations

import importlib.util

import pytest

from resnet_deploy.bench.runners import select_cases
from resnet_deploy.errors import MissingDependency, UserError
from resnet_deploy.types import Precision

MANIFEST = {"files": {
    "model.onnx": {"kind": "onnx", "precision": "fp32", "target": "portable"},
    "model.pt2": {"kind": "torch-exported-program", "precision": "fp32"},
    "model.onnxruntime.onnx": {"kind": "onnx", "precision": "fp32", "target": "onnxruntime"},
    "model.fp16.onnx": {"kind": "onnx", "precision": "fp16", "target": "portable"},
    "model.int8.tensorrt.onnx": {"kind": "onnx", "precision": "int8", "target": "tensorrt"},
    "model.int8.onnxruntime.onnx": {"kind": "onnx", "precision": "int8", "target": "onnxruntime"},
    "calibration.json": {"kind": "calibration-cache", "precision": "int8"},
    "model.fp16.plan": {"kind": "tensorrt-plan", "precision": "fp16", "target": "tensorrt"},
}}


def _table(cases):
    return {(str(c.backend), str(c.precision)): c.artifact for c in cases}


def test_default_selection_takes_every_cpu_artifact_and_prefers_the_graph_shaped_for_ort():
    cases, notes = select_cases(MANIFEST, ["eager", "onnxruntime"])
    assert _table(cases) == {
        ("eager", "fp32"): "model.pt2",
        ("onnxruntime", "fp32"): "model.onnxruntime.onnx",
        ("onnxruntime", "fp16"): "model.fp16.onnx",
        ("onnxruntime", "int8"): "model.int8.onnxruntime.onnx",
    }
    assert notes == []


def test_fp32_only_bundle_falls_back_to_the_portable_graph():
    fp32 = {"files": {k: v for k, v in MANIFEST["files"].items() if k in ("model.onnx", "model.pt2")}}
    cases, _ = select_cases(fp32, None)  # default: eager + onnxruntime (+ GPU backends where usable)
    cpu = {k: v for k, v in _table(cases).items() if k[0] in ("eager", "onnxruntime")}
    assert cpu == {("eager", "fp32"): "model.pt2", ("onnxruntime", "fp32"): "model.onnx"}


def test_asked_for_but_absent_is_a_note_and_nothing_at_all_is_an_error():
    cases, notes = select_cases(MANIFEST, ["eager-channels-last"], [Precision.FP32, Precision.INT8])
    assert _table(cases) == {("eager-channels-last", "fp32"): "model.pt2"}
    assert notes == ["eager-channels-last int8: the bundle has no artifact for it, skipped"]
    with pytest.raises(UserError, match="nothing to benchmark"):
        select_cases(MANIFEST, ["eager"], [Precision.FP16])


def test_tensorrt_without_tensorrt_is_missing_dependency():
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(MissingDependency, match="tensorrt is not installed"):
        select_cases(MANIFEST, ["tensorrt"])
