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


# ---------------------------------------------------------------- ONNX Runtime's TensorRT EP: one profile

def _trt_ep_options(runner) -> dict:
    name, options = runner.providers[0]
    assert name == "TensorrtExecutionProvider"
    return options


def test_tensorrt_ep_profile_covers_every_benchmarked_batch(r18_bundle, tmp_path):
    """The bench's runner for ONNX Runtime's TensorRT EP gets one profile, batch 1 to the largest batch benchmarked,
    with C, H, W and the input name from the bundle's graph; without it ONNX Runtime rebuilds the engine as the batch
    grows (the provider options are checked here; the EP itself needs a GPU)."""
    import onnx

    from resnet_deploy.bench.runners import Case, make_runner

    graph = onnx.load(str(r18_bundle / "model.onnx"), load_external_data=False)
    name = graph.graph.input[0].name
    case = Case("onnxruntime-tensorrt", Precision.FP32, "model.onnx")
    runner = make_runner(case, r18_bundle, None, "cpu", work_dir=tmp_path, batches=[1, 8])
    opts = _trt_ep_options(runner)
    assert opts["trt_profile_min_shapes"] == f"{name}:1x3x64x64"
    assert opts["trt_profile_opt_shapes"] == f"{name}:8x3x64x64"
    assert opts["trt_profile_max_shapes"] == f"{name}:8x3x64x64"
    assert opts["trt_engine_cache_path"] == str(tmp_path / "ort-trt-cache")
    without = _trt_ep_options(make_runner(case, r18_bundle, None, "cpu", work_dir=tmp_path))
    assert not [k for k in without if k.startswith("trt_profile_")]  # no batches given: ONNX Runtime's default


def test_tensorrt_ep_profile_is_left_out_for_a_fixed_batch_graph(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from resnet_deploy.backends.onnxruntime_gpu import batch_profile, tensorrt_ep_runner

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 8, 8])])
    onnx.save(helper.make_model(g), tmp_path / "fixed.onnx")
    assert batch_profile(tmp_path / "fixed.onnx", 8) == (None, None)
    opts = _trt_ep_options(tensorrt_ep_runner(tmp_path / "fixed.onnx", tmp_path / "cache", max_batch=8))
    assert not [k for k in opts if k.startswith("trt_profile_")]


def test_worker_passes_every_batch_size_to_make_runner(tmp_path, monkeypatch):
    """bench/worker.py hands the job's batch sizes to ``make_runner`` (stopped right there by a stand-in)."""
    import json

    from resnet_deploy.bench import runners, worker

    seen = {}

    def stand_in(*args, **kwargs):
        seen.update(kwargs)
        raise UserError("stand-in: stop here")

    monkeypatch.setattr(runners, "make_runner", stand_in)
    job = {"out_dir": str(tmp_path), "bundle": str(tmp_path), "batches": [1, 32, 8], "warmup": 0, "iters": 1,
           "input_shape": [3, 8, 8], "case": {"backend": "onnxruntime-tensorrt", "precision": "fp32",
                                              "artifact": "model.onnx"}}
    (tmp_path / "job.json").write_text(json.dumps(job))
    assert worker.main(str(tmp_path / "job.json")) == 0
    assert json.loads((tmp_path / "result.json").read_text())["error"] == "stand-in: stop here"
    assert sorted(seen["batches"]) == [1, 8, 32]
