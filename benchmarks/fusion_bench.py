"""Fusion benchmark: our FusedConv graph vs ONNX Runtime's own graph optimizations, ONNX Runtime CPU.

Configurations (each batch size, each in its own process so thread pools never compete):
  unfused/disable   the exported graph, ORT graph optimizations disabled (the baseline)
  fused/disable     our onnxruntime-target graph (com.microsoft.FusedConv), optimizations disabled
  unfused/extended  the exported graph at ORT_ENABLE_EXTENDED (ORT's own fusions)
  unfused/all       the exported graph at ORT_ENABLE_ALL (fusions plus the NCHWc layout)
plus the session-creation time of each, and an in-process look at what ORT's EXTENDED / ALL levels did to the
graph (op counts of the optimized models ORT saves), to explain any gap.

    PYTHONPATH=. python benchmarks/fusion_bench.py                       # resnet50 224x224, batches 1 and 8
    PYTHONPATH=. python benchmarks/fusion_bench.py --arch resnet18 --input-size 64 --iters 3 --warmup 1 \
        --name fusion_bench_smoke                                        # smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CONFIGS = [("unfused", "disable"), ("fused", "disable"), ("unfused", "extended"), ("unfused", "all")]


def worker(args) -> None:
    """One configuration: session creation (median of 3) and per-batch latency; prints one JSON line."""
    import numpy as np

    from resnet_deploy.backends.onnxruntime import OnnxRuntimeRunner

    creations = []
    for _ in range(3):
        runner = OnnxRuntimeRunner(args.model, graph_level=args.level, threads=args.threads, spinning=args.spinning)
        start = time.perf_counter()
        runner.activate()
        creations.append(time.perf_counter() - start)
        if len(creations) < 3:
            runner.deactivate()
    x = np.random.default_rng(0).standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    for _ in range(args.warmup):
        runner.infer(x)
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        runner.infer(x)
        times.append(time.perf_counter() - start)
    runner.deactivate()
    med = statistics.median(times)
    print(json.dumps({"session_create_s": statistics.median(creations), "latency_ms_median": med * 1e3,
                      "latency_ms_p90": sorted(times)[int(0.9 * (len(times) - 1))] * 1e3,
                      "images_per_s": args.batch / med, "iters": args.iters}))


def ort_optimized_ops(model: Path, level: str, tmp: Path) -> dict:
    """Op counts of the graph ORT runs at ``level`` (it saves its optimized model when asked)."""
    import onnx
    import onnxruntime as ort

    from resnet_deploy.backends.onnxruntime import session_options

    out = tmp / f"ort_{level}.onnx"
    ort.InferenceSession(str(model), session_options(level, optimized_model_path=str(out)),
                         providers=["CPUExecutionProvider"])
    counts = Counter((f"{n.domain}:" if n.domain else "") + n.op_type for n in onnx.load(str(out)).graph.node)
    return dict(sorted(counts.items()))


def interleaved(unfused: Path, fused: Path, batch: int, args) -> dict:
    """The quick in-process check: the three single-thread-pool configurations that matter, run round-robin in
    one process, so slow drift of a shared machine hits all of them alike. Medians in ms."""
    import numpy as np

    from resnet_deploy.backends.onnxruntime import OnnxRuntimeRunner

    runners = {"unfused/disable": OnnxRuntimeRunner(unfused, graph_level="disable", threads=args.threads),
               "fused/disable": OnnxRuntimeRunner(fused, graph_level="disable", threads=args.threads),
               "unfused/extended": OnnxRuntimeRunner(unfused, graph_level="extended", threads=args.threads)}
    x = np.random.default_rng(0).standard_normal((batch, 3, args.input_size, args.input_size)).astype(np.float32)
    times = {k: [] for k in runners}
    for r in runners.values():
        r.activate()
        r.infer(x)
    for _ in range(args.interleaved_rounds):
        for k, r in runners.items():
            start = time.perf_counter()
            r.infer(x)
            times[k].append(time.perf_counter() - start)
    for r in runners.values():
        r.deactivate()
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def run_config(model: Path, level: str, batch: int, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--model", str(model), "--level", level, "--batch", str(batch),
           "--size", str(args.input_size), "--iters", str(args.iters), "--warmup", str(args.warmup)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.spinning:
        cmd += ["--spinning"]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def summarise(rows: list[dict], batches) -> dict:
    out = {}
    for b in batches:
        ips = {f"{r['graph']}/{r['level']}": r["images_per_s"] for r in rows if r["batch"] == b}
        base = ips["unfused/disable"]
        ext, fused, all_ = (ips[k] / base for k in ("unfused/extended", "fused/disable", "unfused/all"))
        out[str(b)] = {
            "speedup_extended": ext, "speedup_fused": fused, "speedup_all": all_,
            "fused_share_of_extended_gain": (fused - 1) / (ext - 1) if ext > 1 else None,
            "fused_vs_extended": fused / ext, "all_vs_extended": all_ / ext,
        }
    return out


def markdown(res: dict) -> str:
    a = res["args"]
    lines = [f"# Fusion benchmark: {a['arch']} {a['input_size']}x{a['input_size']}, ONNX Runtime CPU", "",
             *([f"**{a['note']}**", ""] if a.get("note") else []),
             f"{res['machine']}; onnxruntime {res['onnxruntime']}; threads {a['threads'] or 'default'}, spinning "
             f"{'on' if a['spinning'] else 'off'}; {a['iters']} timed runs after {a['warmup']} warm-up, each "
             "configuration in its own process. Medians.", "",
             "| graph | ORT level | batch | img/s | median ms | session create s |", "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['graph']} | {r['level']} | {r['batch']} | {r['images_per_s']:.1f} | "
                     f"{r['latency_ms_median']:.1f} | {r['session_create_s']:.2f} |")
    lines += ["", "| batch | EXTENDED speed-up | fused (opt. off) speed-up | share of EXTENDED's gain | "
              "ALL vs EXTENDED |", "|---|---|---|---|---|"]
    for b, s in res["summary"].items():
        share = f"{s['fused_share_of_extended_gain']:.0%}" if s["fused_share_of_extended_gain"] is not None else "n/a"
        lines.append(f"| {b} | {s['speedup_extended']:.2f}x | {s['speedup_fused']:.2f}x | {share} | "
                     f"{s['all_vs_extended']:.2f}x |")
    il = res.get("interleaved_ms", {})
    if len(il) > 2:
        lines += ["", f"In-process round-robin check (batch {il['batch']}, {il['rounds']} rounds, median ms): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in il.items() if k not in ("batch", "rounds"))]
    lines += ["", "Op counts of the graph each configuration runs (ORT's saved optimized models for EXTENDED / ALL):",
              ""]
    for name, ops in res["graph_ops"].items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in ops.items()))
    lines += ["", "Target: the fused graph with optimizations disabled reaches at least 95% of the speed-up that "
              "ORT_ENABLE_EXTENDED gets over the unfused graph. ALL adds ORT's NCHWc layout (ReorderInput/Output "
              "and NCHWc Conv kernels) on top of the same fusions; a model saved at ALL is tied to the CPU."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--spinning", action="store_true", help="ORT thread spinning (off by default, see REFERENCE)")
    p.add_argument("--interleaved-rounds", type=int, default=10,
                   help="rounds of the in-process round-robin check at the first batch size (0: skip)")
    p.add_argument("--note", default="", help="a line written under the title (e.g. how loaded the machine was)")
    p.add_argument("--name", default="fusion_bench", help="results file stem under benchmarks/results/")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--level", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    import onnxruntime as ort

    from resnet_deploy.onnx_export import export_onnx
    from resnet_deploy.fuse import fuse_file
    from resnet_deploy.fuse.graph import op_counts
    from resnet_deploy.models import load_model

    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = load_model(args.arch, "random", 1000, seed=0).model  # randomised BN; weights do not change speed
        unfused, fused = tmp / "unfused.onnx", tmp / "fused.onnx"
        export_onnx(model, unfused, (args.input_size, args.input_size))
        fres = fuse_file(unfused, fused, "onnxruntime")
        graph_ops = {"unfused (exported)": fres.ops_before, "fused (ours)": op_counts(fres.model),
                     "ORT EXTENDED": ort_optimized_ops(unfused, "extended", tmp),
                     "ORT ALL": ort_optimized_ops(unfused, "all", tmp)}
        rows = []
        for b in batches:
            for graph, level in CONFIGS:
                r = run_config(fused if graph == "fused" else unfused, level, b, args)
                rows.append({"graph": graph, "level": level, "batch": b, **r})
                print(f"{graph:>8}/{level:<8} b{b}: {r['images_per_s']:7.1f} img/s, session {r['session_create_s']:.2f} s",
                      file=sys.stderr)
        check = interleaved(unfused, fused, batches[0], args) if args.interleaved_rounds else None
    res = {"args": vars(args) | {"worker": None}, "machine": f"{platform.machine()} {platform.processor()}".strip(),
           "onnxruntime": ort.__version__, "rows": rows, "summary": summarise(rows, batches), "graph_ops": graph_ops,
           "interleaved_ms": {"batch": batches[0], "rounds": args.interleaved_rounds, **(check or {})}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
