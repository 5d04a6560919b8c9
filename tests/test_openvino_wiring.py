"""OpenVINO through the toolkit: the ``openvino`` target writes validated IR into the bundle, ``bench --backend
openvino`` runs it in latency and throughput mode, ``bench`` records the recommended artifact, and ``triton`` /
the C++ loader follow the recommendation when no backend or precision is given."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from resnet_deploy.bundle import read_manifest, verify
from resnet_deploy.validate import BARS, Parity

from .conftest import IMAGES, SMALL, run_cli
from .test_imports import BLOCKER

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason="openvino is not installed (pip install 'resnet-deploy[openvino]')")


@pytest.fixture(scope="module")
def ov_bundle(tmp_path_factory):
    """resnet18 at 64x64 with INT8 and the openvino target, from the command line (calibrated on the photos)."""
    out = tmp_path_factory.mktemp("ov-wiring") / "b"
    r = run_cli("export", "--arch", "resnet18", "--weights", "random", "--input-size", SMALL, "--num-classes", "10",
                "--images", IMAGES, "--int8", "--calib", IMAGES, "--max-drop", "100", "--target",
                "onnxruntime,openvino", "--engine", "never", "--out", out)
    assert r.returncode == 0, r.stderr
    return out, r


def test_openvino_target_writes_validated_ir(ov_bundle):
    out, r = ov_bundle
    m = read_manifest(out)
    for precision, xml in (("fp32", "model.openvino.xml"), ("int8", "model.int8.openvino.xml")):
        entry, weights = m["files"][xml], m["files"][xml[:-4] + ".bin"]
        assert entry["kind"] == "openvino-ir" and entry["target"] == "openvino" and entry["precision"] == precision
        assert weights["kind"] == "openvino-weights"
        record = m["validation"][xml]
        bar = BARS[precision]
        assert record["passed"] and record["bar"] == bar.to_dict() and record["nonfinite"] is None
        assert Parity.from_dict(record).meets(bar) and record["backend"].startswith("openvino-cpu")
    assert m["files"]["model.int8.openvino.xml"]["source"] == "model.int8.onnxruntime.onnx"
    # the openvino target also checks OpenVINO's bf16 run of the fp32 IR (or says why not)
    ov_bf16 = m["precision"]["bf16"]["openvino"]
    if "skipped" not in ov_bf16:
        assert ov_bf16["artifact"] == "model.openvino.xml" and ov_bf16["passed"]
        assert m["validation"]["model.openvino.xml@bf16"]["passed"]
        assert m["files"]["model.openvino.xml"]["inference_precisions"] == ["bf16"]
    assert "openvino model.openvino.xml (fp32" in r.stdout and verify(out) == []


def test_bench_openvino_both_modes_and_the_recommendation(ov_bundle, tmp_path):
    out, _ = ov_bundle
    r = run_cli("bench", out, "--backend", "eager,onnxruntime,openvino", "--batch", "1,2", "--iters", "4",
                "--warmup", "1", "--mode", "both", "--no-plot", "--out", tmp_path / "rep", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    from resnet_deploy.backends.openvino import bf16_supported

    ov = {(row["precision"], row["mode"], row["batch"]): row for row in result["results"] if row["backend"] == "openvino"}
    precisions = ("fp32", "bf16", "int8") if bf16_supported() else ("fp32", "int8")  # bf16: the fp32 IR in bf16
    assert set(ov) == {(p, m, b) for p in precisions for m in ("latency", "throughput") for b in (1, 2)}
    assert ov[("fp32", "latency", 1)]["artifact"] == "model.openvino.xml"
    assert ov[("int8", "latency", 1)]["artifact"] == "model.int8.openvino.xml"
    assert ov[("fp32", "latency", 1)]["runner"]["inference_precision"] == "f32"  # fp32 means fp32
    if bf16_supported():
        assert ov[("bf16", "latency", 1)]["artifact"] == "model.openvino.xml"
        assert ov[("bf16", "latency", 1)]["runner"]["inference_precision"] == "bf16"
    assert ov[("fp32", "throughput", 2)]["runner"]["performance_hint"] == "THROUGHPUT"
    assert ov[("fp32", "throughput", 2)]["in_flight"] >= 1
    assert all(row["accuracy"]["top1_agreement"] == 1.0 for k, row in ov.items() if k[0] == "fp32")
    recommended = read_manifest(out)["recommended"]["cpu"]
    assert recommended == result["recommended"]["cpu"]
    assert recommended["isa"] and recommended["cpu"]
    for mode in ("latency", "throughput"):
        pick = recommended[mode]
        rows = [row for row in result["results"] if row["mode"] == mode and row["batch"] == pick["batch"]]
        best = (min(rows, key=lambda x: x["latency_ms"]["p50"]) if mode == "latency"
                else max(rows, key=lambda x: x["throughput_ips"]))
        assert (pick["backend"], pick["precision"], pick["artifact"]) == (best["backend"], best["precision"],
                                                                           best["artifact"])
        assert set(pick["by_backend"]) == {"eager", "onnxruntime", "openvino"}
    assert verify(out) == []  # the manifest changed, the artifacts did not


def test_triton_openvino_model_config_parses(ov_bundle, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    out, _ = ov_bundle
    repo = tmp_path / "repo"
    r = run_cli("triton", out, "--repo", repo, "--backend", "openvino", "--precision", "int8", "--device", "cpu",
                "--dynamic-batching")
    assert r.returncode == 0, r.stderr
    cfg = text_format.Parse((repo / "resnet18_ov" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert cfg.backend == "openvino" and not cfg.platform and cfg.max_batch_size == 8
    assert cfg.parameters["PERFORMANCE_HINT"].string_value == "THROUGHPUT"
    assert cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert (repo / "resnet18_ov" / "1" / "model.xml").read_bytes() == (out / "model.int8.openvino.xml").read_bytes()
    assert (repo / "resnet18_ov" / "1" / "model.bin").is_file()


def test_triton_follows_the_recommendation(ov_bundle, tmp_path):
    """With no --backend and no --precision, the bundle's recommendation for the device decides."""
    import shutil

    out, _ = ov_bundle
    b = tmp_path / "b"
    shutil.copytree(out, b)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["recommended"] = {"cpu": {"cpu": "test", "throughput": {
        "backend": "openvino", "precision": "int8", "artifact": "model.int8.openvino.xml", "batch": 8}}}
    (b / "manifest.json").write_text(json.dumps(manifest))
    r = run_cli("triton", b, "--repo", tmp_path / "repo", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert [p.name for p in sorted((tmp_path / "repo").iterdir()) if p.is_dir()] == ["resnet18_ov"]
    assert "recommended for cpu by bench" in r.stdout
    chosen = json.loads((tmp_path / "repo" / "resnet_deploy.json").read_text())
    assert chosen["precision"] == "int8" and chosen["chosen_by"].startswith("recommended for cpu")


def test_openvino_target_without_openvino_names_the_extra(tmp_path):
    r = subprocess.run([sys.executable, "-c", BLOCKER + "\nfrom resnet_deploy.cli import main\nraise SystemExit(main("
                        f"['export', '--arch', 'resnet18', '--weights', 'random', '--input-size', '{SMALL}', "
                        f"'--target', 'openvino', '--out', '{tmp_path / 'b'}']))"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1] == ("error: openvino is not installed for OpenVINO inference: install it "
                                                 "with pip install 'resnet-deploy[openvino]'")
    assert not (tmp_path / "b").exists()


def test_triton_serves_an_openvino_bf16_pick_as_the_fp32_ir(ov_bundle, tmp_path):
    """OpenVINO's bf16 is the fp32 IR at bf16 inference precision: a bf16 recommendation is served as that IR."""
    import shutil

    out, _ = ov_bundle
    b = tmp_path / "b"
    shutil.copytree(out, b)
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["recommended"] = {"cpu": {"cpu": "test", "throughput": {
        "backend": "openvino", "precision": "bf16", "artifact": "model.openvino.xml", "batch": 8}}}
    (b / "manifest.json").write_text(json.dumps(manifest))
    r = run_cli("triton", b, "--repo", tmp_path / "repo", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "repo" / "resnet18_ov" / "1" / "model.xml").read_bytes() == (b / "model.openvino.xml").read_bytes()
    assert "served as the fp32 IR" in r.stdout
