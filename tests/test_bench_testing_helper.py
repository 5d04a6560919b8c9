"""``resnet_deploy.testing`` used as a user's CI test would use it, on the small resnet18 bundle."""

from __future__ import annotations

import json

import pytest

from resnet_deploy import testing


@pytest.fixture(scope="module")
def report(r18_bundle):
    return testing.benchmark(r18_bundle, backends="onnxruntime", batches=[2], iters=5, warmup=1, threads=1)


def test_first_call_writes_the_baseline_then_the_same_report_passes(report, tmp_path):
    base = tmp_path / "baselines" / "r18.json"
    testing.assert_no_regression(report, base)
    assert json.loads(base.read_text())["results"][0]["backend"] == "onnxruntime"
    testing.assert_no_regression(report, base, max_regression="10%", remeasure=False)


def test_injected_slowdown_raises_assertion_with_the_table(report, tmp_path):
    fast = json.loads(json.dumps(report))
    for r in fast["results"]:
        r["latency_ms"] = {k: v / 3 for k, v in r["latency_ms"].items()}
    base = tmp_path / "fast.json"
    base.write_text(json.dumps(fast))
    with pytest.raises(AssertionError, match=r"regression\(s\).*\n\| backend") as e:
        testing.assert_no_regression(report, base, max_regression="20%", remeasure=True, retries=1)
    assert "| onnxruntime | fp32 | 2 |" in str(e.value) and "re-measured" in str(e.value)


def test_budgets_and_accuracy_floors(report):
    testing.assert_latency(report, "onnxruntime", "fp32", max_p50_ms=60_000)
    testing.assert_accuracy(report, "onnxruntime", min_top1_agreement=1.0, min_cosine=0.9999)
    with pytest.raises(AssertionError, match="p50 .* > 1e-06 ms"):
        testing.assert_latency(report, "onnxruntime", max_p50_ms=1e-6)
    with pytest.raises(AssertionError, match="top1 was not measured"):
        testing.assert_accuracy(report, "onnxruntime", min_top1=0.5)
    with pytest.raises(AssertionError, match="no result for tensorrt"):
        testing.row(report, "tensorrt", "fp16")


def test_update_env_rewrites_the_baseline(report, tmp_path, monkeypatch):
    base = tmp_path / "b.json"
    base.write_text("{broken")
    monkeypatch.setenv(testing.UPDATE_ENV, "1")
    testing.assert_no_regression(report, base)
    assert json.loads(base.read_text())["schema_version"] == 2
