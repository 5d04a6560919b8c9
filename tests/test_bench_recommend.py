"""The ``recommended`` entry that ``triton`` and the C++ loader deploy: only a complete run on enough accuracy inputs
writes it, a pick changes only when beaten beyond the run's noise, and each pick says what Triton would serve.
Synthetic reports on the small resnet18 bundle (its manifest decides which cases a complete run measures)."""

from __future__ import annotations

import copy

import pytest

from resnet_deploy.bench.recommend import MIN_ACCURACY_SAMPLES, record, recommend
from resnet_deploy.bench.runners import select_cases
from resnet_deploy.bundle import read_manifest


def _row(backend, precision, artifact, p50, agreement=1.0, iqr=None):
    return {"backend": backend, "precision": precision, "artifact": artifact, "batch": 1, "mode": "latency",
            "latency_ms": {"p50": p50}, "throughput_ips": 1000 / p50,
            "spread_ms": {"iqr": p50 * 0.02 if iqr is None else iqr},
            "accuracy": {"top1_agreement": agreement, "spread_error": 0.0, "cosine": 1.0}}


def _report(manifest, samples=MIN_ACCURACY_SAMPLES, times=None, only=None):
    """A report with one row per case a plain ``bench`` runs on this bundle here (``only``: those backends),
    eager slowest; ``times`` overrides p50s by backend."""
    times = {"eager": 20.0, "onnxruntime": 5.0, "openvino": 6.0, **(times or {})}
    cases, _ = select_cases(manifest)
    rows = [_row(c.backend, str(c.precision), c.artifact, times.get(c.backend, 9.0)) for c in cases
            if only is None or c.backend in only]
    return {"machine": {"cpu": "test cpu", "isa": []}, "config": {"threads": 1, "accuracy_samples": samples},
            "results": rows}


def test_a_complete_run_records_its_pick_with_what_triton_serves(r18_bundle_copy):
    manifest = read_manifest(r18_bundle_copy)
    out = record(r18_bundle_copy, _report(manifest))
    pick = read_manifest(r18_bundle_copy)["recommended"]["cpu"]["latency"]
    assert out.recorded["cpu"]["latency"] == pick
    assert (pick["backend"], pick["artifact"], pick["kind"]) == ("onnxruntime", "model.onnxruntime.onnx", "onnx")
    # Triton's ONNX Runtime model serves the portable graph, not the fused one bench measured: the entry says so
    assert pick["served_from"] == "model.onnx"
    assert pick["by_backend"]["eager"]["served_from"] == "model.onnx"  # eager's graph, served by ONNX Runtime
    assert out.recorded["cpu"]["accuracy_samples"] == MIN_ACCURACY_SAMPLES


def test_a_narrowed_run_reports_its_best_and_leaves_the_entry_alone(r18_bundle_copy):
    manifest = read_manifest(r18_bundle_copy)
    record(r18_bundle_copy, _report(manifest))
    before = read_manifest(r18_bundle_copy)["recommended"]
    out = record(r18_bundle_copy, _report(manifest, times={"eager": 1.0}, only={"eager"}))
    assert read_manifest(r18_bundle_copy)["recommended"] == before and out.recorded == {}
    assert out.best["cpu"]["latency"]["backend"] == "eager"  # reported, not recorded
    (note,) = [n for n in out.notes if "left alone" in n]
    assert "did not measure onnxruntime fp32" in note


def test_too_few_accuracy_inputs_record_nothing_and_say_why(r18_bundle_copy):
    manifest = read_manifest(r18_bundle_copy)
    out = record(r18_bundle_copy, _report(manifest, samples=5))
    assert "recommended" not in read_manifest(r18_bundle_copy) and out.recorded == {} and out.best
    assert any("5 accuracy input(s) are too few" in n and "20.0 points" in n and f"--samples {MIN_ACCURACY_SAMPLES}"
               in n for n in out.notes)


