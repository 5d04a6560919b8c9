"""The bench package, its CLI command and the testing helpers import without torch, ONNX Runtime or TensorRT."""

from __future__ import annotations

import subprocess
import sys

MODULES = ["resnet_deploy.bench", "resnet_deploy.bench.stats", "resnet_deploy.bench.runners",
           "resnet_deploy.bench.harness", "resnet_deploy.bench.report", "resnet_deploy.bench.gate",
           "resnet_deploy.bench.worker", "resnet_deploy.cli.bench_cmd", "resnet_deploy.testing"]


def test_bench_modules_import_lazily():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in MODULES) +
            "heavy = [m for m in ('torch', 'onnxruntime', 'tensorrt', 'matplotlib') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
