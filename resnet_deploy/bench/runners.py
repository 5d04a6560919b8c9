"""Which (backend, precision) cases a bundle offers, and how to build the runner for each.

Artifacts are found by manifest tags (``bundle.find_artifacts``), never by file name. GPU backends are
imported lazily: ``--backend tensorrt`` on a machine without TensorRT is a one-line ``MissingDependency``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ..bundle import find_artifacts
from ..layout import Kind
from ..errors import MissingDependency, UserError
from ..types import Backend, Precision

log = logging.getLogger(__name__)

TORCH_BACKENDS = (Backend.EAGER, Backend.EAGER_CHANNELS_LAST, Backend.TORCH_COMPILE)
# Which ONNX graph each ONNX Runtime backend prefers, per precision: the one shaped for it first.
ORT_TARGET_PREFERENCE = {
    Backend.ONNXRUNTIME: ("onnxruntime", "portable"),
    Backend.ONNXRUNTIME_CUDA: ("portable", "onnxruntime"),
    Backend.ONNXRUNTIME_TENSORRT: ("tensorrt", "portable"),
}
# The execution provider each ONNX Runtime GPU backend needs (its runner and provider options come from
# backends/onnxruntime_gpu.py, the one place that sets them up).
GPU_PROVIDERS = {Backend.ONNXRUNTIME_CUDA: "CUDAExecutionProvider",
                 Backend.ONNXRUNTIME_TENSORRT: "TensorrtExecutionProvider"}
GPU_BACKENDS = (Backend.ONNXRUNTIME_CUDA, Backend.ONNXRUNTIME_TENSORRT, Backend.TENSORRT)
# OpenVINO: its own IR first, else the ONNX graph it converts from; for INT8 the U8S8 graph, which OpenVINO runs
# faster than the TensorRT-shaped one.
# bf16: OpenVINO runs the fp32 IR (or graph) with bf16 inference precision, where the precision stage validated it
# (the file entry lists bf16 in ``inference_precisions``); the bf16 ONNX graph is TensorRT's.
OPENVINO_PREFERENCE = {"fp32": ((Kind.OPENVINO_IR, None), (Kind.ONNX, "portable")),
                       "bf16": ((Kind.OPENVINO_IR, None), (Kind.ONNX, "portable")),
                       "int8": ((Kind.OPENVINO_IR, None), (Kind.ONNX, "onnxruntime"), (Kind.ONNX, "tensorrt"))}
OPENVINO_INFERENCE_PRECISION = {Precision.FP32: "f32", Precision.BF16: "bf16"}  # int8: OpenVINO's default


@dataclass(frozen=True)
class Case:
    """One thing to benchmark: a backend running one artifact of the bundle at one precision."""

    backend: Backend
    precision: Precision
    artifact: str  # file name inside the bundle

    def to_dict(self) -> dict:
        d = asdict(self)
        d["backend"], d["precision"] = str(self.backend), str(self.precision)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Case":
        return cls(Backend.parse(d["backend"]), Precision.parse(d["precision"]), d["artifact"])

    @property
    def label(self) -> str:
        return f"{self.backend} {self.precision}"


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (torch imported here only)."""
    import torch

    return torch.cuda.is_available()


def check_available(backend: Backend) -> None:
    """Raise ``MissingDependency`` when ``backend`` cannot run on this machine (cheap checks, no model load)."""
    if backend == Backend.OPENVINO:
        if importlib.util.find_spec("openvino") is None:
            raise MissingDependency("openvino", extra="openvino", what="--backend openvino")
    elif backend == Backend.TENSORRT:
        if importlib.util.find_spec("tensorrt") is None:
            raise MissingDependency("tensorrt", what="--backend tensorrt")
        if importlib.util.find_spec("resnet_deploy.backends.tensorrt") is None:
            raise MissingDependency("resnet_deploy.backends.tensorrt", what="--backend tensorrt")
    elif backend in (Backend.ONNXRUNTIME_CUDA, Backend.ONNXRUNTIME_TENSORRT):
        from ..backends.onnxruntime import import_onnxruntime

        ort = import_onnxruntime()
        wanted = GPU_PROVIDERS[backend]
        if wanted not in ort.get_available_providers():
            raise MissingDependency("onnxruntime-gpu", what=f"--backend {backend} ({wanted})")


def gpu_backends_available() -> list[Backend]:
    """GPU backends that could run here (used when the user names no backend)."""
    out = []
    for b in GPU_BACKENDS:
        try:
            check_available(b)
        except MissingDependency:
            continue
        out.append(b)
    if out and not cuda_available():
        return []  # onnxruntime-gpu lists CUDA even without a GPU (REFERENCE.md): need a real device
    return out


def _artifact_for(manifest: dict, backend: Backend, precision: Precision) -> str | None:
    if backend in TORCH_BACKENDS:
        if precision != Precision.FP32:
            return None
        names = find_artifacts(manifest, kind="torch-exported-program")
        return names[0] if names else None
    if backend == Backend.TENSORRT:
        names = find_artifacts(manifest, kind=Kind.PLAN, precision=precision)
        return names[0] if names else None
    if backend == Backend.OPENVINO:
        for kind, target in OPENVINO_PREFERENCE.get(str(precision), ()):
            if precision == Precision.BF16:
                names = [n for n in find_artifacts(manifest, kind=kind, precision=Precision.FP32, target=target)
                         if str(precision) in manifest["files"][n].get("inference_precisions", ())]
            else:
                names = find_artifacts(manifest, kind=kind, precision=precision, target=target)
            if names:
                return names[0]
        return None
    for target in ORT_TARGET_PREFERENCE[backend]:
        names = find_artifacts(manifest, kind="onnx", precision=precision, target=target)
        if names:
            return names[0]
    return None


