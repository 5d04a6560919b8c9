"""The fusion stage of a bundle: portable passes on ``model.onnx`` (in place), the FusedConv graph
``model.onnxruntime.onnx``, ``fusion_report.json``, and parity of both graphs with the eager model."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from .. import layout, validate
from ..bundle import BundleUpdate, find_artifacts, locate
from ..errors import UserError
from ..layout import Kind
from ..progress import step
from ..stages.reference import PARITY_BATCHES, Reference
from ..types import Target
from ..onnx_graph import copy_model
from .core import FuseResult, check_graph_file, fuse_model, passes_for
from .report import target_report

log = logging.getLogger(__name__)

NAME = "fuse"
TARGETS = {Target.PORTABLE: layout.FP32_ONNX, Target.ONNXRUNTIME: layout.ORT_ONNX}


@dataclass(frozen=True)
class FuseOptions:
    """Passes to skip (by name; an unknown one is a one-line error when the options are made), what export's
    PyTorch-level fold did (kept in the report), and whether the bundle's existing fused files may be replaced."""

    skip: tuple = ()
    torch_fold: dict | None = None
    force: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "skip", tuple(self.skip))
        for t in TARGETS:
            passes_for(t, self.skip)


@dataclass
class FuseStageResult:
    """Per target: the fusion result and its parity with eager; the report as written to the bundle."""

    results: dict[str, FuseResult]
    parity: dict[str, validate.Parity]
    report: dict


def _parity(reference: Reference, path) -> validate.Parity:
    """Our graph as written: ONNX Runtime with its own graph optimizations off, so it cannot re-fuse or fix it."""
    from ..backends.onnxruntime import OnnxRuntimeRunner

    with OnnxRuntimeRunner(path, graph_level="disable") as cand:
        return reference.parity(cand)["overall"]


def _previous_torch_fold(bundle) -> dict | None:
    """Re-fusing an existing bundle keeps what export's PyTorch fold did (it is in the old report)."""
    old = bundle.out / layout.FUSION_REPORT
    if not old.is_file():
        return None
    try:
        return json.loads(old.read_text()).get("torch_fold")
    except (ValueError, AttributeError):
        return None


def run(bundle, reference: Reference, options: FuseOptions) -> FuseStageResult:
    """Run the portable and onnxruntime fusions on a bundle being written (``BundleWriter``) or updated
    (``BundleUpdate``), validate both graphs against the reference and record them in the manifest's ``fusion``
    section. Raises ``CheckFailed`` when a fused graph breaks parity (nothing is written). The graph comes from the
    export stage in memory; the fused graphs go on to the precision stage the same way."""
    names = find_artifacts(bundle.manifest, kind=Kind.ONNX, precision="fp32", target="portable")
    if not names:
        raise UserError(f"bundle {str(bundle.out)!r} has no fp32 portable ONNX graph to fuse")
    updating = isinstance(bundle, BundleUpdate)  # a new bundle (BundleWriter) replaces the old one as a whole
    for name in (layout.ORT_ONNX, layout.FUSION_REPORT):
        if updating and (bundle.out / name).exists() and not options.force:
            raise UserError(f"{str(bundle.out / name)!r} already exists: pass --force to replace it")
    torch_fold = options.torch_fold if options.torch_fold is not None else _previous_torch_fold(bundle)
    src = locate(bundle, names[0])
    source = bundle.graph(names[0])
    external = True if layout.external_data(names[0]) in bundle.manifest["files"] else None
    results, parity, reports, paths = {}, {}, {}, {}
    for target in TARGETS:
        name = names[0] if target is Target.PORTABLE else TARGETS[target]
        with step(f"Fusing {name} ({target}) and checking it vs eager"):
            # the passes rewrite a copy; onnxruntime's start from the portable result (what model.onnx holds now)
            res = fuse_model(copy_model(source), target, options.skip)
            changed = target is not Target.PORTABLE or res.rewrites
            path = bundle.path / name if changed else src
            t = str(target)
            if changed:
                old = bundle.manifest["files"].get(name, {})
                tags = {k: v for k, v in old.items() if k not in ("size", "sha256")}
                tags.update(kind=Kind.ONNX, precision="fp32", target=t, fused=True)
                bundle.add_graph(name, res.model, external=external, keep=target is Target.PORTABLE, **tags)
                check_graph_file(path)
                if target is Target.PORTABLE:
                    source = res.model
            reports[t] = target_report(res)
            res.model = None  # the report is made: the bundle keeps the graph the next stage reads
            parity[t], paths[t], results[t] = _parity(reference, path), path, res
    report = {"targets": reports, "torch_fold": torch_fold, "parity": {t: p.to_dict() for t, p in parity.items()}}
    (bundle.path / layout.FUSION_REPORT).write_text(json.dumps(report, indent=2) + "\n")
    bundle.add_file(layout.FUSION_REPORT, kind=Kind.REPORT)
    bar = reference.bar("fp32")
    bundle.manifest["fusion"] = {
        "report": layout.FUSION_REPORT,
        "torch_fold": {"folded": len(torch_fold["folded"]), "declined": len(torch_fold["declined"])}
        if torch_fold else None,
        "targets": {t: {"file": names[0] if t == "portable" else layout.ORT_ONNX,
                        "rewrites": results[t].counts(), "skipped": results[t].skipped,
                        "nodes_before": reports[t]["nodes_before"], "nodes_after": reports[t]["nodes_after"],
                        "parity": layout.validation_record(
                            parity[t], bar, backend="onnxruntime-cpu, graph optimizations disabled",
                            inputs=reference.parity_description(), batches=PARITY_BATCHES)}
                    for t in results},
    }
    for t, p in parity.items():
        validate.require_parity(f"fused {t} graph vs eager", p, bar,
                                where=lambda: reference.locate_nonfinite(paths[t]))
    return FuseStageResult(results, parity, report)
