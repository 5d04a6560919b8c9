"""What the calibration statistics graph costs on top of a plain fp32 pass, per way of reading the tensors.

ONNX Runtime's CPU provider runs convolutions in a blocked channel layout (NCHWc) and copies a tensor back to NCHW
(a ``ReorderOutput`` node) before any consumer without a blocked kernel. A probe that reads a tensor through
Reshape/GatherElements (a sample of positions) or ReduceMin/ReduceMax (exact extremes) therefore costs a copy of
the whole tensor; AveragePool (1x1, strided: a grid of the values) and GlobalMaxPool (per-channel max) have blocked
kernels, so only their small outputs are copied. This script builds, from one fp32 graph, the plain graph and the
statistics graphs of ``resnet_deploy.precision.calibrate`` with and without those pools, and runs them all in
ONE process, batch by batch, rotating which goes first, so that every graph sees the same machine state (timing
on shared 2-core runners drifts by 10-20% between runs; interleaving makes the ratios comparable).

    python benchmarks/calib_graph_overhead.py --calib calib512.npz --calib-size 512   # resnet50, random weights
    python benchmarks/calib_graph_overhead.py --model bundle/model.onnx --calib calib512.npz

Writes benchmarks/results/calib_graph_overhead.json and .md (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from precision_bench import calib_tensors, load_samples  # noqa: E402


def without_channel_max(model):
    """The minmax graph as it was before the per-channel max: ReduceMax straight over each tensor."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    pooled = {n.output[0]: n.input[0] for n in m.graph.node if n.op_type == "GlobalMaxPool"}
    nodes = [n for n in m.graph.node if n.op_type != "GlobalMaxPool"]
    for n in nodes:
        if n.op_type == "ReduceMax" and n.input[0] in pooled:
            n.input[0] = pooled[n.input[0]]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def build_graphs(model, tensors: list[str], shape: tuple, per_image: int) -> dict:
    from resnet_deploy.precision import calibrate as cal

    graphs = {"plain fp32 graph": model}
    graphs["histogram methods, positions over the whole tensor"], _ = cal.stats_graph(model, tensors, shape, per_image,
                                                                                      oversample=None)
    graphs[f"histogram methods, strided grid (GRID_OVERSAMPLE={cal.GRID_OVERSAMPLE}, current)"], _ = cal.stats_graph(
        model, tensors, shape, per_image)
    minmax, _ = cal.stats_graph(model, tensors, shape, None, values=False)
    graphs["minmax, ReduceMax over each tensor"] = without_channel_max(minmax)
    graphs["minmax, ReduceMax of GlobalMaxPool (current)"] = minmax
    return graphs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="an fp32 ONNX graph (default: export --arch with random weights)")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--calib", required=True, help="calibration samples (.npy, or .npz with key x)")
    p.add_argument("--calib-size", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--hist-values", type=int, default=None, help="values per tensor (default: the calibration's)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "calib_graph_overhead"))
    a = p.parse_args()

    import onnx

    from resnet_deploy.backends.onnxruntime import import_onnxruntime, session_options
    from resnet_deploy.bench.report import cpu_isa_flags, cpu_model
    from resnet_deploy.bundle import toolchain_versions
    from resnet_deploy.precision import calibrate as cal

    ort = import_onnxruntime()
    a.hist_values = a.hist_values or cal.HIST_VALUES
    x = load_samples(a.calib, a.calib_size)
    with tempfile.TemporaryDirectory() as tmp:
        model_path = a.model
        if model_path is None:
            from resnet_deploy import export_arch

            export_arch(a.arch, Path(tmp) / "bundle", weights="random", input_size=x.shape[-1], num_classes=1000)
            model_path = str(Path(tmp) / "bundle" / "model.onnx")
        tensors = calib_tensors(model_path)
        per_image = cal.samples_per_image(a.hist_values, len(x))
        graphs = build_graphs(onnx.load(model_path), tensors, x.shape, per_image)
        sessions = {}
        for name, g in graphs.items():
            so = session_options("all", spinning=True)  # the calibration's own settings (collect_stats)
            so.enable_mem_pattern = False
            sessions[name] = ort.InferenceSession(g.SerializeToString(), sess_options=so,
                                                  providers=["CPUExecutionProvider"])
    input_name = next(iter(sessions.values())).get_inputs()[0].name
    for s in sessions.values():  # warm-up
        s.run(None, {input_name: x[:a.batch]})
    names, seconds = list(sessions), dict.fromkeys(sessions, 0.0)
    for b, start in enumerate(range(0, len(x), a.batch)):
        for name in names[b % len(names):] + names[:b % len(names)]:
            t0 = time.perf_counter()
            sessions[name].run(None, {input_name: x[start:start + a.batch]})
            seconds[name] += time.perf_counter() - t0
    plain = seconds["plain fp32 graph"]
    res = {"command": " ".join(["python", "benchmarks/calib_graph_overhead.py", *sys.argv[1:]]),
           "model": a.model or f"{a.arch} (random weights)", "samples": len(x), "batch": a.batch,
           "tensors": len(tensors), "values_per_image": per_image, "grid_oversample": cal.GRID_OVERSAMPLE,
           "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                       "isa": ", ".join(k for k, v in cpu_isa_flags().items() if v)},
           "toolchain": toolchain_versions(),
           "graphs": {n: {"seconds": seconds[n], "vs_plain": seconds[n] / plain} for n in names}}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    m = res["machine"]
    lines = ["# Calibration statistics graph: cost over a plain fp32 pass", "",
             f"Command: `{res['command']}`. Model: {res['model']}; {res['samples']} samples at batch {res['batch']}, "
             f"{res['tensors']} calibrated tensors, {per_image} sampled values per image and tensor. All graphs in "
             "one process, ONNX Runtime CPU, ORT_ENABLE_ALL, the calibration's session settings; each batch runs "
             "through every graph in turn, rotating the order. Machine: "
             f"{m['cpu']} ({m['cores']} cores; {m['isa']}), no GPU.", "",
             "| graph | seconds | / plain pass |", "|---|---|---|"]
    lines += [f"| {n} | {g['seconds']:.2f} | {g['vs_plain']:.3f}x |"
              for n, g in res["graphs"].items()]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
