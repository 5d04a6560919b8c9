"""README tables: resnet18 and resnet50 on this machine, every backend side by side (GPU rows where a GPU exists).

Rows: eager fp32, eager channels_last, torch.compile, ONNX Runtime at each precision the bundle holds
(fp32 fused graph when present, fp16, int8), and onnxruntime-cuda / tensorrt where usable. By default it
exports fresh fp32 bundles (random weights: timing only); pass ready bundles with --bundle to include the
fused / FP16 / INT8 artifacts made by the other stages.

    PYTHONPATH=$PWD python benchmarks/run_cpu.py                       # ~3 min on 2 cores (no torch.compile: --compile)
    PYTHONPATH=$PWD python benchmarks/run_cpu.py --bundle r18=path/to/r18-bundle --bundle r50=path/to/r50-bundle
    PYTHONPATH=$PWD python benchmarks/run_cpu.py --quick               # smoke test: resnet18 at 64x64, 3 iters

Writes benchmarks/results/<name>.json (the full schema-2 reports, machine noted) and <name>.md (the tables).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from resnet_deploy import export_arch
from resnet_deploy.bench import BenchConfig, run_bench
from resnet_deploy.bench.report import to_markdown
from resnet_deploy.backends import table

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", action="append", default=[], metavar="NAME=PATH", help="benchmark these bundles")
    ap.add_argument("--archs", default="resnet18,resnet50", help="exported when no --bundle is given")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--compile", action="store_true", help="add torch.compile rows (compiling takes minutes here)")
    ap.add_argument("--quick", action="store_true", help="smoke test: resnet18 at 64x64, 3 iterations")
    ap.add_argument("--name", default="cpu")
    args = ap.parse_args()
    size = 64 if args.quick else 224
    iters, warmup = (3, 1) if args.quick else (args.iters, args.warmup)
    archs = ["resnet18"] if args.quick else args.archs.split(",")
    backends = ["eager", "eager-channels-last", "onnxruntime"]
    if args.compile:
        backends.insert(2, "torch-compile")
    backends += [s.name for s in table.runnable_by_default() if s.device == "gpu"]
    reports, md = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        bundles = dict(b.split("=", 1) for b in args.bundle) or {
            a: export_arch(a, Path(tmp) / a, weights="random", input_size=size).path for a in archs}
        for name, bundle in bundles.items():
            t0 = time.time()
            cfg = BenchConfig(backends=backends, batches=[int(b) for b in args.batches.split(",")], warmup=warmup,
                              iters=iters, threads=args.threads, device="cpu")  # torch rows stay CPU rows
            rep = run_bench(bundle, cfg, on_event=lambda e: e.get("event") == "case" and print("  ", e["label"],
                                                                                              flush=True))
            for r in rep["results"]:
                r.pop("samples_ms", None)  # keep the committed file small
            reports[name] = rep
            md.append(f"### {name}\n\n{to_markdown(rep)}\n({time.time() - t0:.0f} s)\n")
            print(md[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    first = next(iter(reports.values()))
    (RESULTS / f"{args.name}.json").write_text(json.dumps(
        {"machine": first["machine"], "load_average_at_end": os.getloadavg(),
         "weights": "random unless a --bundle says otherwise (timing only)",
         "reports": reports}, indent=2, default=str) + "\n")
    (RESULTS / f"{args.name}.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
