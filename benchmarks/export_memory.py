"""Peak memory, wall time and ONNX re-reads of a whole `resnet-deploy export` run, one process per run.

    python benchmarks/export_memory.py --calib /tmp/calib512.npz [--archs resnet50,wide_resnet101_2]
        [--tree PATH] [--label NAME] [--repeat N] [--extra "--fp16 --int8"]

Each run is `resnet-deploy export --arch A --weights random <extra> --calib C --max-drop 100 --out DIR` in its
own process, started from a temporary folder so that `--tree` (a checkout given on PYTHONPATH) is what runs:
started from a checkout, Python would import that checkout whatever PYTHONPATH says. Peak RSS is the child's
own maximum resident set (wait4's rusage of that child alone; this parent imports nothing big). The child also
wraps `onnx.load` / `onnx.load_model` and counts, per file name, how often a file inside the output folder was
parsed again after the run wrote it.

Results go to benchmarks/results/export_memory.json (appended per label) and export_memory.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# Runs inside the child: count onnx.load calls on files under the output folder, then run the CLI.
CHILD = r"""
import atexit, collections, json, os, sys
import onnx
out_dir = os.path.realpath(sys.argv[1]); report = sys.argv[2]; argv = sys.argv[3:]
counts = collections.Counter()
def wrap(fn):
    def loader(f, *a, **k):
        if isinstance(f, (str, os.PathLike)):
            p = os.path.realpath(os.fspath(f))
            if p.startswith(os.path.dirname(out_dir) + os.sep):  # the output folder or its staging folder
                counts[os.path.basename(p)] += 1
        return fn(f, *a, **k)
    return loader
onnx.load = wrap(onnx.load); onnx.load_model = wrap(onnx.load_model)
def dump():
    with open(report, "w") as fh: json.dump(dict(counts), fh)
atexit.register(dump)
from resnet_deploy.cli import main
sys.exit(main(argv))
"""


def cpu_line() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next(l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("model name"))
        flags = next(l.split(":", 1)[1].split() for l in text.splitlines() if l.startswith("flags"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"
    keep = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    return f"{model}, {os.cpu_count()} cores, {' '.join(keep)}"


def run_one(arch: str, calib: Path, extra: list[str], tree: Path | None, work: Path) -> dict:
    out = work / f"{arch}-bundle"
    report = work / f"{arch}-loads.json"
    argv = ["export", "--arch", arch, "--weights", "random", *extra, "--calib", str(calib), "--max-drop", "100",
            "--out", str(out)]
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(report), *argv], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    # communicate() has reaped the child; its rusage is in RUSAGE_CHILDREN, which holds only this child's
    # maximum when runs are sequential and the parent is small (ru_maxrss is a max over reaped children).
    import resource

    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{arch}: export failed ({proc.returncode}): {stderr.strip().splitlines()[-1:]}")
    loads = json.loads(report.read_text()) if report.exists() else {}
    import hashlib

    artifacts = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:16] for f in sorted(out.glob("*"))
                 if f.suffix in (".onnx", ".json") and f.name != "manifest.json"} if out.is_dir() else {}
    calib_line = next((l for l in stderr.splitlines() if "Calibrating" in l and "done" in l), "")
    return {"arch": arch, "wall_s": round(wall, 1), "peak_rss_kb": peak_kb, "onnx_loads_of_written_files": loads,
            "exit_code": proc.returncode, "calibration_line": calib_line.strip(), "artifacts_sha256": artifacts}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calib", type=Path, required=True)
    p.add_argument("--archs", default="resnet50,wide_resnet101_2")
    p.add_argument("--extra", default="--fp16 --int8")
    p.add_argument("--tree", type=Path, help="checkout to run (default: the installed resnet_deploy)")
    p.add_argument("--label", default="current")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--results", type=Path, default=RESULTS / "export_memory.json")
    a = p.parse_args(argv)
    rows = []
    for arch in a.archs.split(","):
        for i in range(a.repeat):
            # one fresh parent per run: RUSAGE_CHILDREN is a running maximum
            code = ("import json, sys; sys.path.insert(0, %r); import export_memory as m; "
                    "print(json.dumps(m.run_one(%r, m.Path(%r), %r, %s, m.Path(sys.argv[1]))))"
                    % (str(HERE), arch, str(a.calib.resolve()), shlex.split(a.extra),
                       f"m.Path({str(a.tree.resolve())!r})" if a.tree else "None"))
            with tempfile.TemporaryDirectory(prefix="export-memory-") as work:
                r = subprocess.run([sys.executable, "-c", code, work], capture_output=True, text=True)
            if r.returncode:
                print(r.stderr, file=sys.stderr)
                return r.returncode
            row = json.loads(r.stdout.strip().splitlines()[-1])
            row.update(label=a.label, run=i + 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    data = json.loads(a.results.read_text()) if a.results.exists() else {"runs": []}
    data["machine"] = cpu_line()
    data["command"] = f"export --arch A --weights random {a.extra} --calib {a.calib.name} --max-drop 100"
    data["runs"] = [r for r in data["runs"] if r["label"] != a.label] + rows
    a.results.write_text(json.dumps(data, indent=1) + "\n")
    write_md(data, a.results.with_suffix(".md"))
    return 0


def write_md(data: dict, path: Path) -> None:
    lines = ["# Whole-export peak memory, wall time and ONNX re-reads", "",
             f"Machine: {data['machine']}. Command per run: `{data['command']}`, one process per run "
             "(`python benchmarks/export_memory.py`).", "",
             "| label | arch | run | wall (s) | peak RSS (MiB) | onnx.load of files the run wrote |",
             "|---|---|---|---|---|---|"]
    for r in data["runs"]:
        loads = ", ".join(f"{k} x{v}" for k, v in sorted(r["onnx_loads_of_written_files"].items())) or "none"
        lines.append(f"| {r['label']} | {r['arch']} | {r['run']} | {r['wall_s']} | {r['peak_rss_kb'] / 1024:.0f} | "
                     f"{loads} |")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
