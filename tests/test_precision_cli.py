"""The precision options from the command line: real photos through the image pipeline, and bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from .conftest import SMALL, run_cli
from resnet_deploy.cli import main


def _snapshot(folder):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.fixture
def calib_photos(images_dir, tmp_path):
    """The real photos nested one level deep, plus an unreadable file that must be skipped and listed."""
    root = tmp_path / "calib"
    shutil.copytree(images_dir, root / "nested")
    (root / "broken.jpg").write_bytes(b"this is not a jpeg")
    return root


def test_quantize_real_photos(r18_bundle_copy, calib_photos, images_dir, tmp_path, capsys):
    cache = tmp_path / "keep" / "calibration.json"
    cache.parent.mkdir()
    args = ["quantize", str(r18_bundle_copy), "--fp16", "--int8", "--calib", str(calib_photos), "--calib-cache",
            str(cache), "--val", str(images_dir), "--max-drop", "100"]  # random weights: the pipeline is the point
    assert main(args) == 0
    m = json.loads((r18_bundle_copy / "manifest.json").read_text())
    i8 = m["precision"]["int8"]
    assert i8["calibration"]["num_samples"] == 5 and not i8["calibration"]["reused_cache"]
    assert any("broken.jpg" in s for s in i8["calibration"]["skipped"])
    assert any("fewer than 100" in w for w in m["warnings"])
    assert any("broken.jpg" in w for w in m["warnings"])
    for name in ("model.fp16.onnx", "model.int8.tensorrt.onnx", "model.int8.onnxruntime.onnx", "calibration.json"):
        assert name in m["files"] and (r18_bundle_copy / name).is_file()
    assert cache.is_file()
    assert m["validation"]["fp16"]["passed"] and m["validation"]["fp16"]["inputs"].startswith("--val images:5")
    # a flat --val folder has no labels: the gate measures top-1 agreement with eager fp32
    assert "agreement with eager" in i8["gate_data"]
    for rec in i8["targets"].values():
        assert rec["int8"]["top1"] is None and 0 <= rec["int8"]["agreement"] <= 1  # a fraction, as everywhere
        assert rec["drop_points"] == pytest.approx(100 * (1 - rec["int8"]["agreement"]), abs=1e-3)
    assert main(["info", str(r18_bundle_copy)]) == 0
    # the same data again: the kept cache is reused (the bundle's files are replaced only with --force)
    assert main(args[:1] + args[1:]) == 2
    assert main(args + ["--force"]) == 0
    m = json.loads((r18_bundle_copy / "manifest.json").read_text())
    assert m["precision"]["int8"]["calibration"]["reused_cache"] is True


def test_fp16_io(r18_bundle_copy):
    import onnx

    assert main(["quantize", str(r18_bundle_copy), "--fp16", "--fp16-io"]) == 0
    m = onnx.load(str(r18_bundle_copy / "model.fp16.onnx"))
    onnx.checker.check_model(m, full_check=True)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert "Cast" not in {n.op_type for n in m.graph.node}
    assert json.loads((r18_bundle_copy / "manifest.json").read_text())["files"]["model.fp16.onnx"]["io"] == "fp16"


def _bad_npy(tmp_path, kind):
    p = tmp_path / f"{kind}.npy"
    arr = {"shape": np.zeros((4, 3, SMALL + 1, SMALL), np.float32), "dtype": np.zeros((4, 3, SMALL, SMALL)),
           "rank": np.zeros((3, SMALL, SMALL), np.float32)}[kind]
    np.save(p, arr)
    return p


@pytest.mark.parametrize("case, extra, message", [
    ("no-calib", ["--int8"], "--int8 needs --calib"),
    ("missing", ["--int8", "--calib", "{tmp}/nope"], "does not exist"),
    ("unreadable", ["--int8", "--calib", "{unreadable}"], "no readable image"),
    ("npy-shape", ["--int8", "--calib", "{npy:shape}"], "has shape"),
    ("npy-dtype", ["--int8", "--calib", "{npy:dtype}"], "dtype float64"),
    ("npy-rank", ["--int8", "--calib", "{npy:rank}"], "has shape"),
    ("method", ["--int8", "--calib", "{images}", "--calib-method", "kl"], "unknown --calib-method 'kl'"),
    ("target", ["--int8", "--calib", "{images}", "--target", "coreml"], "unknown --target 'coreml'"),
    ("pct-0", ["--int8", "--calib", "{images}", "--percentile", "0"], "outside (0, 100]"),
    ("pct-big", ["--int8", "--calib", "{images}", "--percentile", "100.01"], "outside (0, 100]"),
    ("drop-neg", ["--int8", "--calib", "{images}", "--max-drop", "-1"], "non-negative"),
    ("drop-text", ["--int8", "--calib", "{images}", "--max-drop", "lots"], "non-negative"),
])
def test_bad_input_one_line_exit_2_nothing_written(case, extra, message, r18_bundle, images_dir, tmp_path, capsys):
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "a.png").write_bytes(b"not a png")
    args = []
    for a in extra:
        if a.startswith("{npy:"):
            a = str(_bad_npy(tmp_path, a[5:-1]))
        args.append(a.format(tmp=tmp_path, unreadable=unreadable, images=images_dir))
    before = _snapshot(r18_bundle)
    capsys.readouterr()
    assert main(["quantize", str(r18_bundle), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and message in err, err
    assert _snapshot(r18_bundle) == before


def test_int8_budget_on_five_images_says_too_few_to_judge(r18_bundle_copy, images_dir):
    """On 5 images one changed prediction is 20 points: a missed 0.5-point budget says the set is too small to judge
    and names both ways out; the small-calibration-set warning is shown once, and the bundle is unchanged."""
    before = _snapshot(r18_bundle_copy)
    r = run_cli("quantize", r18_bundle_copy, "--int8", "--calib", images_dir, "--calib-method", "percentile",
                "--percentile", "1", "--max-drop", "0.5", "--target", "onnxruntime")
    assert r.returncode == 1, r.stderr
    error = r.stderr.strip().splitlines()[-1]
    assert error.startswith("error: INT8 accuracy budget not met: onnxruntime: top-1 drop"), r.stderr
    assert "only 5 samples, so one changed prediction is 20.00 points: too few to judge a 0.5-point budget" in error
    assert "at least 200 held-out images with --val DIR, or raise --max-drop" in error
    assert r.stderr.count("only 5 calibration images (fewer than 100)") == 1, r.stderr
    assert _snapshot(r18_bundle_copy) == before


def test_small_calibration_array_warned_once_as_samples(r18_bundle_copy, tmp_path):
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((5, 3, SMALL, SMALL), dtype=np.float32))
    r = run_cli("quantize", r18_bundle_copy, "--int8", "--calib", calib, "--max-drop", "100", "--target",
                "onnxruntime")
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("calibration samples (fewer than 100)") == 1, r.stderr
    assert "use more representative samples" in r.stderr and "calibration images" not in r.stderr


def test_quantize_prints_only_what_it_added(r18_bundle_copy, images_dir):
    r = run_cli("quantize", r18_bundle_copy, "--int8", "--calib", images_dir, "--max-drop", "100", "--target",
                "onnxruntime")
    assert r.returncode == 0, r.stderr
    assert "int8 calibration:" in r.stdout and "onnxruntime: model.int8.onnxruntime.onnx" in r.stdout
    r = run_cli("quantize", r18_bundle_copy, "--fp16")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("fp16 model.fp16.onnx") and "int8" not in r.stdout, r.stdout  # not the bundle's int8


def test_export_int8_without_calib_writes_nothing(tmp_path):
    out = tmp_path / "b"
    r = run_cli("export", "--arch", "resnet18", "--weights", "random", "--input-size", SMALL, "--int8",
                "--out", out)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--int8 needs --calib" in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_with_fp16_and_int8(images_dir, tmp_path):
    """The whole pipeline from the command line: export + FP16 + INT8 (both targets) into one bundle."""
    import onnx

    out = tmp_path / "b"
    r = run_cli("export", "--arch", "resnet18", "--weights", "random", "--input-size", SMALL, "--num-classes", 10,
                "--images", images_dir, "--fp16", "--int8", "--calib", images_dir, "--calib-method", "percentile",
                "--max-drop", "100", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "int8 calibration: percentile on 5 samples" in r.stdout  # one line: never hard-wrapped off a terminal
    m = json.loads((out / "manifest.json").read_text())
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.tensorrt.onnx", "model.int8.onnxruntime.onnx"):
        onnx.checker.check_model(str(out / name), full_check=True)
    assert m["validation"]["fp16"]["inputs"].startswith("images:5")
    assert run_cli("info", out).returncode == 0


def test_export_impossible_int8_budget_keeps_the_fp32_bundle(images_dir, tmp_path):
    """INT8 that cannot meet its budget (every activation clipped at the 1st percentile of |x|, no drop allowed,
    even with half the Convs in fp32) is left out: the validated fp32 graph, fusion and eager reference are
    written, the manifest records the failure with its attempts, `info` passes, and export exits 1 with one
    error line. The fp16 graph asked for alongside is still written."""
    out = tmp_path / "b"
    r = run_cli("export", "--arch", "resnet18", "--weights", "random", "--input-size", SMALL, "--num-classes", 10,
                "--images", images_dir, "--fp16", "--int8", "--calib", images_dir, "--calib-method", "percentile",
                "--percentile", "1", "--max-drop", "0", "--target", "onnxruntime", "--engine", "never", "--out", out)
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "INT8 accuracy budget not met: onnxruntime:" in errors[0], r.stderr
    assert "written without it" in errors[0] and "Traceback" not in r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert {"model.onnx", "model.onnxruntime.onnx", "model.pt2", "fusion_report.json", "model.fp16.onnx",
            "calibration.json"} <= set(m["files"])
    assert "model.int8.onnxruntime.onnx" not in m["files"] and not (out / "model.int8.onnxruntime.onnx").exists()
    int8 = m["precision"]["int8"]
    assert int8["failed"].startswith("INT8 accuracy budget not met") and int8["max_drop"] == 0.0
    rec = int8["targets"]["onnxruntime"]
    assert rec["passed"] is False and rec["drop_points"] > 0 and len(rec["attempts"]) >= 2, rec
    assert "int8 FAILED, left out of the bundle" in r.stdout
    assert m["validation"]["fp32"]["passed"] and m["validation"]["fp16"]["passed"]
    info = run_cli("info", out)
    assert info.returncode == 0, info.stderr
    assert "int8 FAILED, left out of the bundle: INT8 accuracy budget not met" in info.stdout  # visible, exit 0
    bench = run_cli("bench", out, "--backend", "onnxruntime", "--precision", "fp32", "--batch", "1",
                    "--iters", "3", "--warmup", "1", "--no-plot", "--out", tmp_path / "bench")
    assert bench.returncode == 0, bench.stderr
