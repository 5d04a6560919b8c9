"""benchmarks/fusion_bench.py: the single-layer graphs compare equal work, the paired statistics and the target
verdict behave on rounds with a known answer, and a tiny end-to-end run writes the report it promises."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "fusion_bench.py"


@pytest.fixture(scope="module")
def fb():
    spec = importlib.util.spec_from_file_location("fusion_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("shape", [(8, 16, 1, 10), (8, 8, 3, 9)])
def test_layer_graphs_compute_the_same_thing(fb, shape):
    """The single-layer check compares fused and unfused graphs: they must give the same numbers in ORT."""
    import onnxruntime as ort

    cin, cout, k, hw = shape
    rng = np.random.default_rng(3)
    arrays = {"X": rng.standard_normal((1, cin, hw, hw)).astype(np.float32),
              "Z": rng.standard_normal((1, cout, hw, hw)).astype(np.float32)}
    out = {}
    for kind in fb.LAYER_KINDS:
        s = ort.InferenceSession(fb.layer_graph(kind, cin, cout, k, hw), providers=["CPUExecutionProvider"])
        out[kind] = s.run(None, {i.name: arrays[i.name] for i in s.get_inputs()})[0]
    np.testing.assert_allclose(out["FusedConv(Relu)"], out["Conv+Relu"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["FusedConv(Relu, Z)"], out["Conv+Add+Relu"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["Conv+Relu"], np.maximum(out["Conv"], 0), rtol=1e-6, atol=1e-6)
    assert (out["Conv"] < 0).any() and not np.allclose(out["Conv+Add+Relu"], out["Conv+Relu"])


def synthetic_rounds(gains: dict, n: int = 40, seed: int = 0) -> tuple[list[dict], dict]:
    """Rounds on a drifting machine (+-20% between rounds, +-2% noise per run) with known true speed-ups."""
    rng = random.Random(seed)
    rounds, runs = [], {}
    for _ in range(n):
        base = 0.1 * rng.uniform(0.8, 1.2)
        r = {c: base / gains.get(c, 1.0) * rng.uniform(0.98, 1.02) for c in gains}
        rounds.append(r)
        for c, t in r.items():
            runs.setdefault(c, []).append(t)
    return rounds, runs


def test_paired_speedups_recover_known_gains_under_drift(fb):
    gains = {fb.BASE: 1.0, fb.FUSED: 1.05, fb.EXT: 1.02, fb.ALL: 1.40, fb.FUSED_ALL: 1.40}
    rounds, runs = synthetic_rounds(gains)
    creation = {c: [0.05] for c in gains}
    s = fb.summarise(1, rounds, runs, creation)
    for c, g in gains.items():
        point, lo, hi = s["configs"][c]["speedup"]
        assert lo <= g <= hi and abs(point - g) < 0.01, (c, s["configs"][c]["speedup"])
    # margin = (1.05 - 1) - 0.95 * (1.02 - 1) = 0.031, clearly above 0 with +-2% noise and 40 rounds
    assert s["target_margin"][0] == pytest.approx(0.031, abs=0.01)
    assert s["target"] == "met"
    assert s["fused_share_of_extended_gain"] == pytest.approx(2.5, rel=0.3)
    assert s["fused_vs_extended"][0] == pytest.approx(1.05 / 1.02, abs=0.01)
    # The drift is 20x the effect: ratios of unpaired medians could not have resolved it, the paired ones do.
    assert max(runs[fb.BASE]) / min(runs[fb.BASE]) > 1.3


def test_target_not_met_when_fused_graph_gains_less(fb):
    rounds, runs = synthetic_rounds({fb.BASE: 1.0, fb.FUSED: 1.00, fb.EXT: 1.06, fb.ALL: 1.4, fb.FUSED_ALL: 1.4})
    s = fb.summarise(8, rounds, runs, {c: [0.05] for c in fb.CONFIGS})
    assert s["target"] == "not met" and s["target_margin"][2] < 0


def test_target_undecided_when_noise_covers_the_margin(fb):
    assert fb.verdict((0.01, -0.02, 0.04)) == "met by the point estimate, not outside the 95% interval"
    assert fb.verdict((0.01, 0.001, 0.04)) == "met"
    assert fb.verdict((-0.01, -0.04, 0.02)) == "not met"


@pytest.mark.slow
def test_end_to_end_smoke_run(tmp_path):
    """resnet18 at 32x32, two rounds: every configuration in its own process, the report and its schema."""
    cmd = [sys.executable, str(SCRIPT), "--arch", "resnet18", "--input-size", "32", "--batches", "1,2",
           "--rounds", "2", "--replicas", "1", "--warmup", "1", "--profile-runs", "2", "--layer-rounds", "3",
           "--name", "smoke", "--out-dir", str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "smoke.json").read_text())
    assert [b["batch"] for b in res["batches"]] == [1, 2]
    for b in res["batches"]:
        assert list(b["configs"]) == ["unfused/disable", "fused/disable", "unfused/extended", "unfused/all",
                                      "fused/all"]
        assert all(c["runs"] == 2 and c["session_create_s"] > 0 for c in b["configs"].values())
        assert b["target"] in ("met", "not met", "met by the point estimate, not outside the 95% interval")
    kernels = res["profile"]["kernel_ms"]
    assert kernels["fused/disable"]["FusedConv"] > 0
    assert "Relu" not in kernels["fused/disable"] and "Add" not in kernels["fused/disable"]
    assert kernels["unfused/disable"]["Relu"] > 0 and kernels["unfused/disable"]["Add"] > 0
    assert res["graph_ops"]["fused (ours), optimizations off"]["com.microsoft:FusedConv"] == 17
    assert "com.microsoft.nchwc:Conv" in res["graph_ops"]["unfused at ORT ALL"]
    assert len(res["layers"]) == 4
    assert all(row[kind] > 0 for row in res["layers"] for kind in ("Conv", "FusedConv(Relu, Z)"))
    md = (tmp_path / "smoke.md").read_text()
    assert "| fused | disable | 2 |" in md and "margin" in md


@pytest.mark.parametrize("argv, names", [
    (["--rounds", "0"], ["--rounds", "'0'", ">= 1"]),
    (["--batches", "1,x"], ["--batches", "'x'", ">= 1"]),
    (["--input-size", "8"], ["--input-size", "'8'", ">= 32"]),
    (["--arch", "resnet99"], ["--arch", "'resnet99'", "resnet50"]),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, argv, names):
    out = tmp_path / "results"
    r = subprocess.run([sys.executable, str(SCRIPT), *argv, "--out-dir", str(out)], capture_output=True, text=True,
                       cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and all(n in lines[0] for n in names), r.stderr
    assert not out.exists()
