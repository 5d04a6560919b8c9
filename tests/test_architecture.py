"""The structure stays as docs/architecture.md draws it: no import circle, bundle file names in one module."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "resnet_deploy"
BUNDLE_NAMES = ("model.onnx", "model.onnxruntime.onnx", "model.fp16.onnx", "model.bf16.onnx", "model.pt2", "calibration.json",
                "fusion_report.json", "manifest.json", ".layers.json", "model.int8.")


def test_no_import_circle():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py"), str(PACKAGE)],
                       capture_output=True, text=True, check=True)
    assert "cycles: none" in r.stdout, r.stdout


def _code_strings(path: Path):
    """String constants of a module that are not docstrings (messages, names)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_bundle_file_names_are_spelled_only_in_layout():
    # triton.py writes Triton's own repository layout (model.onnx / model.plan inside a model version folder)
    allowed = {PACKAGE / "layout.py", PACKAGE / "triton.py"}
    found = [f"{p.relative_to(ROOT)}:{line}: {value!r}" for p in sorted(PACKAGE.rglob("*.py")) if p not in allowed
             for line, value in _code_strings(p) if any(name in value for name in BUNDLE_NAMES)]
    assert not found, "bundle file names outside layout.py:\n" + "\n".join(found)
