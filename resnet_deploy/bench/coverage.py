"""Which of the bundle's artifacts a run measured, and why it skipped each other one.

Every model file of the bundle (an eager program, ONNX graph, OpenVINO IR or TensorRT plan: the manifest's
``kind``) is either measured by some case of the run or listed as skipped with the reason, asked of the backend
table: which backends run that file at which precision (``BackendSpec.artifact``), and why each of them did not run
here (not installed: the table's install hint; a GPU backend without a GPU; the CPU lacks bf16; not selected by
``--backend`` / ``--precision``; not a default backend), and what this run measured at its precision instead.
"""

from __future__ import annotations

from ..backends import table
from ..layout import Kind
from ..types import Precision

MODEL_KINDS = (Kind.EAGER, Kind.ONNX, Kind.OPENVINO_IR, Kind.PLAN)


def _why_not(spec: table.BackendSpec, precision: Precision, backends: list[str] | None,
             precisions: list[Precision] | None) -> str:
    """Why ``spec`` did not run at ``precision`` in a run of ``backends`` / ``precisions`` (None: the defaults)."""
    missing = spec.unavailable_reason()
    if missing:
        return missing
    if spec.device == "gpu" and not table.cuda_available():
        return "a GPU backend, and torch sees no GPU here"
    if backends is not None and spec.name not in backends:
        return f"not selected (--backend {','.join(backends)})"
    if backends is None and not spec.default:
        return f"not a default backend (pass --backend {spec.name})"
    if precisions is not None and precision not in precisions:
        return f"precision not selected (--precision {','.join(map(str, precisions))})"
    return spec.cannot_run(precision) or "not measured"


def skipped_artifacts(manifest: dict, cases: list, backends: list[str] | None = None,
                      precisions: list[Precision] | None = None) -> list[dict]:
    """``{"artifact", "kind", "precision", "target", "reason"}`` for each model file of the bundle that no case in
    ``cases`` (``runners.Case``) measures, in manifest order."""
    measured = {c.artifact for c in cases}
    out = []
    for name, entry in manifest.get("files", {}).items():
        if entry.get("kind") not in MODEL_KINDS or name in measured:
            continue
        runs = [(spec, p) for spec in table.all_backends() for p in Precision if spec.artifact(manifest, p) == name]
        why: dict[str, list[str]] = {}  # one reason, every backend and precision it holds for
        for spec, p in runs:
            why.setdefault(_why_not(spec, p, backends, precisions), []).append(f"{spec.name} {p}")
        reason = "; ".join(f"{', '.join(labels)}: {text}" for text, labels in why.items()) or "no backend runs this file"
        instead = [f"{c.backend} {c.artifact}" for c in cases if str(c.precision) == entry.get("precision")]
        if instead:
            reason += f" (at {entry['precision']} this run measured {', '.join(instead)})"
        out.append({"artifact": name, "kind": entry.get("kind"), "precision": entry.get("precision"),
                    "target": entry.get("target"), "reason": reason})
    return out
