"""Does the documented CI gate pass on an UNCHANGED model, and how long does it take? Runs it as a user would.

The gate command documented in docs/benchmark.md and ``bench --help`` (``resnet_deploy.bench.gate.CI_OPTIONS``):
one ``--update-baseline`` run, then ``--runs`` gate runs in a row of the same bundle against that baseline, each a
``resnet-deploy bench`` subprocess. For each run it records the exit code (0 passed, 1 regressed), the wall time,
the re-measured rows and the rows that failed.

    PYTHONPATH=$PWD python benchmarks/gate_example.py                      # resnet18 64x64 with INT8, 10 runs
    PYTHONPATH=$PWD python benchmarks/gate_example.py --bundle B --runs 20
    PYTHONPATH=$PWD python benchmarks/gate_example.py --options "--batch 1 --iters 30" --name gate_example_iters30
    PYTHONPATH=$PWD python benchmarks/gate_example.py --statistics 10    # which statistic moves least: see below

``--statistics N`` runs the gate's measurement N times (no gate) and judges every ordered pair of runs, one as the
baseline of the other, with each statistic (p50, p10, min) at thresholds 20% and 30% on the same measurements,
without re-measurement: how often an unchanged row looks slower (gate_statistics.json / .md).

The default bundle is the quick start's shape: resnet18, random weights, 64x64, INT8 graphs for ONNX Runtime and
TensorRT calibrated on the repository's photos (``--max-drop 100``: timing only), bf16 graph; OpenVINO runs its
ONNX graphs. Writes benchmarks/results/<name>.json and .md (machine and load noted).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from resnet_deploy.bench.gate import CI_OPTIONS
from resnet_deploy.bench.report import cpu_model

RESULTS = Path(__file__).parent / "results"
IMAGES = Path(__file__).parents[1] / "tests" / "data" / "images"


def cli(*args, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "resnet_deploy", *map(str, args)], capture_output=True, text=True,
                         cwd=cwd)
    return res, time.perf_counter() - t0


def export(tmp: Path) -> Path:
    out = tmp / "r18"
    res, _ = cli("export", "--arch", "resnet18", "--weights", "random", "--input-size", "64", "--num-classes", "10",
                 "--images", IMAGES, "--int8", "--calib", IMAGES, "--max-drop", "100", "--bf16", "--engine", "never",
                 "--out", out, cwd=tmp)
    if res.returncode != 0:
        sys.exit(f"export failed:\n{res.stderr}")
    return out


def measurement_options(options: list[str]) -> list[str]:
    """``options`` without the gate's own (``--statistic``, ``--reference``, ``--max-regression`` and their values)."""
    out, skip = [], False
    for option in options:
        if not skip and option in ("--statistic", "--reference", "--max-regression"):
            skip = True
            continue
        if not skip:
            out.append(option)
        skip = False
    return out


