"""Which (backend, precision) cases a bundle offers, and how to build the runner for each, from the backend table.

Artifacts are found by the table's lookups (manifest tags, never file names). GPU backends are imported lazily:
``--backend tensorrt`` on a machine without TensorRT is a one-line ``MissingDependency``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from ..backends import table
from ..backends.table import MODES, RunnerOptions
from ..errors import UserError
from ..types import Precision

log = logging.getLogger(__name__)

__all__ = ["Case", "MODES", "make_runner", "select_cases"]


@dataclass(frozen=True)
class Case:
    """One thing to benchmark: a backend (its table name) running one artifact of the bundle at one precision."""

    backend: str
    precision: Precision
    artifact: str  # file name inside the bundle

    def to_dict(self) -> dict:
        d = asdict(self)
        d["precision"] = str(self.precision)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Case":
        return cls(table.get(d["backend"]).name, Precision.parse(d["precision"]), d["artifact"])

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"

    @property
    def spec(self) -> table.BackendSpec:
        return table.get(self.backend)


def select_cases(manifest: dict, backends: "list[str] | None" = None,
                 precisions: list[Precision] | None = None) -> tuple[list[Case], list[str]]:
    """The cases to run and notes on what was asked for but is not in the bundle.

    With no ``backends``: every default backend of the table that can run here (GPU ones only where a GPU is
    usable). A backend named explicitly must be runnable here (else ``MissingDependency``).
    """
    explicit = backends is not None
    if backends is None:
        specs = table.runnable_by_default()
    else:
        specs = [table.get(b) for b in backends]
        for spec in specs:
            spec.available()
    explicit_precisions = precisions is not None
    precisions = precisions or list(Precision)
    cases, notes = [], []
    for spec in specs:
        for p in precisions:
            name = spec.artifact(manifest, p)
            if name is None:
                if explicit and explicit_precisions:
                    notes.append(f"{spec.name} {p}: the bundle has no artifact for it, skipped")
                continue
            unsupported = spec.cannot_run(p)
            if unsupported:
                notes.append(f"{spec.name} {p} ({name}): {unsupported}, skipped")
                continue
            cases.append(Case(spec.name, p, name))
    if not cases:
        have = ", ".join(f"{n} ({e.get('kind')} {e.get('precision') or ''})".strip()
                         for n, e in manifest.get("files", {}).items())
        raise UserError(f"nothing to benchmark: no artifact for backends {', '.join(s.name for s in specs)} at "
                        f"precisions {', '.join(map(str, precisions))}; the bundle has {have}")
    return cases, notes


def make_runner(case: Case, bundle: Path, threads: int | None, device: str, spinning: bool = True,
                work_dir: Path | None = None, mode: str = "latency", batches=()):
    """Build (not activate) the runner for ``case`` as its users run it in ``mode`` (the table's builder).
    ``device`` applies to the torch backends; ``work_dir`` holds runtime caches (ONNX Runtime's TensorRT
    execution provider's engines); ``batches`` are the batch sizes it will run."""
    from ..bundle import bundle_file

    bundle_file(bundle, case.artifact)  # a manifest name that leaves the bundle is refused before any runtime opens it
    options = RunnerOptions(mode=mode, batches=tuple(int(b) for b in batches), threads=threads, spinning=spinning,
                            device=device, work_dir=work_dir)
    return case.spec.runner(Path(bundle), case.artifact, case.precision, options)
