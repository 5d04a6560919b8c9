"""``resnet-deploy bench`` end to end on the small resnet18 bundle: real workers, real ORT sessions, real images."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from resnet_deploy.backends import table
from resnet_deploy.bench.gate import CI_OPTIONS
from resnet_deploy.bench.report import ACCURACY_KEYS, LATENCY_KEYS, schema_problems

from .conftest import IMAGES, run_cli
from .tolerances import FP32

FAST = ("--iters", "5", "--warmup", "1", "--threads", "1")

@pytest.fixture(scope="module")
def r18_bundle(r18_bundle, tmp_path_factory):
    """A private copy: bench records its recommendation in the bundle's manifest."""
    out = tmp_path_factory.mktemp("bench-bundle") / "r18"
    shutil.copytree(r18_bundle, out)
    return out


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """An ImageFolder layout (class sub-folders) of the test photos: gives labels, hence top-1/top-5."""
    root = tmp_path_factory.mktemp("imagefolder")
    for cls, names in {"cat_or_cup": ["chelsea.jpg", "coffee.jpg"], "space": ["astronaut.png", "rocket.png"]}.items():
        (root / cls).mkdir()
        for n in names:
            shutil.copy(IMAGES / n, root / cls / n)
    return root


@pytest.fixture(scope="module")
def first_run(r18_bundle, image_folder, tmp_path_factory):
    """One real run (eager + ONNX Runtime, batches 1 and 2) that also writes a baseline."""
    out = tmp_path_factory.mktemp("bench")
    base = out / "baseline.json"
    res = run_cli("bench", r18_bundle, "--backend", "eager,onnxruntime", "--batch", "1,2", *FAST,
                  "--images", image_folder, "--out", out / "report", "--baseline", base, "--update-baseline")
    assert res.returncode == 0, res.stderr
    return res, out / "report", base


def test_report_is_schema_2_with_every_field(first_run):
    res, out, base = first_run
    report = json.loads((out / "report.json").read_text())
    assert schema_problems(report) == []
    assert report["schema_version"] == 2 and report["config"]["modes"] == ["latency"]
    assert all(r["mode"] == "latency" and r["in_flight"] == 1 for r in report["results"])
    # by default each runtime runs as it ships: spin-waiting on, and the report says so
    assert report["config"]["quiet_threads"] is False and "runtime defaults" in report["config"]["threading"]
    assert all(r["runner"]["spinning"] for r in report["results"] if r["backend"] == "onnxruntime")
    m = report["machine"]
    assert m["cpu"] and m["cores_logical"] >= 1 and m["libraries"]["onnxruntime"] and "gpus" in m
    assert report["model"]["arch"] == "resnet18"
    keys = {(r["backend"], r["precision"], r["batch"]) for r in report["results"]}
    assert keys == {("eager", "fp32", 1), ("eager", "fp32", 2), ("onnxruntime", "fp32", 1), ("onnxruntime", "fp32", 2)}
    for r in report["results"]:
        assert set(LATENCY_KEYS) <= set(r["latency_ms"]) and r["iterations"] == 5
        assert r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
        assert r["throughput_ips"] > 0 and r["peak_host_memory_mb"] > 50
        assert set(r["accuracy"]) == {*ACCURACY_KEYS, "spread_error"}  # spread_error: optional, newer reports
        acc = r["accuracy"]
        assert 0 <= acc["top1"] <= acc["top5"] <= 1  # labelled images: both measured
        assert acc["top1_agreement"] >= FP32["min_agreement"] and acc["cosine"] >= FP32["min_cosine"]
    eager = [r for r in report["results"] if r["backend"] == "eager"]
    assert all(r["accuracy"]["max_abs_diff"] == 0 for r in eager)  # the reference against itself
    # --threads reaches every backend and is reported
    assert report["config"]["threads"] == 1
    assert all(r["runner"]["threads"] == 1 for r in report["results"])
    assert "own fresh worker process" in report["config"]["isolation"]
    assert report["config"]["accuracy_inputs"].startswith("images:4")


def test_markdown_and_png_are_written_and_printed(first_run):
    res, out, base = first_run
    md = (out / "report.md").read_text()
    assert "| onnxruntime | fp32 | model.onnxruntime.onnx | 2 |" in md and md in res.stdout
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(base.read_text())["results"] == json.loads((out / "report.json").read_text())["results"]


