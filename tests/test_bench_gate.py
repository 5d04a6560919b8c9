"""The CI gate on reports: equal passes, an injected 2x slowdown or an accuracy drop fails, noise is filtered."""

from __future__ import annotations

import copy

import pytest

from resnet_deploy.bench.gate import compare, gate, parse_percent
from resnet_deploy.bench.report import schema_problems
from resnet_deploy.errors import UserError


def _row(backend, precision, batch, p50, top1_agreement=1.0, cosine=1.0):
    lat = {"p50": p50, "p90": p50 * 1.1, "p95": p50 * 1.2, "p99": p50 * 1.3, "mean": p50, "std": p50 * 0.05}
    return {"backend": backend, "precision": precision, "batch": batch, "latency_ms": lat,
            "throughput_ips": batch * 1000 / p50,
            "accuracy": {"top1": None, "top5": None, "top1_agreement": top1_agreement, "max_abs_diff": 1e-5,
                         "cosine": cosine}}


def _report(scale_eager=1.0, scale_ort=1.0, scale_int8=1.0):
    rows = []
    for b, base in ((1, 10.0), (8, 60.0)):
        rows.append(_row("eager", "fp32", b, base * scale_eager))
        rows.append(_row("onnxruntime", "fp32", b, base / 2 * scale_ort))
        rows.append(_row("onnxruntime", "int8", b, base / 5 * scale_int8, top1_agreement=0.99, cosine=0.995))
    return {"schema_version": 1, "machine": {"cpu": "test cpu"}, "model": {"arch": "resnet18"}, "results": rows}


def _slow(report, backend, precision, factor):
    out = copy.deepcopy(report)
    for r in out["results"]:
        if (r["backend"], r["precision"]) == (backend, precision):
            r["latency_ms"] = {k: v * factor for k, v in r["latency_ms"].items()}
    return out


def test_synthetic_reports_are_schema_valid():
    assert schema_problems(_report()) == []


def test_equal_reports_pass():
    res = compare(_report(), _report(), 0.10)
    assert res.passed and not res.suspects
    assert {c.verdict for c in res.checks} == {"ok"}


def test_injected_2x_slowdown_fails_after_remeasure():
    base, now = _report(), _slow(_report(), "onnxruntime", "int8", 2.0)
    calls = []

    def remeasure(keys):
        calls.append(keys)
        return _slow(_report(), "onnxruntime", "int8", 2.0)  # still slow when measured again

    res, final = gate(base, now, remeasure, 0.10, "eager")
    assert not res.passed
    failed = {c.key for c in res.failed}
    assert failed == {("onnxruntime", "int8", 1, "latency"), ("onnxruntime", "int8", 8, "latency")}
    assert all(c.verdict == "slower" and c.remeasured for c in res.failed)
    assert calls and ("eager", "fp32", 1, "latency") in calls[0]  # the reference row is re-measured with the suspect
    assert "+100.0%" in res.table(only_failed=True)
    assert all(r.get("remeasured") for r in final["results"] if r["precision"] == "int8")


def test_transient_slowdown_passes_when_remeasure_is_normal():
    res, final = gate(_report(), _slow(_report(), "onnxruntime", "fp32", 2.0), lambda keys: _report(), 0.10)
    assert res.passed
    assert any(c.remeasured for c in res.checks)


def test_machine_wide_slowdown_is_cancelled_by_the_reference_ratio():
    # everything 25% slower (a busy CI machine): the ratios are unchanged and 25% is within the 30% absolute cap
    now = _report(scale_eager=1.25, scale_ort=1.25, scale_int8=1.25)
    assert compare(_report(), now, 0.10, "eager").suspects == []
    assert len(compare(_report(), now, 0.10, None).suspects) == 6  # without a reference every row is a suspect


def test_model_slower_everywhere_is_caught_by_the_absolute_cap():
    # a 2x slower model slows the reference as much: the ratio hides it, the absolute cap does not
    now = _report(scale_eager=2.0, scale_ort=2.0, scale_int8=2.0)
    res = compare(_report(), now, 0.10, "eager", max_abs_regression=0.30)
    assert len(res.suspects) == 6
    assert compare(_report(), now, 0.10, "eager", max_abs_regression=1.5).suspects == []


def test_reference_row_slowdown_is_caught_absolutely():
    res, _ = gate(_report(), _slow(_report(), "eager", "fp32", 2.0),
                  lambda keys: _slow(_report(), "eager", "fp32", 2.0), 0.10)
    assert {c.key for c in res.failed} == {("eager", "fp32", 1, "latency"), ("eager", "fp32", 8, "latency")}


def test_accuracy_drop_fails_without_remeasure():
    now = _report()
    for r in now["results"]:
        if r["precision"] == "int8" and r["batch"] == 8:
            r["accuracy"]["top1_agreement"] = 0.90
    res, _ = gate(_report(), now, lambda keys: pytest.fail("accuracy is not re-measured"), 0.10)
    (bad,) = res.failed
    assert bad.key == ("onnxruntime", "int8", 8, "latency") and bad.verdict == "accuracy"
    assert "top1_agreement 99.0% -> 90.0%" in res.table(only_failed=True)


