"""The structure stays as docs/architecture.md draws it: layers that import only downwards, no import circle at file
or package level, bundle file names in one module, backends named only in backends/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
PACKAGE = ROOT / "resnet_deploy"
BUNDLE_NAMES = ("model.onnx", "model.onnxruntime.onnx", "model.fp16.onnx", "model.bf16.onnx", "model.pt2", "calibration.json",
                "fusion_report.json", "manifest.json", ".layers.json", "model.int8.")


# The layers, bottom to top (docs/architecture.md). A unit (a root module or a subpackage) may import units of its
# own layer or lower ones, never a higher one; units of the stage layer do not import each other.
LAYERS = [
    {"errors", "types", "version", "progress", "files", "layout", "onnx_graph", "preprocess", "validate", "bundle"},
    {"trt", "models"},
    {"backends"},
    {"stages"},
    {"exporter", "fuse", "precision", "openvino_ir", "engines"},
    {"pipeline", "deploy", "bench"},
    {"cli", "testing", "__init__", "__main__"},
]
STAGE_LAYER = 4


def _graph():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import import_graph
    finally:
        sys.path.pop(0)
    return import_graph, import_graph.graph(PACKAGE)


def test_no_import_circle_at_file_or_package_level():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py"), str(PACKAGE)],
                       capture_output=True, text=True, check=True)
    assert "cycles: none" in r.stdout and "package cycles: none" in r.stdout, r.stdout


def test_every_unit_has_a_layer_and_imports_only_downwards():
    _, (_, units) = _graph()
    layer = {u: i for i, names in enumerate(LAYERS) for u in names}
    assert set(units) <= set(layer), f"units without a layer (add them to LAYERS and docs): {set(units) - set(layer)}"
    upward = [f"{a} (layer {layer[a]}) -> {b} (layer {layer[b]})" for a, targets in units.items() for b in targets
              if layer[b] > layer[a] or (layer[a] == layer[b] == STAGE_LAYER)]
    assert not upward, "imports that run up (or between stages):\n" + "\n".join(sorted(upward))


def test_layer_check_catches_an_upward_import():
    import_graph, _ = _graph()
    assert import_graph.cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


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


def test_no_backend_name_branches_outside_backends():
    """``if backend == "openvino"``-style chains live only in backends/: everyone else asks the backend table."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "backends" in path.relative_to(PACKAGE).parts:
            continue
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            text = " ".join(ast.get_source_segment(source, s) or "" for s in sides)
            strings = [s for s in sides if isinstance(s, ast.Constant) and isinstance(s.value, str)
                       or isinstance(s, (ast.Tuple, ast.Set, ast.List)) and any(isinstance(e, ast.Constant)
                                                                              for e in s.elts)]
            named = strings or [s for s in sides if isinstance(s, ast.Attribute) and isinstance(s.value, ast.Name)
                                 and s.value.id == "Backend"]
            if "backend" in text.lower() and named:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.get_source_segment(source, node)}")
    assert not found, "backend-name branches outside backends/:\n" + "\n".join(found)