def test_random_inputs_give_agreement_but_no_top1(r18_bundle, tmp_path):
    res = run_cli("bench", r18_bundle, "--backend", "onnxruntime", "--batch", "4", *FAST, "--no-plot",
                  "--out", tmp_path / "r")
    assert res.returncode == 0, res.stderr
    (row,) = json.loads((tmp_path / "r" / "report.json").read_text())["results"]
    acc = row["accuracy"]
    assert acc["top1"] is None and acc["top5"] is None
    assert acc["top1_agreement"] == 1.0 and acc["cosine"] >= FP32["min_cosine"] and acc["max_abs_diff"] < 1e-3
    assert not (tmp_path / "r" / "report.png").exists()
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["config"]["accuracy_samples"] == 64  # enough for the recommendation's bars
    assert "accuracy inputs: random:64 seed=0 (seeded standard-normal inputs: no images given)" in res.stdout
    # every artifact of the bundle is accounted for: eager's program was not selected
    skipped = {s["artifact"]: s["reason"] for s in report["skipped"]}
    assert skipped["model.pt2"].startswith("eager fp32, ") and "not selected (--backend onnxruntime)" in skipped["model.pt2"]
    assert "- model.pt2 (torch-exported-program, fp32): skipped: eager fp32, eager-channels-last fp32" in res.stdout
    # a narrowed run reports its best and leaves the bundle's recommendation alone
    assert "best of this run for cpu latency: onnxruntime fp32" in res.stderr
    assert "recommendation for cpu left alone: this run did not measure eager fp32" in res.stderr


def test_gate_fails_on_injected_2x_slowdown_and_accuracy_drop(first_run, r18_bundle, image_folder, tmp_path):
    _, _, base = first_run
    fast = json.loads(base.read_text())
    for r in fast["results"]:
        if r["backend"] == "onnxruntime":
            # the baseline says ONNX Runtime was 3x faster: this run is a >2x slowdown against it
            r["latency_ms"] = {k: v / 3 for k, v in r["latency_ms"].items()}
            if r["batch"] == 2:
                r["accuracy"]["top1"] = r["accuracy"]["top1"] + 0.25
    (tmp_path / "fast.json").write_text(json.dumps(fast))
    res = run_cli("bench", r18_bundle, "--backend", "eager,onnxruntime", "--batch", "1,2", *FAST, "--no-plot",
                  "--images", image_folder, "--baseline", tmp_path / "fast.json", "--retries", "1",
                  "--out", tmp_path / "r")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "REGRESSIONS" in res.stdout
    assert "| onnxruntime | fp32 | 1 |" in res.stdout and "slower (re-measured)" in res.stdout
    assert "accuracy" in res.stdout and "top1 " in res.stdout
    assert "regressed against" in res.stderr.strip().splitlines()[-1]


def test_gate_passes_same_model_with_loose_threshold(first_run, r18_bundle, image_folder, tmp_path):
    _, _, base = first_run
    res = run_cli("bench", r18_bundle, "--backend", "onnxruntime", "--batch", "1", *FAST, "--no-plot",
                  "--images", image_folder, "--baseline", base, "--max-regression", "400%", "--out", tmp_path / "r")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "gate passed" in res.stderr


@pytest.mark.parametrize("args,needle", [
    (["--backend", "tpu"], "unknown backend 'tpu'"),
    (["--batch", "0"], "--batch '0' is invalid"),
    (["--batch", "1,x"], "--batch '1,x' is invalid"),
    (["--precision", "fp8"], "unknown precision 'fp8'"),
    (["--iters", "0"], "--iters 0 is invalid"),
    (["--backend", "tensorrt"], "tensorrt is not installed"),
    (["--backend", "onnxruntime-cuda"], "onnxruntime-gpu is not installed"),
    (["--baseline", "does-not-exist.json"], "does not exist"),
    (["--max-regression", "lots"], "--max-regression 'lots' is invalid"),
])
def test_bad_input_is_one_line_exit_2(r18_bundle, tmp_path, args, needle):
    res = run_cli("bench", r18_bundle, *args, "--out", tmp_path / "r", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], res.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("content,needle", [
    ("{not json", "is not valid JSON"),
    (json.dumps({"schema_version": 1, "results": []}), "is not a benchmark report"),
    (json.dumps({"schema_version": 3, "machine": {}, "model": {}, "results": []}), "schema_version is 3"),
])
def test_malformed_baseline_is_one_line_exit_2(r18_bundle, tmp_path, content, needle):
    (tmp_path / "old.json").write_text(content)
    res = run_cli("bench", r18_bundle, "--baseline", tmp_path / "old.json", "--out", tmp_path / "r")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert not (tmp_path / "r").exists()


