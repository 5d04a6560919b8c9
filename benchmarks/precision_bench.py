"""Precision benchmark on ONNX Runtime CPU: fp32 vs fp16 vs each INT8 target graph, and calibration cost.

For each arch (random weights, randomised BN: timing only): export a bundle, add FP16 + INT8 (both targets),
then measure img/s at each batch size, every (graph, batch) in its own process (ORT threads never compete
with another runtime), and the time and peak memory (ru_maxrss) of each calibration method, also one process
each. Calibration data: seeded standard-normal NCHW samples (the cost does not depend on the content).

    python benchmarks/precision_bench.py                       # resnet18 + resnet50, 224x224, batch 1 and 8
    python benchmarks/precision_bench.py --quick               # smoke test: resnet18 at 64x64, short runs

Writes benchmarks/results/precision.json and .md (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from resnet_deploy.bench.worker import peak_rss_mb

VARIANTS = [("fp32", "model.onnx"), ("fp16", "model.fp16.onnx"), ("int8-tensorrt", "model.int8.tensorrt.onnx"),
            ("int8-onnxruntime", "model.int8.onnxruntime.onnx")]
METHODS = ("minmax", "percentile", "entropy", "mse")


def worker_throughput(model: str, batch: int, seconds: float, size: int) -> dict:
    from resnet_deploy.backends.onnxruntime import OnnxRuntimeRunner

    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    with OnnxRuntimeRunner(model) as r:
        for _ in range(3):
            r.infer(x)
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or n < 5:
            r.infer(x)
            n += 1
        elapsed = time.perf_counter() - start
        desc = r.describe()
    return {"img_per_s": n * batch / elapsed, "iterations": n, "runner": desc}


def worker_calibration(model: str, method: str, data: str) -> dict:
    import onnx

    from resnet_deploy.precision import calibrate as cal
    from resnet_deploy.precision import quantize_ort, quantize_trt

    proto = onnx.load(model)
    tensors = sorted(set(quantize_trt.tensors_to_calibrate(proto)) | set(quantize_ort.tensors_to_calibrate(proto)))
    import psutil

    x = np.load(data)
    del proto
    before = psutil.Process().memory_info().rss / 2**20
    start = time.perf_counter()
    cal.calibrate(model, tensors, x, "bench", method)
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    return {"seconds": seconds, "peak_rss_mib": peak, "increase_mib": max(0.0, peak - before),
            "samples": len(x), "tensors": len(tensors)}


def run_worker(*args: str) -> dict:
    r = subprocess.run([sys.executable, __file__, "--worker", *map(str, args)], capture_output=True, text=True,
                       timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"worker {args} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def build_bundle(arch: str, size: int, calib: Path, work: Path) -> Path:
    from resnet_deploy import export_arch
    from resnet_deploy.precision import PrecisionOptions

    out = work / arch
    opts = PrecisionOptions(fp16=True, int8=True, calib=calib, max_drop=100.0)
    export_arch(arch, out, weights="random", input_size=size, num_classes=1000, precision=opts)
    return out


def to_markdown(res: dict) -> str:
    lines = [f"# Precision benchmark ({res['machine']['cpu']}, {res['machine']['cores']} cores)", "",
             f"ONNX Runtime {res['toolchain'].get('onnxruntime')} CPU, input {res['input_size']}, random weights, "
             f"{res['seconds']} s per measurement, each in its own process.", "",
             "| arch | graph | batch | img/s | vs fp32 |", "|---|---|---|---|---|"]
    for arch, a in res["archs"].items():
        for b in res["batches"]:
            base = a["throughput"]["fp32"][str(b)]["img_per_s"]
            for v, _ in VARIANTS:
                t = a["throughput"][v][str(b)]["img_per_s"]
                lines.append(f"| {arch} | {v} | {b} | {t:.1f} | {t / base:.2f}x |")
    lines += ["", f"Calibration ({res['calib_size']} samples, statistics for both targets' tensors):", "",
              "| arch | method | seconds | peak RSS (MiB) | of which calibration (MiB) |", "|---|---|---|---|---|"]
    for arch, a in res["archs"].items():
        for m, c in a["calibration"].items():
            lines.append(f"| {arch} | {m} | {c['seconds']:.1f} | {c['peak_rss_mib']:.0f} | {c['increase_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, *rest = sys.argv[2:]
        if kind == "throughput":
            out = worker_throughput(rest[0], int(rest[1]), float(rest[2]), int(rest[3]))
        else:
            out = worker_calibration(*rest)
        print(json.dumps(out))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default="resnet18,resnet50")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--calib-size", type=int, default=32)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--quick", action="store_true", help="resnet18 at 64x64, 16 samples, 0.5 s: a smoke test")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "precision"))
    a = p.parse_args()
    if a.quick:
        a.archs, a.input_size, a.calib_size, a.seconds = "resnet18", 64, 16, 0.5
    batches = [int(b) for b in a.batches.split(",")]
    from resnet_deploy.bench.report import cpu_model
    from resnet_deploy.bundle import toolchain_versions

    res = {"input_size": a.input_size, "batches": batches, "seconds": a.seconds, "calib_size": a.calib_size,
           "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
           "toolchain": toolchain_versions(), "archs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        calib = work / "calib.npy"
        np.save(calib, np.random.default_rng(0).standard_normal((a.calib_size, 3, a.input_size, a.input_size),
                                                                 dtype=np.float32))
        for arch in a.archs.split(","):
            t0 = time.perf_counter()
            bundle = build_bundle(arch, a.input_size, calib, work)
            entry = {"build_seconds": time.perf_counter() - t0, "throughput": {}, "calibration": {}}
            for v, name in VARIANTS:
                entry["throughput"][v] = {str(b): run_worker("throughput", bundle / name, b, a.seconds, a.input_size)
                                          for b in batches}
                for b in batches:
                    print(f"{arch} {v} b{b}: {entry['throughput'][v][str(b)]['img_per_s']:.1f} img/s", flush=True)
            for m in a.methods.split(","):
                entry["calibration"][m] = run_worker("calibration", bundle / "model.onnx", m, calib)
                print(f"{arch} calibration {m}: {entry['calibration'][m]['seconds']:.1f} s, "
                      f"{entry['calibration'][m]['peak_rss_mib']:.0f} MiB", flush=True)
            res["archs"][arch] = entry
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(to_markdown(res))
    print(to_markdown(res))


if __name__ == "__main__":
    main()
