"""Proof on a real trained network: resnet18 trained on scikit-learn's digits, held-out split of 450 images.

INT8 (both targets) must lose <= 1 top-1 point, FP16 <= 0.2 points; the numbers are recomputed here from the
saved graphs, not read back from the manifest. The gate's fallback is shown on a real over-budget case.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from . import digits
from resnet_deploy.errors import CheckFailed
from resnet_deploy.precision import PrecisionOptions, gate
from resnet_deploy.precision.stage import quantize_bundle
from .tolerances import FP16, INT8


@pytest.fixture(scope="module")
def digits_data(tmp_path_factory):
    x_train, y_train, x_test, y_test, test_images = digits.dataset()
    root = tmp_path_factory.mktemp("digits")
    np.savez(root / "calib.npz", x=x_train[:512])
    val = digits.write_image_folder(root / "val", test_images, y_test)  # real PNG files, ImageFolder layout
    model = digits.trained_model(x_train, y_train)
    return {"root": root, "model": model, "x_test": x_test, "y_test": y_test, "val": val}


@pytest.fixture(scope="module")
def digits_bundle(digits_data):
    """Export with --fp16 --int8 in one go (calibration: 512 training images as .npz; gate: the PNG test split)."""
    from resnet_deploy.api import export  # not resnet_deploy.export: importing that submodule shadows the function

    out = digits_data["root"] / "bundle"
    opts = PrecisionOptions(fp16=True, int8=True, calib=digits_data["root"] / "calib.npz", val=digits_data["val"])
    res = export(digits_data["model"], out, preprocessing=digits.preprocessing(), arch="resnet18",
                 weights={"source": "digits-trained"}, num_classes=10, precision=opts)
    return res


def _top1(logits, labels) -> float:
    return float((logits.argmax(1) == labels).mean() * 100)


def test_trained_network_is_real(digits_data):
    import torch

    with torch.no_grad():
        logits = digits_data["model"](torch.from_numpy(digits_data["x_test"])).numpy()
    assert _top1(logits, digits_data["y_test"]) >= 95.0


def test_int8_and_fp16_accuracy_on_held_out_split(digits_bundle, digits_data):
    import onnx

    path, m = digits_bundle.path, digits_bundle.manifest
    x, y = digits_data["x_test"], digits_data["y_test"]
    fp32 = _top1(gate.run_graph(onnx.load(str(path / "model.onnx")), x), y)
    for target in ("tensorrt", "onnxruntime"):
        top1 = _top1(gate.run_graph(onnx.load(str(path / f"model.int8.{target}.onnx")), x), y)
        assert fp32 - top1 <= INT8["max_top1_drop_points"], (target, fp32, top1)
        rec = m["precision"]["int8"]["targets"][target]
        assert rec["int8"]["top1"] == pytest.approx(top1, abs=1e-3)  # the gate measured what we measure
        assert rec["passed"] and rec["drop_points"] <= 1.0
    top1_fp16 = _top1(gate.run_graph(onnx.load(str(path / "model.fp16.onnx")), x), y)
    assert fp32 - top1_fp16 <= FP16["max_top1_drop_points"], (fp32, top1_fp16)
    assert m["validation"]["fp16"]["cosine"] >= FP16["min_cosine"]
    assert m["validation"]["fp16"]["top1_agreement"] >= FP16["min_agreement"]


def test_manifest_records_the_precision_run(digits_bundle):
    m = digits_bundle.manifest
    i8 = m["precision"]["int8"]
    assert i8["calibration"]["method"] == "mse" and i8["calibration"]["num_samples"] == 512
    for target, rec in i8["targets"].items():
        assert rec["fp32"]["top1"] >= 95 and rec["int8"]["top5"] is not None
        assert rec["excluded_layers"] == [] and "node_linear" in rec["kept_higher_precision"]
        assert m["files"][rec["file"]]["precision"] == "int8" and m["files"][rec["file"]]["target"] == target
    assert m["files"]["calibration.json"]["kind"] == "calibration-cache"
    cache = json.loads((digits_bundle.path / "calibration.json").read_text())
    assert cache["method"] == "mse" and cache["data_sha256"] and cache["model_sha256"]
    assert all(len(t["range"]) == 2 for t in cache["tensors"].values())
    assert m["precision"]["fp16"]["kept_fp32"] == {} and m["files"]["model.fp16.onnx"]["io"] == "fp32"


def test_gate_keeps_sensitive_layers_in_fp32(digits_bundle, digits_data, tmp_path):
    """entropy ranges cost ~1.5 points on the uint8 graph here: the gate must find and exclude the culprit."""
    b = tmp_path / "b"
    shutil.copytree(digits_bundle.path, b)
    opts = PrecisionOptions(int8=True, calib=digits_data["root"] / "calib.npz", val=digits_data["val"],
                            calib_method="entropy", targets=("onnxruntime",), max_drop=0.3)
    manifest, _ = quantize_bundle(b, opts, force=True)
    rec = manifest["precision"]["int8"]["targets"]["onnxruntime"]
    assert rec["attempts"][0]["drop"] > 0.3, "precondition: the first attempt is over budget"
    assert rec["passed"] and rec["drop_points"] <= 0.3
    assert rec["excluded_layers"] and set(rec["excluded_layers"]) <= set(rec["kept_higher_precision"])
    assert manifest["precision"]["int8"]["calibration"]["reused_cache"] is False


def test_gate_fails_with_exit_1_and_leaves_bundle_unchanged(digits_bundle, digits_data, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(digits_bundle.path, b)
    before = {p.name: p.stat().st_mtime_ns for p in b.iterdir()}
    opts = PrecisionOptions(int8=True, calib=digits_data["root"] / "calib.npz", val=digits_data["val"],
                            calib_method="percentile", percentile=80, targets=("tensorrt",), max_drop=1.0)
    with pytest.raises(CheckFailed, match="budget not met") as e:
        quantize_bundle(b, opts, force=True)
    assert e.value.exit_code == 1
    assert {p.name: p.stat().st_mtime_ns for p in b.iterdir()} == before