def test_existing_output_needs_force(r18_bundle, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "report.json").write_text("{}")
    res = run_cli("bench", r18_bundle, "--out", tmp_path / "r")
    assert res.returncode == 2 and "--force" in res.stderr
    assert (tmp_path / "r" / "report.json").read_text() == "{}"


def test_throughput_mode_and_quiet_threads(r18_bundle, first_run, tmp_path):
    """--mode both: a latency and a throughput row per case, each mode in its own worker; the throughput row keeps
    one request per core in flight (ONNX Runtime concurrent runs) and gives the same logits; --quiet-threads is
    recorded. The schema-1-era latency baseline still gates the latency rows."""
    _, _, base = first_run
    res = run_cli("bench", r18_bundle, "--backend", "onnxruntime", "--batch", "2", "--iters", "8", "--warmup", "1",
                  "--mode", "both", "--quiet-threads", "--out", tmp_path / "r", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["mode"]: r for r in json.loads(res.stdout)["results"]}
    assert set(rows) == {"latency", "throughput"}
    thr = rows["throughput"]
    assert thr["in_flight"] >= 1 and thr["requests_per_round"] >= 4 and thr["throughput_ips"] > 0
    assert thr["runner"]["concurrent_requests"] == thr["in_flight"] and thr["runner"]["threads"] == 1
    assert thr["accuracy"]["top1_agreement"] == 1.0 and thr["accuracy"]["cosine"] >= FP32["min_cosine"]
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["config"]["quiet_threads"] is True and all(not r["runner"]["spinning"] for r in report["results"])
    old = json.loads(base.read_text())
    old["schema_version"] = 1  # a baseline written before modes existed: no "mode" in its rows
    for r in old["results"]:
        r.pop("mode", None)
    (tmp_path / "v1.json").write_text(json.dumps(old))
    res = run_cli("bench", r18_bundle, "--backend", "eager,onnxruntime", "--batch", "1", *FAST, "--mode", "both",
                  "--baseline", tmp_path / "v1.json", "--max-regression", "500%", "--out", tmp_path / "r2", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["gate"]["passed"] is True


def test_the_same_bench_twice_writes_two_fresh_folders(r18_bundle, tmp_path):
    """Without --out each run gets the first free ./bench-<bundle>-<n>: a README line can be run twice."""
    args = ("bench", r18_bundle, "--backend", "onnxruntime", "--batch", "1", *FAST, "--no-plot")
    for n in (1, 2):
        res = run_cli(*args, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert f"report: {tmp_path / f'bench-r18-{n}' / 'report.json'}" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench-r18-1", "bench-r18-2"]
    assert all((tmp_path / f"bench-r18-{n}" / "report.json").is_file() for n in (1, 2))


def test_the_documented_ci_gate_passes_on_the_unchanged_model(r18_bundle, tmp_path):
    """The gate as docs/benchmark.md and bench --help give it (``CI_OPTIONS``): record the baseline, then gate the
    same bundle. One run here; its false-alarm rate and wall time are measured by benchmarks/gate_example.py."""
    base = tmp_path / "ci" / "base.json"
    res = run_cli("bench", r18_bundle, "--baseline", base, "--update-baseline", *CI_OPTIONS, "--no-plot", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"--baseline '{base}' does not exist yet: this run writes it" in res.stderr
    assert "create it with --update-baseline" not in res.stderr and base.is_file()
    res = run_cli("bench", r18_bundle, "--baseline", base, *CI_OPTIONS, "--no-plot", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    gate = json.loads(res.stdout)["gate"]
    assert gate["passed"] and gate["statistic"] == "min" and gate["threshold"] == 0.30


def test_help_shows_what_each_option_takes_and_every_backend():
    res = run_cli("bench", "--help")
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    for option, metavar in (("--max-regression", "PCT"), ("--max-abs-regression", "PCT"),
                            ("--accuracy-tolerance", "POINTS"), ("--batch", "N,N"), ("--retries", "N"),
                            ("--reference", "BACKEND|none"), ("--statistic", "p50|p10|min")):
        assert f"{option} {metavar}" in text, option
    assert " TEXT " not in text and " INTEGER " not in text
    assert all(name in text for name in table.names())
    assert "resnet-deploy bench BUNDLE --baseline ci/base.json " + " ".join(CI_OPTIONS) in text
    docs = (Path(__file__).parents[1] / "docs" / "benchmark.md").read_text()
    assert " ".join(CI_OPTIONS) in docs  # the documented gate is the one benchmarks/gate_example.py measures
