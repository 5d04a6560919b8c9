"""Run the fusion passes of a target over an ONNX model or file."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..files import StagedFiles
from ..types import Target
from ..onnx_graph import Graph, infer_shapes, op_counts
from .passes import PASSES, PassResult, get_pass

log = logging.getLogger(__name__)


@dataclass
class FuseResult:
    """What the passes did to one graph."""

    target: Target
    model: object  # the rewritten ModelProto
    passes: list[PassResult]
    skipped: list[str]
    ops_before: dict
    ops_after: dict
    seconds: float = 0.0

    @property
    def rewrites(self) -> list:
        return [r for p in self.passes for r in p.rewrites]

    def counts(self) -> dict[str, int]:
        return {p.name: len(p.rewrites) for p in self.passes}

    @property
    def found(self) -> list:
        """Patterns recognised and reported without a rewrite (squeeze-excitation blocks)."""
        return [r for p in self.passes for r in p.found]


def parse_target(value: "Target | str") -> Target:
    """``portable`` or ``onnxruntime``; ``tensorrt`` gets the portable graph (TensorRT fuses by itself)."""
    try:
        target = Target.parse(value)
        if target is Target.OPENVINO:  # an IR target, not a graph shape the passes know
            raise UserError("")
    except UserError:
        raise UserError(f"unknown fusion target {value!r}: choose one of portable, onnxruntime, tensorrt "
                        "(= portable)") from None
    return Target.PORTABLE if target is Target.TENSORRT else target


def passes_for(target: "Target | str", skip=()) -> tuple[list[str], list[str]]:
    """Names of the passes a target runs, in order, and the ones skipped; unknown names raise ``UserError``."""
    target = parse_target(target)
    skip = [get_pass(s).name for s in skip]
    names = [n for n, p in PASSES.items() if target in p.targets]
    return [n for n in names if n not in skip], [n for n in names if n in skip]


def fuse_model(model, target: "Target | str" = Target.ONNXRUNTIME, skip=()) -> FuseResult:
    """Run the target's passes over ``model`` (a ``ModelProto``, changed in place) and return what they did.

    Shape inference runs first (the residual fusion needs the Add input shapes); the graph inputs and outputs,
    and so the dynamic batch, are never touched.
    """
    target = parse_target(target)
    run, skipped = passes_for(target, skip)
    start = time.perf_counter()
    before = op_counts(model)
    inferred = infer_shapes(model, data_prop=True, weights=False)
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred.graph.value_info)
    g = Graph(model)
    results = []
    for name in run:
        res = PASSES[name].run(g)
        log.info("%s: %d rewrite(s), %d recognised, %d declined", name, len(res.rewrites), len(res.found),
                 len(res.declined))
        results.append(res)
    return FuseResult(target, model, results, skipped, before, op_counts(model), time.perf_counter() - start)


def load_onnx(path: "str | Path", what: str = "input"):
    """Load an ONNX file (with external data) or raise a one-line ``UserError``."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {str(path)!r} does not exist or is not a file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf raises assorted errors on garbage
        raise UserError(f"{what} {str(path)!r} is not an ONNX model ({type(e).__name__})") from None
    if not model.graph.node:
        raise UserError(f"{what} {str(path)!r} is not an ONNX model (no graph nodes)")
    return model


def save_onnx(model, path: "str | Path", external: bool | None = None, check: bool = True) -> None:
    """Save (external data when asked, or past 1.8 GB) and run the ONNX checker (com.microsoft nodes are not
    schema-checked)."""
    from ..onnx_graph import EXTERNAL_DATA_THRESHOLD, save_model

    path = Path(path)
    if external is None:
        external = model.ByteSize() > EXTERNAL_DATA_THRESHOLD * 0.9
    save_model(model, path, external)
    if check:
        check_graph_file(path)


def check_graph_file(path: "str | Path") -> None:
    """The ONNX checker on a fused graph just written (com.microsoft nodes are not schema-checked)."""
    import onnx

    onnx.checker.check_model(str(path))


def fuse_file(src: "str | Path", dst: "str | Path", target: "Target | str" = Target.ONNXRUNTIME, skip=(),
              force: bool = False) -> FuseResult:
    """Fuse the ONNX file ``src`` for ``target`` and write ``dst`` (refuses to overwrite without ``force``)."""
    target = parse_target(target)
    passes_for(target, skip)  # bad names fail before any work
    dst = Path(dst)
    if not dst.parent.is_dir():
        raise UserError(f"output folder {str(dst.parent)!r} does not exist")
    if dst.exists() and not force:
        raise UserError(f"output {str(dst)!r} exists: pass --force to replace it")
    if Path(src).resolve() == dst.resolve():
        raise UserError(f"output {str(dst)!r} is the input file: choose another -o")
    model = load_onnx(src)
    res = fuse_model(model, target, skip)
    # Write into a temporary folder beside dst, then move: a failure leaves nothing half-written.
    with StagedFiles(dst.parent, force) as stage:
        save_onnx(model, stage.path / dst.name)
        stage.keep(*sorted((f.name for f in stage.path.iterdir()), key=lambda n: n == dst.name))  # graph last
    return res
