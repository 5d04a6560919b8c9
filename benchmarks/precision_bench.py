"""Precision benchmark on ONNX Runtime CPU: fp32 vs fp16 vs each INT8 target graph, and calibration cost.

For each arch (random weights, randomised BN: timing only): export a bundle, add FP16 + INT8 (both targets),
then measure img/s at each batch size, every (graph, batch) in its own process (ORT threads never compete
with another runtime), and the time and peak memory (VmHWM) of each calibration method, also one process
each, next to one plain fp32 ONNX Runtime pass over the same samples (batch 8, ORT_ENABLE_ALL, its own
process) and their ratio. Calibration data: ``--calib FILE`` (.npy, or .npz with key ``x``), else seeded
standard-normal NCHW samples (the cost hardly depends on the content).

``--before DIR`` (a source tree of another commit, e.g. ``git archive <commit> | tar -x -C DIR``) times that
tree's calibration too, alternating with this one's per method. ``--compare-exact`` measures what the
sampled histogram changes: ranges per tensor and method against histogramming every value, and the INT8
graphs (onnxruntime target) built from each, on the calibration samples' logits.

    python benchmarks/precision_bench.py                       # resnet18 + resnet50, 224x224, batch 1 and 8
    python benchmarks/precision_bench.py --quick               # smoke test: resnet18 at 64x64, short runs
    python benchmarks/precision_bench.py --archs resnet50 --calib calib512.npz --calib-size 512 --calib-only \
        --before /tmp/before --compare-exact --out benchmarks/results/precision_calibration

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


def peak_rss_mb() -> float:
    """VmHWM: peak resident memory of this process (starts afresh at exec, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_samples(path: str, size: int) -> np.ndarray:
    x = np.load(path)
    if not isinstance(x, np.ndarray):
        with x:
            x = x["x"] if "x" in x.files else x[x.files[0]]
    return np.ascontiguousarray(x[:size], dtype=np.float32)


def calib_tensors(model: str) -> list[str]:
    import onnx

    from resnet_deploy.precision import quantize_ort, quantize_trt

    proto = onnx.load(model)
    return sorted(set(quantize_trt.tensors_to_calibrate(proto)) | set(quantize_ort.tensors_to_calibrate(proto)))


def worker_calibration(model: str, method: str, data: str, size: str) -> dict:
    from resnet_deploy.precision import calibrate as cal

    tensors = calib_tensors(model)
    x = load_samples(data, int(size))
    before = rss_mb()
    start = time.perf_counter()
    cal.calibrate(model, tensors, x, "bench", method)
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    return {"seconds": seconds, "peak_rss_mib": peak, "increase_mib": max(0.0, peak - before),
            "samples": len(x), "tensors": len(tensors), "implementation": str(Path(cal.__file__).parents[2])}


def worker_fp32_pass(model: str, data: str, size: str, batch: str = "8") -> dict:
    """One plain fp32 pass over the samples as calibration would make it: session (ORT_ENABLE_ALL) and run."""
    from resnet_deploy.backends.onnxruntime import import_onnxruntime, session_options

    ort = import_onnxruntime()
    x = load_samples(data, int(size))
    start = time.perf_counter()
    sess = ort.InferenceSession(model, sess_options=session_options("all"), providers=["CPUExecutionProvider"])
    created = time.perf_counter()
    name, b = sess.get_inputs()[0].name, int(batch)
    for i in range(0, len(x), b):
        sess.run(None, {name: x[i:i + b]})
    end = time.perf_counter()
    return {"seconds": end - created, "with_session_seconds": end - start, "samples": len(x), "batch": b,
            "peak_rss_mib": peak_rss_mb()}


def worker_compare(model: str, data: str, size: str, eval_count: str = "128") -> dict:
    """Ranges from the sampled histogram vs every value, per method and tensor; INT8 (onnxruntime target)
    logits from each against fp32 on the first ``eval_count`` samples."""
    import onnx

    from resnet_deploy.precision import calibrate as cal
    from resnet_deploy.precision import quantize_ort
    from resnet_deploy.backends.onnxruntime import run_graph

    tensors = calib_tensors(model)
    x = load_samples(data, int(size))
    timing, stats = {}, {}
    for mode, k in (("sampled", cal.HIST_VALUES), ("exact", None)):
        start = time.perf_counter()
        stats[mode] = cal.collect_stats(model, tensors, x, hist_values=k)
        timing[mode] = time.perf_counter() - start
    # how much the exact ranges move with the data itself: every value of each half of the samples
    half = len(x) // 2
    halves = [cal.collect_stats(model, tensors, part, hist_values=None) for part in (x[:half], x[half:2 * half])]
    proto = onnx.load(model)
    ev = x[:int(eval_count)]
    fp32 = run_graph(proto, ev)
    out = {"seconds": timing, "samples_per_image": cal.samples_per_image(cal.HIST_VALUES, len(x)),
           "eval_samples": len(ev), "minmax_reads_exact_extremes": True, "methods": {}}
    for m in METHODS:
        # minmax reads exact extremes (ReduceMin/ReduceMax over every value): the same as the exact statistics'
        ranges = {mode: cal.ranges_from_stats(stats["exact"] if m == "minmax" else st, m, 99.99)
                  for mode, st in stats.items()}
        def diffs(ra: dict, rb: dict) -> list[float]:
            return [max(abs(ra[t][0] - rb[t][0]), abs(ra[t][1] - rb[t][1])) / max(rb[t][1] - rb[t][0], 1e-30)
                    for t in tensors]

        rel = diffs(ranges["sampled"], ranges["exact"])
        noise = diffs(*(cal.ranges_from_stats(h, m, 99.99) for h in halves))
        logits = {mode: run_graph(quantize_ort.quantize(proto, r).model, ev) for mode, r in ranges.items()}
        agree = lambda a, b: float((a.argmax(1) == b.argmax(1)).mean())  # noqa: E731
        cos = lambda a, b: float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))  # noqa: E731,E501
        out["methods"][m] = {
            "range_rel_diff": {"max": float(np.max(rel)), "median": float(np.median(rel)),
                               "mean": float(np.mean(rel)), "worst_tensor": tensors[int(np.argmax(rel))],
                               "tensors_over_1pct": int(np.sum(np.array(rel) > 0.01)),
                               "p90": float(np.percentile(rel, 90))},
            "range_rel_diff_half_vs_half": {"median": float(np.median(noise)), "p90": float(np.percentile(noise, 90)),
                                            "max": float(np.max(noise))},
            "int8_sampled_vs_exact": {"top1_agreement": agree(logits["sampled"], logits["exact"]),
                                      "cosine": cos(logits["sampled"], logits["exact"])},
            "vs_fp32": {mode: {"top1_agreement": agree(lg, fp32), "cosine": cos(lg, fp32)}
                        for mode, lg in logits.items()}}
    return out


