"""The fusion stage of a bundle: portable passes on ``model.onnx`` (in place), the FusedConv graph
``model.onnxruntime.onnx``, ``fusion_report.json``, and parity of both graphs with the eager model."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from .. import layout, validate
from ..bundle import BundleUpdate, find_artifacts, locate
from ..errors import UserError
from ..layout import Kind
from ..progress import step
from ..stages.reference import PARITY_BATCHES, Reference
from ..types import Target
from .core import FuseResult, fuse_model, load_onnx, passes_for, save_onnx
from .report import target_report

log = logging.getLogger(__name__)

TARGETS = {Target.PORTABLE: layout.FP32_ONNX, Target.ONNXRUNTIME: layout.ORT_ONNX}


@dataclass
class FuseOptions:
    """Passes to skip (by name), what export's PyTorch-level fold did (kept in the report), and whether the
    bundle's existing fused files may be replaced."""

    skip: tuple = ()
    torch_fold: dict | None = None
    force: bool = False


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
    section. Raises ``CheckFailed`` when a fused graph breaks parity (nothing is written)."""
    for t in TARGETS:
        passes_for(t, options.skip)
    names = find_artifacts(bundle.manifest, kind=Kind.ONNX, precision="fp32", target="portable")
    if not names:
        raise UserError(f"bundle {str(bundle.out)!r} has no fp32 portable ONNX graph to fuse")
    updating = isinstance(bundle, BundleUpdate)  # a new bundle (BundleWriter) replaces the old one as a whole
    for name in (layout.ORT_ONNX, layout.FUSION_REPORT):
        if updating and (bundle.out / name).exists() and not options.force:
            raise UserError(f"{str(bundle.out / name)!r} already exists: pass --force to replace it")
    torch_fold = options.torch_fold if options.torch_fold is not None else _previous_torch_fold(bundle)
    src = locate(bundle, names[0])
    results, parity, reports, paths = {}, {}, {}, {}
    for target in TARGETS:
        name = names[0] if target is Target.PORTABLE else TARGETS[target]
        with step(f"Fusing {name} ({target}) and checking it vs eager"):
            res = fuse_model(load_onnx(src), target, options.skip)
            changed = target is not Target.PORTABLE or res.rewrites
            path = bundle.path / name if changed else src
            if changed:
                external = layout.external_data(names[0]) in bundle.manifest["files"]
                save_onnx(res.model, path, external=True if external else None)
            t = str(target)
            parity[t], paths[t], results[t], reports[t] = _parity(reference, path), path, res, target_report(res)
        if changed:
            old = bundle.manifest["files"].get(name, {})
            tags = {k: v for k, v in old.items() if k not in ("size", "sha256")}
            tags.update(kind=Kind.ONNX, precision="fp32", target=t, fused=True)
            bundle.add_file(name, **tags)
            if Path(layout.external_data(str(path))).exists():
                bundle.add_file(layout.external_data(name), kind=Kind.ONNX_DATA, precision="fp32")
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


def fuse_bundle(bundle_dir: "str | Path", skip=(), force: bool = False) -> tuple[FuseStageResult, dict]:
    """``resnet-deploy fuse BUNDLE``: re-run the fusion stage on an existing bundle (atomically: all or nothing),
    against its own eager reference on seeded inputs. Returns the stage result and the new manifest."""
    from ..bundle import load_eager
    from ..preprocess import Preprocessing
    from ..stages.reference import build_reference

    with BundleUpdate(bundle_dir, force=force) as bundle:
        pre = Preprocessing.from_dict(bundle.manifest["preprocessing"])
        reference = build_reference(load_eager(bundle), pre)
        result = run(bundle, reference, FuseOptions(skip=tuple(skip), force=force))
    return result, bundle.manifest
