"""Time each step of the README's quick start, as a reader runs it, twice in a row in one fresh folder.

The steps are the README's blocks marked ``<!--pytest.mark.quickstart-->`` (read with pytest-codeblocks, as
tests/test_readme.py reads them), each run with bash from a temporary folder that links to the repository's folders.
``resnet-deploy`` and ``python`` must be on PATH (an activated environment). Writes benchmarks/results/<name>.md.

    python benchmarks/quickstart_times.py
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from pytest_codeblocks import extract_from_file

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--name", default="quickstart")
    a = p.parse_args(argv)
    steps = [b for b in extract_from_file(ROOT / "README.md") if "pytest.mark.quickstart" in b.marks]
    rows = []
    with tempfile.TemporaryDirectory(prefix="quickstart-") as work:
        for entry in ROOT.iterdir():
            if entry.is_dir() and not entry.name.startswith("."):
                Path(work, entry.name).symlink_to(entry, target_is_directory=True)
        for run in range(1, a.runs + 1):
            for i, step in enumerate(steps, 1):
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                r = subprocess.run(["bash", "-e", "-c", step.code], cwd=work, capture_output=True, text=True)
                rows.append((run, i, time.perf_counter() - t0, load, r.returncode, step.code.strip()))
                print(f"run {run} step {i}: {rows[-1][2]:.1f} s, exit {r.returncode}", flush=True)
    lines = [f"# README quick start, wall time per step ({a.runs} runs in a row, one folder)", "",
             f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, shared with other jobs; "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Command: `python benchmarks/quickstart_times.py`.", "",
             "| run | step | wall s | load avg (1 min) before | exit | command |", "|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {run} | {i} | {s:.1f} | {load:.2f} | {rc} | `{code.splitlines()[0]}`"
              + (f" and {len(code.splitlines()) - 1} more |" if "\n" in code else " |")
              for run, i, s, load, rc, code in rows]
    for run in range(1, a.runs + 1):
        lines.append(f"\nRun {run}: {sum(s for r, _, s, *_ in rows if r == run):.0f} s in all.")
    out = ROOT / "benchmarks" / "results" / f"{a.name}.md"
    out.write_text("\n".join(lines) + "\n")
    print(out)
    return 0 if all(rc == 0 for *_, rc, _ in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