def statistics(bundle: Path, options: list[str], runs: int, tmp: Path) -> None:
    """Measure ``runs`` times, then count the suspects each statistic and threshold gives over every ordered pair."""
    import itertools

    from resnet_deploy.bench.gate import STATISTICS, compare

    reports = []
    for i in range(runs):
        res, wall = cli("bench", bundle, *options, "--no-plot", "--out", tmp / f"s{i}", cwd=tmp)
        if res.returncode != 0:
            sys.exit(f"run {i + 1} failed:\n{res.stderr}")
        reports.append(json.loads((tmp / f"s{i}" / "report.json").read_text()))
        print(f"measured {i + 1}/{runs} ({wall:.1f} s)", flush=True)
    pairs = list(itertools.permutations(reports, 2))
    table = {}
    for stat, threshold in itertools.product(STATISTICS, (0.20, 0.30)):
        checks = [compare(b, n, threshold, None, statistic=stat) for b, n in pairs]
        table[f"{stat} {threshold:.0%}"] = {"pairs_with_a_suspect": sum(bool(c.suspects) for c in checks),
                                            "suspect_rows": sum(len(c.suspects) for c in checks)}
    rows = sorted({(r["backend"], r["precision"], r["batch"]) for r in reports[0]["results"]})
    def value(report: dict, row: tuple, stat: str) -> float:
        return next(round(x["latency_ms"][stat], 3) for x in report["results"]
                    if (x["backend"], x["precision"], x["batch"]) == row)

    spread = {f"{r[0]} {r[1]} b{r[2]}": {stat: [value(rep, r, stat) for rep in reports] for stat in STATISTICS}
              for r in rows}
    out = {"options": options, "cpu": cpu_model(), "runs": runs, "pairs": len(pairs), "table": table,
           "per_row_ms": spread, "load_average_at_end": os.getloadavg()}
    (RESULTS / "gate_statistics.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [f"`resnet-deploy bench BUNDLE {' '.join(options)}` measured {runs} times in a row on an unchanged "
             f"{reports[0]['model']['arch']} bundle ({cpu_model()}, {reports[0]['machine']['cores_logical']} cores, "
             f"shared; load average at the end {os.getloadavg()[0]:.1f}); each of the {len(pairs)} ordered pairs "
             "of runs judged as baseline and current, absolute change only, no re-measurement.", "",
             "| statistic, threshold | pairs with a suspect row | suspect rows |", "|---|---:|---:|"]
    lines += [f"| {k} | {v['pairs_with_a_suspect']}/{len(pairs)} | {v['suspect_rows']} |" for k, v in table.items()]
    lines += ["", "Per row, the statistic in each run (ms):", "", "| row | " + " | ".join(STATISTICS) + " |",
              "|---|" + "---|" * len(STATISTICS)]
    lines += [f"| {row} | " + " | ".join(f"{min(v):.2f}-{max(v):.2f}" for v in per.values()) + " |"
              for row, per in spread.items()]
    (RESULTS / "gate_statistics.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--bundle", default=None, help="existing bundle [default: resnet18 64x64 with INT8, exported]")
    ap.add_argument("--options", default=" ".join(CI_OPTIONS), help="gate options [default: the documented ones]")
    ap.add_argument("--name", default="gate_example")
    ap.add_argument("--statistics", type=int, default=0, metavar="N",
                    help="measure N times and compare the statistics instead of gating")
    args = ap.parse_args()
    options = shlex.split(args.options)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = Path(args.bundle).absolute() if args.bundle else export(tmp)
        if args.statistics:
            return statistics(bundle, measurement_options(options), args.statistics, tmp)
        base = tmp / "ci" / "baseline.json"
        res, base_s = cli("bench", bundle, "--baseline", base, "--update-baseline", *options, "--no-plot", cwd=tmp)
        if res.returncode != 0:
            sys.exit(f"baseline run failed:\n{res.stderr}")
        baseline = json.loads(base.read_text())
        runs = []
        for i in range(args.runs):
            res, wall = cli("bench", bundle, "--baseline", base, *options, "--no-plot", "--json", cwd=tmp)
            result = json.loads(res.stdout) if res.stdout.strip() else {}
            gate = result.get("gate") or {}
            rows = result.get("results", [])
            runs.append({"run": i + 1, "exit_code": res.returncode, "passed": res.returncode == 0,
                         "wall_s": round(wall, 1),
                         "remeasured": [f"{r['backend']} {r['precision']} b{r['batch']}" for r in rows
                                        if r.get("remeasured")],
                         "failed": [f"{f['backend']} {f['precision']} b{f['batch']} {f['abs_change']:+.1%}"
                                    for f in gate.get("failed", [])],
                         "error": None if res.returncode in (0, 1) else res.stderr.strip().splitlines()[-1:],
                         "load_average": round(os.getloadavg()[0], 2)})
            print(f"run {i + 1}/{args.runs}: {'pass' if runs[-1]['passed'] else 'FAIL'} {wall:.1f} s "
                  f"re-measured {runs[-1]['remeasured']} failed {runs[-1]['failed']}", flush=True)
    passed = sum(r["passed"] for r in runs)
    walls = sorted(r["wall_s"] for r in runs)
    command = f"resnet-deploy bench BUNDLE --baseline ci/baseline.json {' '.join(options)}"
    out = {"command": command, "machine": baseline["machine"], "cpu": cpu_model(),
           "model": {k: baseline["model"][k] for k in ("arch", "input_shape")},
           "rows": [f"{r['backend']} {r['precision']} b{r['batch']}" for r in baseline["results"]],
           "baseline_wall_s": round(base_s, 1), "passed": passed, "runs": runs}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [f"The CI gate `{command}` (other options at their defaults), run {len(runs)} times in a row on an "
             f"unchanged {baseline['model']['arch']} {baseline['model']['input_shape'][2]}x"
             f"{baseline['model']['input_shape'][3]} bundle against one baseline recorded just before "
             f"({base_s:.1f} s); rows: {', '.join(out['rows'])}. Machine: {cpu_model()}, "
             f"{baseline['machine']['cores_logical']} cores, shared with other jobs (load average per run below).",
             "", f"Passed {passed}/{len(runs)}; wall time {walls[0]:.1f}-{walls[-1]:.1f} s "
             f"(median {walls[len(walls) // 2]:.1f} s).", "",
             "| run | result | wall s | load avg | re-measured | failed rows |", "|---:|---|---:|---:|---|---|"]
    for r in runs:
        lines.append(f"| {r['run']} | {'pass' if r['passed'] else 'FAIL'} | {r['wall_s']:.1f} | {r['load_average']} | "
                     f"{', '.join(r['remeasured']) or '-'} | {', '.join(r['failed'] or r['error'] or []) or '-'} |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
