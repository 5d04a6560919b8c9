"""How often does the CI gate fail an UNCHANGED model? Measures it on this machine.

One baseline run, then N gate runs of the same bundle against it. For each run it records what three
gates would say, all on the same measurements:
  abs        : p50 slower than the threshold in absolute time (no reference, no re-measure)
  abs+ratio  : also slower relative to the eager reference of the same run, or more than 30% slower in
               absolute time (the reference row itself, a model slower everywhere); no re-measure
  retries=k  : abs+ratio, then the suspects re-measured up to k times; a row fails only if slower every time
               (`resnet-deploy bench --baseline` uses k=2 by default). k = 1, 2, 3 come from one gate
               with 3 retries: a gate that cleared after round j failed for every k < j.

    PYTHONPATH=$PWD python benchmarks/gate_false_alarms.py --runs 10            # ~3-5 min on 2 cores
    PYTHONPATH=$PWD python benchmarks/gate_false_alarms.py --runs 2 --iters 5   # smoke test

Writes benchmarks/results/gate_false_alarms.json and .md (machine noted).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from resnet_deploy import export_arch
from resnet_deploy.bench import BenchConfig, compare, gate, run_bench
from resnet_deploy.bench.harness import remeasure

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--threshold", type=float, default=0.10)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads of every backend")
    ap.add_argument("--bundle", default=None, help="existing bundle [default: resnet18 random 64x64, exported]")
    ap.add_argument("--name", default="gate_false_alarms")
    ap.add_argument("--pairs", action="store_true",
                    help="gate each run against the previous one (a fresh baseline each time) instead of one fixed "
                         "baseline, so one unlucky baseline does not decide every run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or export_arch("resnet18", Path(tmp) / "r18", weights="random", input_size=64,
                                            num_classes=10).path
        cfg = BenchConfig(backends=["eager", "onnxruntime"], warmup=5, iters=args.iters,
                          threads=args.threads,
                          batches=[int(b) for b in args.batches.split(",")])
        baseline = run_bench(bundle, cfg)
        runs = []
        for i in range(args.runs):
            t0 = time.time()
            now = run_bench(bundle, cfg)
            loose = compare(baseline, now, 2 * args.threshold, reference="eager")
            a = compare(baseline, now, args.threshold, reference=None)
            r = compare(baseline, now, args.threshold, reference="eager")
            rounds = []
            full, _ = gate(baseline, now, lambda keys: rounds.append(keys) or remeasure(now, keys), args.threshold,
                           "eager", retries=3)
            # rounds needed to clear every suspect (4: still failing after 3 re-measurements)
            cleared_after = len(rounds) if full.passed else 4
            runs.append({
                "abs_fail": bool(a.suspects), "abs_ratio_fail": bool(r.suspects),
                **{f"retries{k}_fail": bool(r.suspects) and cleared_after > k for k in (1, 2, 3)},
                "abs_ratio_fail_at_2x_threshold": bool(loose.suspects), "abs_suspect_rows": len(a.suspects),
                "abs_ratio_suspect_rows": len(r.suspects),
                "remeasure_rounds": len(rounds), "failed_rows_after_3": [list(c.key) for c in full.failed],
                "p50_change": {f"{c.key[0]}/{c.key[2]}": round(c.abs_change, 4) for c in a.checks
                               if c.abs_change is not None},
                "seconds": round(time.time() - t0, 1)})
            if args.pairs:
                baseline = now
            verdicts = ", ".join(f"{k} {'FAIL' if runs[-1][k + '_fail'] else 'pass'}"
                                 for k in ("abs", "abs_ratio", "retries1", "retries2", "retries3"))
            print(f"run {i + 1}/{args.runs}: {verdicts}  p50 changes {runs[-1]['p50_change']}", flush=True)
    n = len(runs)
    summary = {k: sum(r[k] for r in runs)
               for k in ("abs_fail", "abs_ratio_fail", "retries1_fail", "retries2_fail", "retries3_fail",
                         "abs_ratio_fail_at_2x_threshold")}
    out = {"machine": baseline["machine"], "model": {k: baseline["model"][k] for k in ("arch", "input_shape")},
           "config": {"runs": n, "iters": args.iters, "threads": args.threads, "threshold": args.threshold,
                      "batches": args.batches,
                      "backends": "eager,onnxruntime", "load_average_at_end": os.getloadavg(),
                      "baseline": "the previous run (pairs)" if args.pairs else "one fixed baseline run"},
           "false_alarms": summary, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=2) + "\n")
    md = (f"Unchanged resnet18 (64x64), eager + ONNX Runtime fp32, batches {args.batches}, {args.iters} iters, "
          f"threads {args.threads or 'default'}, "
          f"threshold {args.threshold:.0%}, {n} gate runs against "
          f"{'the previous run' if args.pairs else 'one fixed baseline run'} on {baseline['machine']['cpu']} "
          f"({baseline['machine']['cores_logical']} cores, load average at end {os.getloadavg()[0]:.1f}).\n\n"
          "| gate | runs that failed (false alarms) |\n|---|---:|\n"
          f"| absolute p50 only, no re-measurement | {summary['abs_fail']}/{n} |\n"
          f"| absolute and ratio to eager (absolute cap 30%), no re-measurement | {summary['abs_ratio_fail']}/{n} |\n"
          f"| absolute and ratio, suspects re-measured once | {summary['retries1_fail']}/{n} |\n"
          f"| absolute and ratio, up to 2 re-measurements (default) | {summary['retries2_fail']}/{n} |\n"
          f"| absolute and ratio, up to 3 re-measurements | {summary['retries3_fail']}/{n} |\n"
          f"| absolute and ratio at {2 * args.threshold:.0%}, no re-measurement | "
          f"{summary['abs_ratio_fail_at_2x_threshold']}/{n} |\n")
    (RESULTS / f"{args.name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