def test_a_row_below_its_precision_bar_is_not_recommendable():
    """80% top-1 agreement passes INT8's 75% bar; 70% does not, however fast."""
    manifest = {"files": {}, "validation": {}}
    report = {"machine": {"cpu": "c"}, "config": {}, "results": [
        _row("onnxruntime", "fp32", "model.onnx", 5.0),
        _row("onnxruntime", "int8", "model.int8.onnxruntime.onnx", 1.0, agreement=0.70)]}
    entries, notes = recommend(report, manifest)
    assert entries["cpu"]["latency"]["precision"] == "fp32"
    assert any("int8" in n and "top-1 agreement 70.0% < 75%" in n for n in notes)
    report["results"][1]["accuracy"]["top1_agreement"] = 0.80
    assert recommend(report, manifest)[0]["cpu"]["latency"]["precision"] == "int8"


@pytest.mark.parametrize("new_p50,iqr,kept", [(4.8, 0.5, True), (4.0, 0.2, False)])
def test_the_pick_changes_only_beyond_the_runs_noise(new_p50, iqr, kept):
    """The previous pick (onnxruntime fp32 at 5.0 ms) against a new winner: 4% faster with an IQR of 10% of the
    p50 keeps it (noted); 20% faster with an IQR of 4-5% replaces it."""
    manifest = {"files": {}, "validation": {}}
    report = {"machine": {"cpu": "c"}, "config": {}, "results": [
        _row("onnxruntime", "fp32", "model.onnxruntime.onnx", 5.0, iqr=iqr),
        _row("openvino", "fp32", "model.onnx", new_p50, iqr=iqr)]}
    first, _ = recommend({**report, "results": [copy.deepcopy(report["results"][0])]}, manifest)
    entries, notes = recommend(report, manifest, previous=first)
    pick = entries["cpu"]["latency"]
    assert pick["backend"] == ("onnxruntime" if kept else "openvino")
    word = "kept onnxruntime fp32" if kept else "openvino fp32 (model.onnx) replaces onnxruntime fp32"
    assert any(n.startswith("cpu latency: " + word) and "noise" in n for n in notes), notes
    # on another CPU model the previous pick counts for nothing
    other = {"cpu": {**first["cpu"], "cpu": "another cpu"}}
    assert recommend(report, manifest, previous=other)[0]["cpu"]["latency"]["backend"] == "openvino"


def test_openvino_measured_on_an_onnx_graph_is_served_from_that_graph():
    """Triton's OpenVINO model serves the ONNX graph bench measured when the bundle has no IR (default_model_filename):
    the pick names it as what a repository would serve."""
    manifest = {"files": {"model.int8.onnxruntime.onnx": {"kind": "onnx", "precision": "int8", "target": "onnxruntime"}},
                "validation": {}}
    report = {"machine": {"cpu": "c"}, "config": {}, "results": [
        _row("openvino", "int8", "model.int8.onnxruntime.onnx", 1.0)]}
    pick = recommend(report, manifest)[0]["cpu"]["latency"]
    assert pick["artifact"] == "model.int8.onnxruntime.onnx" and pick["kind"] == "onnx"
    assert pick["served_from"] == "model.int8.onnxruntime.onnx" and "serving_note" not in pick


def test_a_pick_nothing_in_the_bundle_serves_says_so():
    manifest = {"files": {"model.int8.onnxruntime.onnx": {"kind": "onnx", "precision": "int8", "target": "onnxruntime"}},
                "validation": {}}
    report = {"machine": {"cpu": "c"}, "config": {}, "results": [
        _row("openvino", "int8", "model.int8.onnxruntime.onnx", 1.0)]}
    del manifest["files"]["model.int8.onnxruntime.onnx"]  # the measured file is gone from the bundle since
    pick = recommend(report, manifest)[0]["cpu"]["latency"]
    assert pick["served_from"] is None
    assert "no int8 file that Triton's OpenVINO model serves" in pick["serving_note"]