def _cpu_lacks(backend: Backend, precision: Precision) -> str | None:
    """Why this CPU cannot run ``backend`` at ``precision`` (OpenVINO bf16 without AVX-512 BF16 / AMX), else None."""
    if backend == Backend.OPENVINO and precision == Precision.BF16:
        from ..backends import openvino

        if not openvino.bf16_supported():
            return (f"this CPU has no bf16 support (OpenVINO offers {', '.join(openvino.cpu_capabilities())}; bf16 "
                    "needs AVX-512 BF16 or AMX)")
    return None


def select_cases(manifest: dict, backends: list[Backend] | None = None,
                 precisions: list[Precision] | None = None) -> tuple[list[Case], list[str]]:
    """The cases to run and notes on what was asked for but is not in the bundle.

    With no ``backends``: eager plus every backend that has an artifact (GPU ones only where a GPU is usable).
    A backend named explicitly must be runnable here (else ``MissingDependency``).
    """
    explicit = backends is not None
    if backends is None:
        cpu = [Backend.OPENVINO] if importlib.util.find_spec("openvino") is not None else []
        backends = [Backend.EAGER, Backend.ONNXRUNTIME, *cpu, *gpu_backends_available()]
    else:
        for b in backends:
            check_available(b)
    explicit_precisions = precisions is not None
    precisions = precisions or list(Precision)
    cases, notes = [], []
    for b in backends:
        for p in precisions:
            name = _artifact_for(manifest, b, p)
            if name is None:
                if explicit and explicit_precisions:
                    notes.append(f"{b} {p}: the bundle has no artifact for it, skipped")
                continue
            unsupported = _cpu_lacks(b, p)
            if unsupported:
                notes.append(f"{b} {p} ({name}): {unsupported}, skipped")
                continue
            cases.append(Case(b, p, name))
    if not cases:
        have = ", ".join(f"{n} ({e.get('kind')} {e.get('precision') or ''})".strip()
                         for n, e in manifest.get("files", {}).items())
        raise UserError(f"nothing to benchmark: no artifact for backends {', '.join(map(str, backends))} at "
                        f"precisions {', '.join(map(str, precisions))}; the bundle has {have}")
    return cases, notes


MODES = ("latency", "throughput")
TENSORRT_STREAMS = 2  # execution contexts / CUDA streams in flight in throughput mode


def make_runner(case: Case, bundle: Path, threads: int | None, device: str, spinning: bool = True,
                work_dir: Path | None = None, mode: str = "latency", max_batch: int | None = None):
    """Build (not activate) the runner for ``case`` as its users run it in ``mode``. ``device`` applies to the torch
    backends; ``work_dir`` holds the ONNX Runtime TensorRT execution provider's engine and timing caches.

    Throughput mode keeps several requests in flight where the runtime supports it: ONNX Runtime runs concurrent
    requests on one session (one intra-op thread each, one request per core), TensorRT spreads them over
    several execution contexts and streams; torch runs them one after the other with its intra-op threads."""
    from ..bundle import load_eager

    path = Path(bundle) / case.artifact
    if case.backend in TORCH_BACKENDS:
        from ..backends.torch_eager import TorchRunner

        runner = TorchRunner(load_eager(bundle), device=device,
                             channels_last=case.backend == Backend.EAGER_CHANNELS_LAST,
                             compile=case.backend == Backend.TORCH_COMPILE, threads=threads)
        return runner
    if case.backend == Backend.TENSORRT:
        check_available(Backend.TENSORRT)
        from ..backends.tensorrt import TensorRTRunner  # imported only when asked for

        return TensorRTRunner(path, device=0, streams=TENSORRT_STREAMS if mode == "throughput" else 1)
    if case.backend == Backend.OPENVINO:
        from ..backends.openvino import OpenVinoRunner

        # fp32 means fp32 and bf16 bf16 (OpenVINO's own default is bf16 on CPUs that have it); INT8 graphs run as
        # OpenVINO runs them by default
        return OpenVinoRunner(path, hint=mode, precision=OPENVINO_INFERENCE_PRECISION.get(case.precision),
                              threads=threads)
    options = {"threads": threads, "spinning": spinning}
    if mode == "throughput":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        options = {"threads": threads or 1, "spinning": spinning, "concurrency": max(1, cores // (threads or 1))}
    if case.backend == Backend.ONNXRUNTIME_CUDA:
        from ..backends.onnxruntime_gpu import cuda_runner

        return cuda_runner(path, **options)
    if case.backend == Backend.ONNXRUNTIME_TENSORRT:
        from ..backends.onnxruntime_gpu import tensorrt_ep_runner

        cache = Path(work_dir or tempfile.mkdtemp(prefix="resnet-deploy-ort-trt-")) / "ort-trt-cache"
        return tensorrt_ep_runner(path, cache, max_batch=max_batch, **options)  # one profile for every batch
    from ..backends.onnxruntime import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, **options)
