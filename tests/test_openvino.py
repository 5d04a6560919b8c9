"""The OpenVINO backend on real small bundles (resnet18, 64x64): accuracy against eager at each precision, what
really runs (describe), the throughput path, IR writing, bad options; and a smoke run of the peers benchmark.

Runs where openvino is installed (it is in the dev extra). No absolute times are asserted: every x86-64 CPU
(AVX2 only, AVX-512 VNNI, AVX-512 BF16, AMX) must pass.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resnet_deploy import validate
from resnet_deploy.errors import UserError

from . import tolerances
from .conftest import IMAGES, SMALL

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason="openvino is not installed (pip install 'resnet-deploy[openvino]')")

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "benchmarks" / "cpu_peers.py"


def inputs(n: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, SMALL, SMALL), dtype=np.float32)


@pytest.fixture(scope="module")
def eager(r18_bundle):
    """Eager fp32 logits of ``inputs()`` (the reference), computed once."""
    from resnet_deploy.backends.torch_eager import TorchRunner
    from resnet_deploy.bundle import load_eager

    with TorchRunner(load_eager(r18_bundle)) as runner:
        return validate.run_batches(runner, inputs(), 4)


@pytest.fixture(scope="module")
def r18_int8(r18_bundle, tmp_path_factory) -> Path:
    """A copy of the resnet18 bundle with its INT8 graphs (calibrated on the 5 photos; the gate is off)."""
    from resnet_deploy.cli import main

    out = tmp_path_factory.mktemp("ov") / "r18"
    shutil.copytree(r18_bundle, out)
    assert main(["quantize", str(out), "--int8", "--calib", str(IMAGES), "--max-drop", "100"]) == 0
    return out


def run_ov(model, data: np.ndarray, batch: int, **options) -> tuple[np.ndarray, dict]:
    from resnet_deploy.backends.openvino import OpenVinoRunner

    with OpenVinoRunner(model, **options) as runner:
        return validate.run_batches(runner, data, batch), runner.describe()


def assert_fp32_parity(reference: np.ndarray, got: np.ndarray) -> None:
    p = validate.compare(reference, got)
    assert p.nonfinite is None and p.cosine >= tolerances.FP32["min_cosine"], p
    assert p.top1_agreement >= tolerances.FP32["min_agreement"] and p.max_rel_diff <= tolerances.FP32["max_rel_diff"], p


@pytest.mark.parametrize("batch", [1, 4])
def test_f32_matches_eager_and_really_runs_f32(r18_bundle, eager, batch):
    got, d = run_ov(r18_bundle / "model.onnx", inputs(), batch, precision="f32")
    assert_fp32_parity(eager, got)
    assert d["inference_precision"] == "f32" and d["requested"]["precision"] == "f32"
    assert d["execution_devices"] == ["CPU"] and d["performance_hint"] == "LATENCY" and d["batch"] == "dynamic"
    assert d["num_streams"] >= 1 and d["optimal_number_of_infer_requests"] >= 1 and d["openvino"]


def test_default_precision_is_what_the_cpu_offers(r18_bundle, eager):
    from resnet_deploy.backends.openvino import bf16_supported, cpu_capabilities

    got, d = run_ov(r18_bundle / "model.onnx", inputs(), 4)
    assert bf16_supported() == ("BF16" in cpu_capabilities())
    assert d["requested"]["precision"] == "default"
    if not bf16_supported():  # bf16 is never chosen by a CPU that cannot run it
        assert d["inference_precision"] == "f32", d
    tol = tolerances.BF16 if d["inference_precision"] != "f32" else tolerances.FP32
    p = validate.compare(eager, got)
    assert p.nonfinite is None and p.cosine >= tol["min_cosine"] and p.top1_agreement >= tol["min_agreement"], p


def test_bf16_requested(r18_bundle, eager):
    from resnet_deploy.backends.openvino import bf16_supported

    if not bf16_supported():
        with pytest.raises(UserError, match="bf16 needs a CPU with bf16 support"):
            run_ov(r18_bundle / "model.onnx", inputs(), 4, precision="bf16")
        return
    got, d = run_ov(r18_bundle / "model.onnx", inputs(), 4, precision="bf16")
    assert d["inference_precision"] == "bf16"
    p = validate.compare(eager, got)
    assert p.cosine >= tolerances.BF16["min_cosine"] and p.top1_agreement >= tolerances.BF16["min_agreement"], p


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_reads_our_int8_graphs(r18_int8, eager, target):
    """OpenVINO runs the bundle's Q/DQ graphs as int8; its logits agree with ONNX Runtime's on the same graph."""
    from resnet_deploy.backends.onnxruntime import OnnxRuntimeRunner

    model = r18_int8 / f"model.int8.{target}.onnx"
    got, d = run_ov(model, inputs(), 4, precision="f32")
    with OnnxRuntimeRunner(model) as ort:
        ort_logits = validate.run_batches(ort, inputs(), 4)
    vs_ort, vs_eager = validate.compare(ort_logits, got), validate.compare(eager, got)
    assert vs_ort.nonfinite is None and vs_ort.cosine >= 0.99, vs_ort  # same int8 graph, two runtimes
    assert vs_eager.cosine >= 0.95 and vs_eager.top1_agreement >= 0.75, vs_eager  # 5-photo calibration
    assert d["inference_precision"] == "f32"  # the float layers; the quantized ones run int8


def test_throughput_queue_returns_sequential_logits_in_order(r18_bundle):
    from resnet_deploy.backends.openvino import OpenVinoRunner

    batches = [inputs(4, seed) for seed in range(7)]  # every one different: a mix-up cannot pass
    with OpenVinoRunner(r18_bundle / "model.onnx", hint="throughput", precision="f32") as runner:
        d = runner.describe()
        assert d["performance_hint"] == "THROUGHPUT"
        assert runner.optimal_requests == d["optimal_number_of_infer_requests"] >= 1
        sequential = [runner.infer(b) for b in batches]
        for part in (slice(0, 7), slice(0, 1), slice(2, 5)):  # calls after the first must not read stale outputs
            many = runner.infer_many(batches[part])
            assert len(many) == len(sequential[part])
            for got, want in zip(many, sequential[part]):
                assert got.shape == (4, 10) and got.dtype == np.float32
                assert_fp32_parity(want, got)
        assert runner.infer_many([]) == []
        mixed = runner.infer_many([inputs(1, 9), inputs(3, 9)])  # dynamic batch inside one queue
        assert [m.shape[0] for m in mixed] == [1, 3]


def test_ir_written_and_read_back(r18_bundle, tmp_path):
    from resnet_deploy.backends.openvino import write_ir

    files = write_ir(r18_bundle / "model.onnx", tmp_path / "ir" / "model.xml")
    assert files == [tmp_path / "ir" / "model.xml", tmp_path / "ir" / "model.bin"]
    assert all(f.is_file() for f in files) and sorted(p.name for p in (tmp_path / "ir").iterdir()) == \
        ["model.bin", "model.xml"]  # no temporary files left behind
    onnx_size = (r18_bundle / "model.onnx").stat().st_size
    assert files[1].stat().st_size > 0.9 * onnx_size, "weights were compressed to fp16"
    from_onnx, _ = run_ov(r18_bundle / "model.onnx", inputs(), 4, precision="f32")
    from_ir, d = run_ov(files[0], inputs(), 4, precision="f32")
    assert_fp32_parity(from_onnx, from_ir)
    assert d["model"] == "model.xml"
    with pytest.raises(UserError, match="must end in .xml"):
        write_ir(r18_bundle / "model.onnx", tmp_path / "model.ir")
    with pytest.raises(UserError, match="does not exist"):
        write_ir(tmp_path / "missing.onnx", tmp_path / "m.xml")


def test_static_batch_and_threads(r18_bundle, eager):
    from resnet_deploy.backends.openvino import OpenVinoRunner

    with OpenVinoRunner(r18_bundle / "model.onnx", precision="f32", batch=4, threads=1) as runner:
        assert_fp32_parity(eager, validate.run_batches(runner, inputs(), 4))
        d = runner.describe()
        assert d["batch"] == 4 and d["inference_num_threads"] == 1
        with pytest.raises(UserError, match="compiled for batch 4"):
            runner.infer(inputs(1))


def test_in_memory_model_is_not_changed(r18_bundle):
    import openvino as ov

    from resnet_deploy.backends.openvino import OpenVinoRunner

    model = ov.Core().read_model(str(r18_bundle / "model.onnx"))
    with OpenVinoRunner(model, precision="f32", batch=2) as runner:
        assert runner.infer(inputs(2)).shape == (2, 10) and runner.describe()["model"] == "(in memory)"
    assert model.input(0).get_partial_shape()[0].is_dynamic


@pytest.mark.parametrize("options, message", [
    ({"precision": "fp8"}, "unknown OpenVINO precision 'fp8': choose one of f32, bf16"),
    ({"hint": "fast"}, "unknown OpenVINO performance hint 'fast': choose one of latency, throughput"),
    ({"threads": 0}, "threads 0 is invalid"),
    ({"batch": 0}, "batch 0 is invalid"),
    ({"device": "GPU"}, "device 'GPU' is not supported"),
])
def test_bad_options_fail_fast(r18_bundle, options, message):
    from resnet_deploy.backends.openvino import OpenVinoRunner

    with pytest.raises(UserError, match=message):
        OpenVinoRunner(r18_bundle / "model.onnx", **options)


def test_missing_model_and_inactive_runner(tmp_path):
    from resnet_deploy.backends.openvino import OpenVinoRunner

    with pytest.raises(UserError, match="does not exist"):
        OpenVinoRunner(tmp_path / "nope.onnx").activate()
    with pytest.raises(RuntimeError, match="before activate"):
        OpenVinoRunner(tmp_path / "nope.onnx").infer_many([inputs(1)])


# ------------------------------------------------------------------------------------------- peers benchmark
def peers(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PEERS), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


QUICK = ["--rounds", "2", "--duration", "0.2", "--warmup", "0.05", "--accuracy-samples", "8"]


def check_report(out: Path, expected: list[str]) -> dict:
    res = json.loads((out / "cpu_peers.json").read_text())
    md = (out / "cpu_peers.md").read_text()
    assert [v["name"] for v in res["variants"]] == expected
    assert res["machine"]["cpu"] and "avx2" in res["machine"]["isa_flags"] and res["versions"]["openvino"]
    for v in res["variants"]:
        assert not v.get("error"), v
        for b, row in v["batches"].items():
            assert len(row["ips_rounds"]) == 2 and row["ips_min"] <= row["ips_median"] <= row["ips_max"]
            assert row["ips_min"] > 0 and row["accuracy"]["samples"] == 8, (v["name"], b)
        assert f"| {v['name']} |" in md
    return {v["name"]: v for v in res["variants"]}


def test_peers_benchmark_latency_and_throughput_paths(r18_int8, tmp_path):
    names = ["ort-int8-onnxruntime-concurrent", "ov-f32", "ov-int8-onnxruntime"]
    r = peers(r18_int8, "--variants", ",".join(names), *QUICK, "--out-dir", tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    got = check_report(tmp_path, names)
    assert set(got["ort-int8-onnxruntime-concurrent"]["batches"]) == {"8"}  # a throughput-only variant
    f32 = got["ov-f32"]["batches"]
    assert f32["1"]["accuracy"]["top1_agreement"] == 1.0 and f32["8"]["accuracy"]["top1_agreement"] == 1.0
    assert min(f32[b]["accuracy"]["cosine"] for b in f32) >= tolerances.FP32["min_cosine"]
    assert f32["1"]["describe"]["performance_hint"] == "LATENCY" and f32["1"]["latency_ms_p50"] > 0
    d8 = f32["8"]["describe"]
    assert d8["performance_hint"] == "THROUGHPUT" and "AsyncInferQueue" in d8["mode"]
    assert d8["inference_precision"] == "f32"
    assert json.loads((tmp_path / "cpu_peers.json").read_text())["nncf"] is None  # not asked for: not quantized


@pytest.mark.slow
def test_peers_benchmark_every_variant(r18_int8, tmp_path):
    r = peers(r18_int8, *QUICK, "--out-dir", tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    names = ["torch-eager", "torch-compile", "ort-fp32", "ort-int8-tensorrt", "ort-int8-onnxruntime",
             "ort-int8-onnxruntime-concurrent", "ov-f32", "ov-default", "ov-int8-tensorrt", "ov-int8-onnxruntime",
             "ov-nncf-int8"]
    got = check_report(tmp_path, names)
    for name in ("torch-eager", "torch-compile", "ort-fp32", "ov-f32"):
        assert got[name]["batches"]["8"]["accuracy"]["top1_agreement"] == 1.0, name
    nncf = json.loads((tmp_path / "cpu_peers.json").read_text())["nncf"]
    assert nncf["samples"] == 5 and nncf["quantize_s"] > 0  # as many samples as the bundle's own calibration


@pytest.mark.parametrize("args, message", [
    (["--variants", "ov-fp64"], "unknown variant 'ov-fp64' for this bundle: choose from torch-eager"),
    (["--batches", "1,x"], "--batches '1,x' must be a comma list of integers"),
    (["--batches", "0"], "batch sizes must be >= 1"),
    (["--calib", "/nonexistent/calib"], "--calib path '/nonexistent/calib' does not exist"),
    (["--warmup", "-1"], "--warmup -1.0 must be >= 0 seconds"),
    (["--rounds", "0"], "argument --rounds: '0' must be > 0"),
    (["--skip", "torch-eager", "--frobnicate"], "unrecognized arguments: --frobnicate"),
])
def test_peers_benchmark_rejects_options_in_one_line(r18_bundle, tmp_path, args, message):
    r = peers(r18_bundle, *args, "--out-dir", tmp_path, timeout=120)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "cpu_peers.json").exists()


def test_peers_benchmark_lists_variants(r18_int8):
    r = peers(r18_int8, "--list", timeout=120)
    assert r.returncode == 0 and "ov-int8-tensorrt" in r.stdout and "ov-nncf-int8" in r.stdout, r.stderr
