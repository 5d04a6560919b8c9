"""Export time and peak memory per architecture (issue 2). Each export runs in its own process.

    python benchmarks/export_bench.py [--archs resnet18,resnet50,resnet152] [--input-size 224]

Writes benchmarks/results/export.json and export.md. Export time is the exporter call alone (torch.onnx,
dynamo); wall time is the whole `resnet-deploy export` command (model build, export, validation, bundle);
peak RSS is the process's maximum resident memory.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from resnet_deploy.bench.report import cpu_model

HERE = Path(__file__).parent
RESULTS = HERE / "results"


def run_one(arch: str, input_size: str, workdir: Path) -> dict:
    out = workdir / arch
    argv = ["export", "--arch", arch, "--weights", "random", "--input-size", input_size, "--out", str(out)]
    # The child reports its own peak RSS after the command finished, so each arch is measured alone.
    # (VmHWM, not ru_maxrss: ru_maxrss carries the parent's RSS over fork+exec.)
    code = ("import sys; from resnet_deploy.cli import main; from resnet_deploy.bench.worker import peak_rss_mb; "
            "rc = main(sys.argv[1:]); print('PEAK_MIB', peak_rss_mb()); sys.exit(rc)")
    cmd = [sys.executable, "-c", code, *argv]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{arch}: export failed: {proc.stderr.strip().splitlines()[-1]}")
    peak_mib = float(proc.stdout.split("PEAK_MIB")[1].split()[0])
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "arch": arch,
        "input_size": input_size,
        "export_s": manifest["export"]["seconds"],
        "wall_s": round(wall, 2),
        "peak_rss_mib": round(peak_mib, 1),
        "onnx_mib": round(manifest["files"]["model.onnx"]["size"] / 2**20, 1),
        "nodes": manifest["export"]["nodes"],
        "fp32_cosine": manifest["validation"]["fp32"]["cosine"],
        "fp32_max_abs_diff": manifest["validation"]["fp32"]["max_abs_diff"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="resnet18,resnet50,resnet152")
    ap.add_argument("--input-size", default="224")
    args = ap.parse_args()
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs.split(","):
            rows.append(run_one(arch, args.input_size, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    report = {
        "machine": {"cpu": cpu_model(), "cores": __import__("os").cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__},
        "command": "python benchmarks/export_bench.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "results": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| arch | export (s) | whole command (s) | peak RSS (MiB) | model.onnx (MiB) | nodes | fp32 cosine |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['arch']} | {r['export_s']:.1f} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} | {r['onnx_mib']:.1f} "
              f"| {r['nodes']} | {r['fp32_cosine']:.7f} |" for r in rows]
    (RESULTS / "export.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