def test_cosine_drop_fails_and_small_noise_does_not():
    now = _report()
    now["results"][2]["accuracy"]["cosine"] = 0.98
    now["results"][5]["accuracy"]["cosine"] = 0.9949  # within the 1e-3 tolerance
    res = compare(_report(), now, 0.10)
    assert [c.key for c in res.failed] == [("onnxruntime", "int8", 1, "latency")]


def test_new_and_missing_rows_are_listed_not_failed():
    now = _report()
    now["results"] = [r for r in now["results"] if r["precision"] != "int8"] + [_row("tensorrt", "fp16", 1, 1.0)]
    res = compare(_report(), now, 0.10)
    verdicts = {c.key: c.verdict for c in res.checks}
    assert verdicts[("onnxruntime", "int8", 1, "latency")] == "missing" and verdicts[("tensorrt", "fp16", 1, "latency")] == "new"
    assert res.passed


@pytest.mark.parametrize("text,value", [("10%", 0.10), ("10", 0.10), ("2.5 %", 0.025)])
def test_parse_percent(text, value):
    assert parse_percent(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["-5%", "0", "ten", ""])
def test_parse_percent_rejects(text):
    with pytest.raises(UserError):
        parse_percent(text)


def test_retries_clear_a_suspect_on_any_normal_remeasurement():
    answers = [_slow(_report(), "onnxruntime", "fp32", 2.0), _report()]  # slow again, then normal
    res, _ = gate(_report(), _slow(_report(), "onnxruntime", "fp32", 2.0), lambda keys: answers.pop(0), 0.10,
                  retries=2)
    assert res.passed and not answers
    answers = [_slow(_report(), "onnxruntime", "fp32", 2.0)] * 3
    res, final = gate(_report(), _slow(_report(), "onnxruntime", "fp32", 2.0), lambda keys: answers.pop(0), 0.10,
                      retries=3)
    assert not res.passed and not answers and "3 round(s)" in res.notes[-1]
    row = next(r for r in final["results"] if (r["backend"], r["precision"], r["batch"]) == ("onnxruntime", "fp32", 1))
    assert row["first_latency_ms"]["p50"] == pytest.approx(10.0)  # the first run's time is kept


def test_unmeasured_reference_falls_back_to_absolute_with_a_note():
    now = _slow(_report(), "onnxruntime", "fp32", 1.25)
    now["results"] = [r for r in now["results"] if r["backend"] != "eager"]
    res = compare(_report(), now, 0.10, "eager")
    assert set(res.suspects) == {("onnxruntime", "fp32", 1, "latency"), ("onnxruntime", "fp32", 8, "latency")}
    assert any("absolute time only" in n for n in res.notes)


def _with_min(report, backend=None, factor=1.0):
    """``report`` with p10/min recorded (a newer report); ``backend``'s fastest calls ``factor`` times slower."""
    out = copy.deepcopy(report)
    for r in out["results"]:
        lat = r["latency_ms"]
        lat["p10"], lat["min"] = lat["p50"] * 0.9, lat["p50"] * 0.8
        if r["backend"] == backend:
            lat["p10"], lat["min"] = lat["p10"] * factor, lat["min"] * factor
    return out


def test_gate_on_the_fastest_call_ignores_a_slower_median():
    """--statistic min: a shared runner's load stretched the median of every ONNX Runtime row by 60%, not its fastest
    calls: no suspect on min, every ONNX Runtime row a suspect on p50; a real slowdown moves min too."""
    base, now = _with_min(_report()), _with_min(_slow(_report(), "onnxruntime", "fp32", 1.6))
    for r in now["results"]:
        if r["backend"] == "onnxruntime" and r["precision"] == "fp32":
            r["latency_ms"]["p10"], r["latency_ms"]["min"] = r["latency_ms"]["p10"] / 1.6, r["latency_ms"]["min"] / 1.6
    assert len(compare(base, now, 0.20, "eager").suspects) == 2
    res = compare(base, now, 0.20, "eager", statistic="min")
    assert res.suspects == [] and res.statistic == "min" and "baseline min ms" in res.table()
    slow = compare(base, _with_min(_report(), "onnxruntime", 2.0), 0.20, "eager", statistic="min")
    assert {k[:2] for k in slow.suspects} == {("onnxruntime", "fp32"), ("onnxruntime", "int8")}


def test_statistic_missing_from_an_old_baseline_falls_back_to_p50_with_a_note():
    res = compare(_report(), _with_min(_report()), 0.20, "eager", statistic="p10")
    assert res.passed and any("judged on p50" in n for n in res.notes)
    with pytest.raises(UserError, match="--statistic 'p42' is invalid"):
        compare(_report(), _report(), 0.20, statistic="p42")


def test_default_threshold_is_20_percent():
    """Small shared runners swing by 10-20% between runs of an unchanged model (docs/benchmark.md)."""
    assert not compare(_report(), _slow(_report(), "onnxruntime", "int8", 1.15)).suspects
    assert compare(_report(), _slow(_report(), "onnxruntime", "int8", 1.25)).suspects
