"""ONNX Runtime on the GPU: the CUDA execution provider, and the TensorRT execution provider with its caches.

Both are ``OnnxRuntimeRunner`` with a provider list; the session's real providers are checked after it is
created, because onnxruntime-gpu silently falls back to CPU when CUDA or TensorRT cannot load (REFERENCE.md).
Provider option names checked against the ONNX Runtime TensorRT / CUDA execution-provider docs. Not run on a
GPU here (see docs/tensorrt.md).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MissingDependency, UserError
from .onnxruntime import OnnxRuntimeRunner, import_onnxruntime

CUDA_EP = "CUDAExecutionProvider"
TRT_EP = "TensorrtExecutionProvider"


def cuda_providers(device_id: int = 0) -> list:
    return [(CUDA_EP, {"device_id": int(device_id)}), "CPUExecutionProvider"]


def tensorrt_providers(cache_dir: "str | Path", input_name: str | None = None, shapes: dict | None = None,
                       workspace_mib: int | None = None, device_id: int = 0) -> list:
    """TensorRT EP first (engine + timing caches in ``cache_dir``, one profile from ``shapes``), then CUDA."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    opts = {"device_id": int(device_id), "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache_dir)}
    if workspace_mib:
        opts["trt_max_workspace_size"] = int(workspace_mib) << 20
    if input_name and shapes:  # one profile for the whole batch range, not one engine per batch size
        for key in ("min", "opt", "max"):
            opts[f"trt_profile_{key}_shapes"] = f"{input_name}:" + "x".join(str(d) for d in shapes[key])
    return [(TRT_EP, opts), (CUDA_EP, {"device_id": int(device_id)}), "CPUExecutionProvider"]


def batch_profile(model_path, max_batch: int) -> tuple[str | None, dict | None]:
    """The TensorRT EP's one profile for batches 1..``max_batch`` of the model's input (min 1, opt = max =
    ``max_batch``; C, H, W from the graph): ``(input name, {"min", "opt", "max": shape})``. ``(None, None)`` for
    a graph whose batch dimension is fixed: there is nothing to choose. Without a profile ONNX Runtime builds an
    engine for the first batch size and rebuilds it as larger ones arrive, so a benchmark would time each batch size
    on a different engine."""
    from ..trt.profile import BatchProfile, onnx_input

    name, shape, _ = onnx_input(model_path)
    if shape and shape[0] > 0:
        return None, None
    return name, BatchProfile(1, int(max_batch), int(max_batch)).shapes(shape)


class OnnxRuntimeGpuRunner(OnnxRuntimeRunner):
    """``OnnxRuntimeRunner`` that refuses to start unless its GPU providers really run the session."""

    def __init__(self, model_path, providers: list, name: str, **kwargs):
        super().__init__(model_path, providers=providers, require_providers=True, **kwargs)
        self.name = name

    def _activate(self) -> None:
        ort = import_onnxruntime()
        wanted = [p if isinstance(p, str) else p[0] for p in self.providers if p != "CPUExecutionProvider"]
        available = ort.get_available_providers()
        missing = [p for p in wanted if p not in available]
        if missing:
            raise MissingDependency("onnxruntime-gpu", what=f"{', '.join(missing)} (this onnxruntime offers "
                                                             f"{', '.join(available)})")
        try:
            super()._activate()
        except UserError as e:
            raise UserError(f"{e}; on a GPU machine: pip install 'resnet-deploy[gpu]'") from None
        got = self.session.get_providers()
        if wanted[0] not in got:  # belt and braces: the first-choice provider must be in the session
            raise UserError(f"ONNX Runtime fell back to {', '.join(got)} instead of {wanted[0]}")


def cuda_runner(model_path, device_id: int = 0, **kwargs) -> OnnxRuntimeGpuRunner:
    """ONNX Runtime with the CUDA execution provider."""
    return OnnxRuntimeGpuRunner(model_path, cuda_providers(device_id), "onnxruntime-cuda", **kwargs)


def tensorrt_ep_runner(model_path, cache_dir, input_name: str | None = None, shapes: dict | None = None,
                       workspace_mib: int | None = None, device_id: int = 0, max_batch: int | None = None,
                       **kwargs) -> OnnxRuntimeGpuRunner:
    """ONNX Runtime with the TensorRT execution provider (engine and timing caches in ``cache_dir``). Its profile:
    ``input_name`` and ``shapes`` when given, else derived from the model's input for batches 1..``max_batch``
    (``batch_profile``)."""
    if shapes is None and max_batch:
        input_name, shapes = batch_profile(model_path, max_batch)
    providers = tensorrt_providers(cache_dir, input_name, shapes, workspace_mib, device_id)
    return OnnxRuntimeGpuRunner(model_path, providers, "onnxruntime-tensorrt", **kwargs)


# ----------------------------------------------------------------------------------------------- backend table
def _provider_available(name: str, provider: str):
    def check() -> None:
        ort = import_onnxruntime()
        if provider not in ort.get_available_providers():
            raise MissingDependency("onnxruntime-gpu", what=f"--backend {name} ({provider})")

    return check


def _cuda_runner(bundle, artifact: str, precision, options) -> OnnxRuntimeGpuRunner:
    from .onnxruntime import request_options

    return cuda_runner(Path(bundle) / artifact, **request_options(options))


def _tensorrt_ep_runner(bundle, artifact: str, precision, options) -> OnnxRuntimeGpuRunner:
    import tempfile

    from .onnxruntime import request_options

    cache = Path(options.work_dir or tempfile.mkdtemp(prefix="resnet-deploy-ort-trt-")) / "ort-trt-cache"
    # one profile for every batch it will see (ONNX Runtime would rebuild the engine as the batch grows)
    return tensorrt_ep_runner(Path(bundle) / artifact, cache, max_batch=max(options.batches, default=None),
                              **request_options(options))


def _backends():
    from .onnxruntime import onnx_artifact
    from .table import BackendSpec

    return (BackendSpec("onnxruntime-cuda", "gpu", "ONNX Runtime, CUDA execution provider",
                        artifact=onnx_artifact("portable", "onnxruntime"), runner=_cuda_runner,
                        available=_provider_available("onnxruntime-cuda", CUDA_EP), triton_via="onnxruntime",
                        rank=30),
            BackendSpec("onnxruntime-tensorrt", "gpu", "ONNX Runtime, TensorRT execution provider",
                        artifact=onnx_artifact("tensorrt", "portable"), runner=_tensorrt_ep_runner,
                        available=_provider_available("onnxruntime-tensorrt", TRT_EP), triton_via="onnxruntime",
                        rank=31))


BACKENDS = _backends()
