"""The fusion stage of a bundle: portable passes on ``model.onnx`` (in place), the FusedConv graph
``model.onnxruntime.onnx``, ``fusion_report.json``, and parity of both graphs with the eager model."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np

from .. import validate
from ..bundle import BundleUpdate, find_artifacts, load_eager, locate
from ..errors import UserError
from ..types import Target
from .core import FuseResult, fuse_model, load_onnx, passes_for, save_onnx
from .report import target_report

log = logging.getLogger(__name__)

PORTABLE_ONNX = "model.onnx"
ORT_ONNX = "model.onnxruntime.onnx"
REPORT = "fusion_report.json"
PARITY_BATCHES = (1, 4)


@dataclass
class FuseStageResult:
    """Per target: the fusion result and its parity with eager; the report as written to the bundle."""

    results: dict[str, FuseResult]
    parity: dict[str, validate.Parity]
    report: dict


def _inputs(manifest: dict, seed: int = 0) -> np.ndarray:
    shape = manifest.get("input", {}).get("shape") or [-1, 3, 224, 224]
    return np.random.default_rng(seed).standard_normal((8, *shape[1:]), dtype=np.float32)


def _eager_reference(eager, data) -> dict:
    """Eager logits at each parity batch size, computed once for both targets."""
    from ..backends.torch_eager import TorchRunner

    with TorchRunner(eager) as ref:
        return {b: validate.run_batches(ref, data, b) for b in PARITY_BATCHES}


def _parity(reference: dict, path, data) -> validate.Parity:
    """Our graph as written: ONNX Runtime with its own graph optimizations off, so it cannot re-fuse or fix it."""
    from ..backends.onnxruntime import OnnxRuntimeRunner

    with OnnxRuntimeRunner(path, graph_level="disable") as cand:
        return validate.parity_vs_logits(reference, cand, data)["overall"]


def fuse_bundle(bundle, *, eager=None, data: np.ndarray | None = None, skip=(), torch_fold: dict | None = None,
                force: bool = False) -> FuseStageResult:
    """Run the portable and onnxruntime fusions on a bundle being written (``BundleWriter``) or updated
    (``BundleUpdate``), validate both graphs against ``eager`` (default: the bundle's ``model.pt2``) and record
    them in the manifest's ``fusion`` section. Raises ``CheckFailed`` when a fused graph breaks parity."""
    for t in (Target.PORTABLE, Target.ONNXRUNTIME):
        passes_for(t, skip)
    names = find_artifacts(bundle.manifest, kind="onnx", precision="fp32", target="portable")
    if not names:
        raise UserError(f"bundle {str(bundle.out)!r} has no fp32 portable ONNX graph to fuse")
    updating = isinstance(bundle, BundleUpdate)  # a new bundle (BundleWriter) replaces the old one as a whole
    for name in (ORT_ONNX, REPORT):
        if updating and (bundle.out / name).exists() and not force:
            raise UserError(f"{str(bundle.out / name)!r} already exists: pass --force to replace it")
    if torch_fold is None and (bundle.out / REPORT).is_file():  # re-fusing keeps what export's torch fold did
        try:
            torch_fold = json.loads((bundle.out / REPORT).read_text()).get("torch_fold")
        except (ValueError, AttributeError):
            torch_fold = None
    src = locate(bundle, names[0])
    if eager is None:
        eager = load_eager(bundle)
    data = _inputs(bundle.manifest) if data is None else data
    reference = _eager_reference(eager, data)
    results, parity, reports, paths = {}, {}, {}, {}
    for target, name in ((Target.PORTABLE, names[0]), (Target.ONNXRUNTIME, ORT_ONNX)):
        res = fuse_model(load_onnx(src), target, skip)
        changed = target is not Target.PORTABLE or res.rewrites
        path = bundle.path / name if changed else src
        if changed:
            save_onnx(res.model, path, external=True if f"{names[0]}.data" in bundle.manifest["files"] else None)
        parity[str(target)] = _parity(reference, path, data)
        paths[str(target)] = path
        results[str(target)] = res
        reports[str(target)] = target_report(res)
        if changed:
            old = bundle.manifest["files"].get(name, {})
            tags = {k: v for k, v in old.items() if k not in ("size", "sha256")}
            tags.update(kind="onnx", precision="fp32", target=str(target), fused=True)
            bundle.add_file(name, **tags)
            if (path.parent / f"{name}.data").exists():
                bundle.add_file(f"{name}.data", kind="onnx-external-data", precision="fp32")
    report = {"targets": reports, "torch_fold": torch_fold,
              "parity": {t: p.to_dict() for t, p in parity.items()}}
    (bundle.path / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    bundle.add_file(REPORT, kind="report")
    ok = {t: p.passes(validate.FP32_MIN_COSINE, validate.FP32_MIN_AGREEMENT) for t, p in parity.items()}
    bundle.manifest["fusion"] = {
        "report": REPORT,
        "torch_fold": {"folded": len(torch_fold["folded"]), "declined": len(torch_fold["declined"])}
        if torch_fold else None,
        "targets": {t: {"file": ORT_ONNX if t == "onnxruntime" else names[0],
                        "rewrites": results[t].counts(), "skipped": results[t].skipped,
                        "nodes_before": reports[t]["nodes_before"], "nodes_after": reports[t]["nodes_after"],
                        "parity": {"backend": "onnxruntime-cpu, graph optimizations disabled",
                                   "reference": "torch eager fp32", "batches": list(PARITY_BATCHES),
                                   **parity[t].to_dict(), "passed": ok[t]}}
                    for t in results},
    }
    for t, p in parity.items():
        validate.require_parity(f"fused {t} graph vs eager", p, validate.FP32_MIN_COSINE, validate.FP32_MIN_AGREEMENT,
                                where=lambda: validate.first_nonfinite_node(paths[t], data))
    return FuseStageResult(results, parity, report)
