"""The backend table: each backend declares, in one ``BackendSpec``, everything the rest of the tool asks of it.

Which artifact of a bundle it runs per precision, whether it is available here (and the install hint when it is
not), what this machine must offer for a precision (a bf16-capable CPU), how to build its runner for a mode and
batch sizes, which Triton model serves its artifacts, and which runtime of the C++ loader runs them. ``bench``,
the ``recommended`` entry, ``triton``, the C++ pick and the precision stage read this table; nothing outside
``backends/`` branches on a backend's name.

A backend module lists its specs in a module-level ``BACKENDS`` tuple. The table holds every module of this
package that has one, plus the modules named in the ``RESNET_DEPLOY_BACKENDS`` environment variable (comma
separated; a plugin file on ``PYTHONPATH``) and those of the ``resnet_deploy.backends`` entry-point group: a new
backend is one file.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MissingDependency, UserError, unknown
from ..types import Precision

log = logging.getLogger(__name__)

PLUGINS_ENV = "RESNET_DEPLOY_BACKENDS"
ENTRY_POINTS = "resnet_deploy.backends"
DEVICES = ("cpu", "gpu")
MODES = ("latency", "throughput")


@dataclass(frozen=True)
class RunnerOptions:
    """How a runner is built: ``mode`` latency (one request at a time) or throughput (as many in flight as the
    runtime wants), the batch sizes it will see (``batches``: static shapes, TensorRT profiles), intra-op
    ``threads`` (None: the runtime's default), thread ``spinning``, the torch ``device`` and a ``work_dir`` for
    runtime caches."""

    mode: str = "latency"
    batches: tuple[int, ...] = ()
    threads: int | None = None
    spinning: bool = True
    device: str = "cpu"
    work_dir: Path | None = None


@dataclass(frozen=True)
class TritonFiles:
    """What a Triton model's version folder holds: ``copies`` (bundle file -> name in the folder), the bundle
    files it came from, and config additions (``cc_model_filenames``, ``parameters``, and ``model_filename``: the
    file Triton loads when it is not the backend's default name, ``default_model_filename``)."""

    copies: dict[str, str]
    sources: list[str]
    cc_files: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    model_filename: str | None = None


@dataclass(frozen=True)
class TritonServing:
    """How Triton serves a backend's artifacts.

    ``platform``: Triton's platform (``platform:``) or, with ``as_backend``, its backend (``backend:``).
    ``suffix``: the model is ``<name>_<suffix>``. ``kind``: ``KIND_CPU``/``KIND_GPU``, or None to follow
    ``--device``. ``devices``: where it can serve. ``default_on``: devices where ``triton`` writes it unasked when
    the bundle has its artifact. ``artifacts(manifest, precision)``: the bundle files it would serve.
    ``stage(bundle, manifest, precision, concurrent)``: the ``TritonFiles`` to copy (raises ``UserError`` naming
    what is missing; ``concurrent``: the model batches or runs several instances). ``label``: its name in messages.
    ``serve_precision(precision)``: the precision served for a recommended one, and a note (OpenVINO serves its
    bf16 pick as the fp32 IR).
    """

    platform: str
    suffix: str
    artifacts: Callable[[dict, Precision], list[str]]
    stage: Callable[[Path, dict, Precision, bool], TritonFiles]
    label: str = ""
    kind: str | None = None
    as_backend: bool = False
    devices: tuple[str, ...] = DEVICES
    default_on: tuple[str, ...] = ()
    serve_precision: Callable[[str], tuple[str, str | None]] = lambda p: (p, None)


@dataclass(frozen=True)
class BackendSpec:
    """One backend: a name, a device class and the answers to everything the tool asks of it.

    ``artifact(manifest, precision)``: the bundle file it runs at ``precision``, or None.
    ``available()``: raises ``MissingDependency`` (the install hint) when it cannot run here (cheap: no model load).
    ``cannot_run(precision)``: why this machine cannot run it at ``precision`` (e.g. no bf16 CPU), else None.
    ``runner(bundle, artifact, precision, options)``: the runner, built, not activated.
    ``triton_via``: the backend whose Triton model serves this one's artifacts (eager's graph is served by ONNX
    Runtime); ``triton``: how this backend serves them itself. ``cpp``: the C++ loader runtime that runs its
    artifacts. ``default``: part of a run that names no backend (GPU backends only where a GPU is usable).
    ``rank``: position in listings.
    """

    name: str
    device: str
    summary: str
    artifact: Callable[[dict, Precision], str | None]
    runner: Callable[[Path, str, Precision, RunnerOptions], object]
    available: Callable[[], None] = lambda: None
    cannot_run: Callable[[Precision], str | None] = lambda precision: None
    triton_via: str | None = None
    triton: TritonServing | None = None
    cpp: str | None = None
    default: bool = True
    rank: int = 100

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"backend {self.name!r}: device must be one of {DEVICES}, not {self.device!r}")

    def is_available(self) -> bool:
        try:
            self.available()
        except MissingDependency:
            return False
        return True

    def unavailable_reason(self) -> str | None:
        """The install hint when it cannot run here, else None."""
        try:
            self.available()
        except MissingDependency as e:
            return str(e)
        return None

    @property
    def served_by(self) -> str | None:
        """The backend whose Triton model serves this backend's artifacts (itself when it has one)."""
        return self.name if self.triton is not None else self.triton_via


_table: dict[str, BackendSpec] = {}
_loaded = False


def register(spec: BackendSpec) -> BackendSpec:
    """Add ``spec`` to the table (a name already there is replaced, with a log line)."""
    if spec.name in _table and _table[spec.name] is not spec:
        log.info("backend %s replaced by %s", spec.name, spec)
    _table[spec.name] = spec
    return spec


def _register_module(module) -> None:
    for spec in getattr(module, "BACKENDS", ()):
        register(spec)


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in ("base", "table"):
            _register_module(importlib.import_module(f"{__package__}.{info.name}"))
    for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            raise UserError(f"{PLUGINS_ENV} names backend module {name!r}, which cannot be imported: {e}") from None
        _register_module(module)
    from importlib import metadata

    for ep in metadata.entry_points(group=ENTRY_POINTS):
        _register_module(ep.load())


def all_backends() -> list[BackendSpec]:
    """Every backend in the table, in listing order."""
    _load()
    return sorted(_table.values(), key=lambda s: (s.rank, s.name))


def names() -> list[str]:
    return [s.name for s in all_backends()]


def get(name: "str | BackendSpec", what: str = "backend") -> BackendSpec:
    """The spec of backend ``name``; an unknown name is one line listing the choices."""
    if isinstance(name, BackendSpec):
        return name
    _load()
    key = str(name).strip().lower()
    if key not in _table:
        raise unknown(what, name, names())
    return _table[key]


def parse_list(text: "str | Sequence[str]", what: str = "backend") -> list[str]:
    """Backend names from ``a,b`` (or a sequence), checked, in order, without duplicates."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    out = [get(p.strip() if isinstance(p, str) else p, what).name for p in parts if str(p).strip()]
    out = list(dict.fromkeys(out))
    if not out:
        raise UserError(f"empty {what} list: choose from {', '.join(names())}")
    return out


def on_device(device: str) -> list[BackendSpec]:
    """The backends that compete for ``recommended[device]``."""
    return [s for s in all_backends() if s.device == device]


def triton_backends() -> list[BackendSpec]:
    """Backends with a Triton model of their own (``triton --backend`` choices)."""
    return [s for s in all_backends() if s.triton is not None]


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (torch imported here only)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def runnable_by_default() -> list[BackendSpec]:
    """The backends a run that names none uses: every default backend available here; GPU ones only with a GPU
    that torch sees (onnxruntime-gpu lists CUDA even without one)."""
    specs = [s for s in all_backends() if s.default and s.is_available()]
    if any(s.device == "gpu" for s in specs) and not cuda_available():
        specs = [s for s in specs if s.device != "gpu"]
    return specs


def first_artifact(manifest: dict, kind, precision, targets: Sequence = (None,)) -> str | None:
    """The first bundle file of ``kind`` at ``precision`` for the first of ``targets`` that has one."""
    from ..bundle import find_artifacts

    for target in targets:
        found = find_artifacts(manifest, kind=kind, precision=precision, target=target)
        if found:
            return found[0]
    return None