def run_worker(*args: str, impl: "str | Path | None" = None) -> dict:
    """``args`` in a fresh process; ``impl`` a source tree whose resnet_deploy the worker imports instead."""
    env = dict(os.environ)
    if impl is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(impl), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    r = subprocess.run([sys.executable, __file__, "--worker", *map(str, args)], capture_output=True, text=True,
                       timeout=3600, env=env, cwd=str(impl) if impl is not None else None)
    if r.returncode != 0:
        raise RuntimeError(f"worker {args} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def build_bundle(arch: str, size: int, calib: Path, work: Path, precision: bool = True) -> Path:
    from resnet_deploy import export_arch
    from resnet_deploy.precision import PrecisionOptions

    out = work / arch
    opts = PrecisionOptions(fp16=True, int8=True, calib=calib, max_drop=100.0) if precision else None
    export_arch(arch, out, weights="random", input_size=size, num_classes=1000, precision=opts)
    return out


def calibration_markdown(res: dict) -> list[str]:
    impls = [i for i in ("before", "after") if any(i in a["calibration"] for a in res["archs"].values())]
    lines = ["", f"Calibration ({res['calib_size']} samples of {res['calib_source']}, statistics for both targets' "
                 "tensors; each run in its own process; one fp32 pass = ORT_ENABLE_ALL session, batch 8, over the "
                 "same samples, without session creation, measured before and after the calibrations):", "",
             "| arch | implementation | method | seconds | / one fp32 pass | peak RSS (MiB) | of which calibration (MiB) |",
             "|---|---|---|---|---|---|---|"]
    for arch, a in res["archs"].items():
        passes = [a[k]["seconds"] for k in ("fp32_pass", "fp32_pass_again") if k in a]
        one = sum(passes) / len(passes) if passes else None
        for impl in impls:
            for m, c in a["calibration"].get(impl, {}).items():
                ratio = f"{c['seconds'] / one:.2f}x" if one else "-"
                lines.append(f"| {arch} | {impl} | {m} | {c['seconds']:.1f} | {ratio} | {c['peak_rss_mib']:.0f} | "
                             f"{c['increase_mib']:.0f} |")
        if one:
            p = a["fp32_pass"]
            lines.append(f"| {arch} | one fp32 pass (mean of {len(passes)}: "
                         f"{', '.join(f'{v:.1f}' for v in passes)}) | - | {one:.1f} (with session "
                         f"{p['with_session_seconds']:.1f}) | 1.00x | {p['peak_rss_mib']:.0f} | - |")
        if "before" in impls and "after" in impls:
            speed = [f"{m} {a['calibration']['before'][m]['seconds'] / c['seconds']:.1f}x"
                     for m, c in a["calibration"]["after"].items() if m in a["calibration"]["before"]]
            lines += ["", f"{arch}: speed-up after/before, same run: " + ", ".join(speed)]
    for arch, a in res["archs"].items():
        cmp = a.get("compare_exact")
        if not cmp:
            continue
        lines += ["", f"{arch}: sampled histogram ({cmp['samples_per_image']} values per image and tensor) vs every "
                      f"value (stats pass {cmp['seconds']['sampled']:.1f} s vs {cmp['seconds']['exact']:.1f} s). "
                      "Range difference per tensor = max(|lo_s - lo_e|, |hi_s - hi_e|) / (hi_e - lo_e); INT8 = "
                      f"onnxruntime-target graphs from each set of ranges, logits on {cmp['eval_samples']} "
                      "calibration samples:", "",
                  "| method | range diff median | p90 | max (tensor) | tensors > 1% | exact, half vs half: median / "
                  "p90 / max | INT8 top-1 sampled vs exact | cosine | INT8 vs fp32 top-1 (exact / sampled) | "
                  "cosine vs fp32 (exact / sampled) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for m, c in cmp["methods"].items():
            r, s, f = c["range_rel_diff"], c["int8_sampled_vs_exact"], c["vs_fp32"]
            h = c["range_rel_diff_half_vs_half"]
            if m == "minmax" and not cmp.get("minmax_reads_exact_extremes"):
                # runs before minmax got its own statistics: this row is the sampled values' extremes, which
                # calibrate does not use for minmax (it reads ReduceMin/ReduceMax over every value)
                m = "minmax (sampled extremes: not what calibrate uses, which is exact)"
            lines.append(f"| {m} | {r['median']:.2%} | {r['p90']:.2%} | {r['max']:.2%} ({r['worst_tensor']}) | "
                         f"{r['tensors_over_1pct']} | {h['median']:.2%} / {h['p90']:.2%} / {h['max']:.2%} | "
                         f"{s['top1_agreement']:.1%} | {s['cosine']:.6f} | "
                         f"{f['exact']['top1_agreement']:.1%} / {f['sampled']['top1_agreement']:.1%} | "
                         f"{f['exact']['cosine']:.5f} / {f['sampled']['cosine']:.5f} |")
    return lines


def to_markdown(res: dict) -> str:
    lines = [f"# Precision benchmark ({res['machine']['cpu']}, {res['machine']['cores']} cores)", "",
             f"ONNX Runtime {res['toolchain'].get('onnxruntime')} CPU, input {res['input_size']}, random weights, "
             f"{res['seconds']} s per measurement, each in its own process.", ""]
    if res.get("command"):
        versions = ", ".join(f"{k} {v}" for k, v in res["toolchain"].items() if v)
        lines += [f"Command: `{res['command']}`", "", f"Load average before / after: {res['machine']['load_before']} / "
                  f"{res['machine'].get('load_after')}; ISA flags: {res['machine'].get('isa')}", "",
                  f"Versions: {versions}", ""]
    if any(a["throughput"] for a in res["archs"].values()):
        lines += ["| arch | graph | batch | img/s | vs fp32 |", "|---|---|---|---|---|"]
        for arch, a in res["archs"].items():
            for b in res["batches"]:
                base = a["throughput"]["fp32"][str(b)]["img_per_s"]
                for v, _ in VARIANTS:
                    t = a["throughput"][v][str(b)]["img_per_s"]
                    lines.append(f"| {arch} | {v} | {b} | {t:.1f} | {t / base:.2f}x |")
    lines += calibration_markdown(res)
    return "\n".join(lines) + "\n"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, *rest = sys.argv[2:]
        workers = {"calibration": worker_calibration, "fp32-pass": worker_fp32_pass, "compare": worker_compare}
        if kind == "throughput":
            out = worker_throughput(rest[0], int(rest[1]), float(rest[2]), int(rest[3]))
        else:
            out = workers[kind](*rest)
        print(json.dumps(out))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default="resnet18,resnet50")
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--calib", help="calibration samples (.npy, or .npz with key x); default: seeded normal")
    p.add_argument("--calib-size", type=int, default=32)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--calib-only", action="store_true", help="skip the throughput table (and FP16/INT8 export)")
    p.add_argument("--before", help="a source tree of another commit: time its calibration too")
    p.add_argument("--compare-exact", action="store_true",
                   help="ranges and INT8 logits from the sampled histogram vs every value")
    p.add_argument("--quick", action="store_true", help="resnet18 at 64x64, 16 samples, 0.5 s: a smoke test")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "precision"))
    a = p.parse_args()
    if a.quick:
        a.archs, a.input_size, a.calib_size, a.seconds = "resnet18", 64, 16, 0.5
    batches = [int(b) for b in a.batches.split(",")]
    from resnet_deploy.bench.report import cpu_isa_flags, cpu_model
    from resnet_deploy.bundle import toolchain_versions

    res = {"input_size": a.input_size, "batches": batches, "seconds": a.seconds, "calib_size": a.calib_size,
           "calib_source": Path(a.calib).name if a.calib else "seeded standard-normal samples",
           "command": " ".join(["python", "benchmarks/precision_bench.py", *sys.argv[1:]]),
           "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": load_average(),
                       "isa": ", ".join(k for k, v in cpu_isa_flags().items() if v)},
           "toolchain": toolchain_versions(), "archs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        calib = Path(a.calib).resolve() if a.calib else work / "calib.npy"
        if not a.calib:
            np.save(calib, np.random.default_rng(0).standard_normal((a.calib_size, 3, a.input_size, a.input_size),
                                                                     dtype=np.float32))
        for arch in a.archs.split(","):
            t0 = time.perf_counter()
            bundle = build_bundle(arch, a.input_size, calib, work, precision=not a.calib_only)
            model = bundle / "model.onnx"
            entry = {"build_seconds": time.perf_counter() - t0, "throughput": {}, "calibration": {}}
            if not a.calib_only:
                for v, name in VARIANTS:
                    entry["throughput"][v] = {str(b): run_worker("throughput", bundle / name, b, a.seconds,
                                                                 a.input_size) for b in batches}
                    for b in batches:
                        print(f"{arch} {v} b{b}: {entry['throughput'][v][str(b)]['img_per_s']:.1f} img/s", flush=True)
            entry["fp32_pass"] = run_worker("fp32-pass", model, calib, a.calib_size)
            print(f"{arch} one fp32 pass: {entry['fp32_pass']['seconds']:.1f} s", flush=True)
            impls = [("before", a.before), ("after", None)] if a.before else [("after", None)]
            for i, m in enumerate(a.methods.split(",")):
                for name, impl in (impls if i % 2 == 0 else impls[::-1]):  # alternate which runs first
                    c = entry["calibration"].setdefault(name, {})[m] = run_worker(
                        "calibration", model, m, calib, a.calib_size, impl=Path(impl).resolve() if impl else None)
                    print(f"{arch} calibration {name} {m}: {c['seconds']:.1f} s, {c['peak_rss_mib']:.0f} MiB "
                          f"({c['implementation']})", flush=True)
            entry["fp32_pass_again"] = run_worker("fp32-pass", model, calib, a.calib_size)
            if a.compare_exact:
                entry["compare_exact"] = run_worker("compare", model, calib, a.calib_size)
            res["archs"][arch] = entry
    res["machine"]["load_after"] = load_average()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(to_markdown(res))
    print(to_markdown(res))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--markdown"]:  # re-render a results .json: --markdown FILE.json
        res = json.loads(Path(sys.argv[2]).read_text())
        Path(sys.argv[2]).with_suffix(".md").write_text(to_markdown(res))
    else:
        main()
