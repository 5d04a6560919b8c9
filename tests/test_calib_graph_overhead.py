"""benchmarks/calib_graph_overhead.py: the graphs it compares read the same statistics, and a tiny run writes the
report it promises."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "calib_graph_overhead.py"


def load_script():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("calib_graph_overhead", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return module


def test_compared_minmax_graphs_give_the_same_extremes(r18_bundle):
    """The minmax graph without the per-channel max (the former layout) reads exactly the same maxima."""
    import onnx
    import onnxruntime as ort

    from resnet_deploy.precision import calibrate as cal

    script = load_script()
    model = onnx.load(str(r18_bundle / "model.onnx"))
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    tensors = cal.nonnegative_tensors(model) & {i for n in model.graph.node if n.op_type == "Conv" for i in n.input}
    graphs = script.build_graphs(model, sorted(tensors), x.shape, 256)
    new, old = graphs["minmax, ReduceMax of GlobalMaxPool (current)"], graphs["minmax, ReduceMax over each tensor"]
    assert [n.op_type for n in new.graph.node].count("GlobalMaxPool") == len(tensors) > 0
    assert "GlobalMaxPool" not in [n.op_type for n in old.graph.node]
    outs = [ort.InferenceSession(g.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})
            for g in (new, old)]
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_tiny_run_writes_the_report(r18_bundle, tmp_path):
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((16, 3, 64, 64)).astype(np.float32))
    out = tmp_path / "overhead"
    r = subprocess.run([sys.executable, str(SCRIPT), "--model", str(r18_bundle / "model.onnx"), "--calib", str(calib),
                        "--calib-size", "16", "--hist-values", "4096", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.with_suffix(".json").read_text())
    assert res["samples"] == 16 and res["values_per_image"] == 256 and len(res["graphs"]) == 5
    assert res["graphs"]["plain fp32 graph"]["vs_plain"] == 1.0
    assert all(np.isfinite(g["seconds"]) and g["seconds"] > 0 for g in res["graphs"].values())
    md = out.with_suffix(".md").read_text()
    assert "| plain fp32 graph |" in md and res["machine"]["cpu"] in md
