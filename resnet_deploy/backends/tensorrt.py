"""TensorRT backend: build a plan from ONNX, and run a plan behind the shared ``Runner`` interface.

Thin on purpose: every TensorRT call is here, written against the documented Python API of TensorRT 10.x and
11.x and NOT run on these machines (no GPU, TensorRT not installable): see docs/tensorrt.md. Checked against:
- Python API docs (Builder, BuilderConfig, OnnxParser, Runtime, ICudaEngine, IExecutionContext, EngineInspector)
  and NVIDIA's samples (samples/python/strongly_type_autocast, pytorch_tensorrt_compatibility);
- "Migrating from TensorRT 10.x to 11.x" (weak typing removed: no BuilderFlag.FP16/INT8, strongly typed always).
Device memory and streams come from torch (no pycuda). ``tensorrt`` and ``torch.cuda`` are imported lazily.
"""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MissingDependency, UserError
from .base import Runner

log = logging.getLogger(__name__)

NO_GPU = ("no CUDA GPU is visible to torch (torch.cuda.is_available() is False): TensorRT needs an NVIDIA GPU "
          "and driver; on a GPU machine install pip install 'resnet-deploy[gpu]'")


def import_tensorrt():
    try:
        import tensorrt
    except ImportError:
        raise MissingDependency("tensorrt", what="TensorRT plans") from None
    return tensorrt


def require():
    """TensorRT and a CUDA GPU, or one line (exit 2) naming what is missing."""
    trt = import_tensorrt()
    try:
        import torch
    except ImportError:
        raise MissingDependency("torch (with CUDA)", what="TensorRT device memory") from None
    if not torch.cuda.is_available():
        raise UserError(NO_GPU)
    return trt


AMPERE = (8, 0)  # compute capability of the first Ampere GPUs
BF16_MIN_COMPUTE_CAPABILITY = AMPERE  # TensorRT's bf16 kernels: Ampere and newer


def supports_bf16(device: int = 0) -> bool:
    """Whether the GPU can run a bf16 plan (compute capability >= 8.0, per TensorRT's support matrix); written
    against the documentation, not verified on a GPU here."""
    import torch

    return torch.cuda.get_device_capability(device) >= BF16_MIN_COMPUTE_CAPABILITY


def check_build_gpu(compat, device: int = 0) -> None:
    """``--hardware-compat ampere+`` builds only on an Ampere or newer GPU (TensorRT's hardware compatibility is for
    Ampere and later architectures): one line before building on an older one."""
    from ..types import HardwareCompat

    if HardwareCompat.parse(compat, "--hardware-compat") is not HardwareCompat.AMPERE_PLUS:
        return
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < AMPERE:
        raise UserError(f"--hardware-compat ampere+ needs an Ampere or newer GPU to build on (compute capability "
                        f">= 8.0); {torch.cuda.get_device_name(device)} is {major}.{minor}: build on such a GPU, or "
                        "use --hardware-compat none")


def trt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def _driver_version() -> str | None:
    """The NVIDIA driver version (e.g. '570.86.15') from NVML, None when NVML is not there."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
        if nvml.nvmlInit_v2() != 0:
            return None
        buf = ctypes.create_string_buffer(96)
        ok = nvml.nvmlSystemGetDriverVersion(buf, ctypes.c_uint(96)) == 0
        nvml.nvmlShutdown()
        return buf.value.decode() if ok else None
    except (OSError, AttributeError):
        return None


def _driver_cuda() -> str | None:
    """The newest CUDA version the driver supports (cuDriverGetVersion), e.g. '12.8'."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_int()
        if cuda.cuDriverGetVersion(ctypes.byref(v)) != 0:
            return None
        return f"{v.value // 1000}.{(v.value % 1000) // 10}"
    except (OSError, AttributeError):
        return None


def _tensorrt_cuda() -> str | None:
    """The CUDA major version TensorRT's wheel was built for (tensorrt-cu12 / -cu13 ...), None if not a wheel."""
    from importlib import metadata

    for major in ("13", "12", "11"):
        for dist in (f"tensorrt-cu{major}", f"tensorrt-cu{major}-libs"):
            try:
                metadata.version(dist)
                return major
            except metadata.PackageNotFoundError:
                continue
    return None


def environment(device: int = 0) -> dict:
    """What a plan is tied to on this machine: TensorRT, CUDA, driver, GPU model and compute capability."""
    trt = require()
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return {"tensorrt": str(trt.__version__), "cuda": torch.version.cuda, "tensorrt_cuda": _tensorrt_cuda(),
            "driver": _driver_version(),
            "driver_cuda": _driver_cuda(), "gpu": torch.cuda.get_device_name(device),
            "compute_capability": f"{major}.{minor}"}


_LOGGER = None


def _logger(trt):
    """One ILogger for the process that forwards TensorRT's messages to ``logging`` (stdout stays clean).

    Subclassing ``trt.ILogger`` and calling its ``__init__`` is the documented way to supply a logger.
    """
    global _LOGGER
    if _LOGGER is None:
        levels = {"INTERNAL_ERROR": logging.ERROR, "ERROR": logging.ERROR, "WARNING": logging.WARNING,
                  "INFO": logging.DEBUG, "VERBOSE": 5}
        trt_log = logging.getLogger("resnet_deploy.tensorrt")

        class _Forward(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)

            def log(self, severity, msg):
                name = getattr(severity, "name", str(severity)).split(".")[-1]
                trt_log.log(levels.get(name, logging.WARNING), "TensorRT: %s", msg)

        _LOGGER = _Forward()
    return _LOGGER


def _network_flags(trt) -> int:
    # 10.x: strong typing is opt-in via STRONGLY_TYPED. 11.x: always strongly typed, the flag is deprecated and
    # ignored ("Migrating from TensorRT 10.x to 11.x"; 11.0 Builder docs), so pass nothing there.
    if trt_major(trt) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


# HardwareCompatibilityLevel members and the first TensorRT that has them (NvInfer.h of the release branches:
# kAMPERE_PLUS appears in 8.6, kSAME_COMPUTE_CAPABILITY in 10.9).
HARDWARE_LEVELS = {"ampere+": ("AMPERE_PLUS", (8, 6)), "same-cc": ("SAME_COMPUTE_CAPABILITY", (10, 9))}


def hardware_level_name(compat, trt_version: str) -> str | None:
    """The ``HardwareCompatibilityLevel`` member for ``--hardware-compat`` (None for none); one line when this
    TensorRT is too old to have it."""
    from ..types import HardwareCompat

    compat = HardwareCompat.parse(compat, "--hardware-compat")
    if compat is HardwareCompat.NONE:
        return None
    name, since = HARDWARE_LEVELS[str(compat)]
    have = tuple(int(p) if p.isdigit() else 0 for p in str(trt_version).split(".")[:2])
    if have < since:
        raise UserError(f"--hardware-compat {compat} needs TensorRT >= {since[0]}.{since[1]} "
                        f"(HardwareCompatibilityLevel.{name}); this is TensorRT {trt_version}: upgrade it, or use "
                        "--hardware-compat none")
    return name


def _hardware_level(trt, compat) -> object | None:
    name = hardware_level_name(compat, str(trt.__version__))
    if name is None:
        return None
    level = getattr(trt.HardwareCompatibilityLevel, name, None)
    if level is None:
        raise UserError(f"--hardware-compat {compat}: TensorRT {trt.__version__} has no "
                        f"HardwareCompatibilityLevel.{name}")
    return level


def add_profile(config, profile, input_name: str, shapes: dict) -> int:
    """``config.add_optimization_profile``, which returns the profile's index or -1 when TensorRT finds it invalid."""
    index = config.add_optimization_profile(profile)
    if index is None or int(index) < 0:
        raise UserError(f"TensorRT refused the optimization profile of input {input_name!r} (min {shapes['min']}, "
                        f"opt {shapes['opt']}, max {shapes['max']}): the graph's input must take these shapes; "
                        "check --batch against the ONNX input shape")
    return int(index)


def set_input_shape(ctx, name: str, shape, plan: str, profile_shapes=None) -> None:
    """``ctx.set_input_shape``, which returns False (no exception) when TensorRT refuses the shape."""
    shape = [int(d) for d in shape]
    if not ctx.set_input_shape(name, tuple(shape)):
        allowed = ""
        if profile_shapes is not None:
            lo, _opt, hi = profile_shapes
            allowed = f"; its profile allows {[int(d) for d in lo]} to {[int(d) for d in hi]}"
        raise UserError(f"{plan}: TensorRT refused input shape {shape} for tensor {name!r}{allowed}: "
                        "rebuild with resnet-deploy build")


def set_tensor_address(ctx, name: str, address: int, plan: str) -> None:
    """``ctx.set_tensor_address``, which returns False when the name is no I/O tensor or the address is unusable
    (TensorRT wants 256-byte alignment): a bug here, not bad input."""
    if not ctx.set_tensor_address(name, int(address)):
        raise RuntimeError(f"{plan}: TensorRT refused device address {int(address):#x} for tensor {name!r} "
                           "(unknown tensor name or address not 256-byte aligned)")


def _set_timing_cache(config, cache_bytes: bytes | None, cache_file) -> None:
    """A timing cache for the build: the ``--timing-cache`` file's bytes, else an empty one. ``create_timing_cache``
    returns None and ``set_timing_cache`` False when TensorRT refuses; only a cache read from a file can be the
    user's to fix."""
    cache = config.create_timing_cache(cache_bytes or b"")
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return
    if cache_bytes and cache_file is not None:
        raise UserError(f"--timing-cache {str(cache_file)!r} was written by another TensorRT version or GPU: delete "
                        "it or give a new file")
    raise RuntimeError("TensorRT refused an empty timing cache (see the TensorRT log)")


def create_context(engine, plan: str):
    """``engine.create_execution_context()``, which returns None (no exception) when TensorRT cannot make one, as
    NVIDIA's samples check: one line here rather than a crash at the first call on None."""
    ctx = engine.create_execution_context()
    if ctx is None:
        raise UserError(f"{plan}: TensorRT could not create an execution context (see the TensorRT log; e.g. too "
                        "little free GPU memory)")
    return ctx


@dataclass
class BuiltPlan:
    plan: bytes
    layers_json: str
    num_layers: int
    seconds: float
    timing_cache: bytes | None
    env: dict


def build_plan(onnx_path: "str | Path", input_name: str, shapes: dict, options,
               timing_cache: bytes | None = None) -> BuiltPlan:
    """Parse the ONNX graph into a strongly typed network and build a serialized plan plus its layer JSON."""
    from ..errors import CheckFailed

    trt = require()
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    # parse_from_file resolves external weights (model.onnx.data) relative to the file.
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CheckFailed(f"TensorRT could not parse {Path(onnx_path).name}: {errors}")
    config = builder.create_builder_config()
    if options.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_mib) << 20)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, shapes["min"], shapes["opt"], shapes["max"])
    add_profile(config, profile, input_name, shapes)
    config.builder_optimization_level = int(options.opt_level)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    tf32 = True  # TensorRT's default for FP32 layers
    if not options.tf32:  # fp32 means fp32: TF32 costs ~1e-3 relative accuracy in convolutions
        try:
            config.clear_flag(trt.BuilderFlag.TF32)
            tf32 = False
        except AttributeError:  # not documented as removed in 11.x; recorded rather than assumed
            log.warning("this TensorRT has no BuilderFlag.TF32: fp32 layers may use TF32")
            tf32 = None
    level = _hardware_level(trt, options.hardware_compat)
    if level is not None:
        config.hardware_compatibility_level = level
    if options.version_compat:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    _set_timing_cache(config, timing_cache, options.timing_cache)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise CheckFailed(f"TensorRT failed to build a plan from {Path(onnx_path).name} (see the log above)")
    plan = bytes(memoryview(serialized))
    cache_out = bytes(memoryview(config.get_timing_cache().serialize()))
    _runtime, engine = _deserialize(trt, plan, host_code=bool(options.version_compat), what=Path(onnx_path).name)
    inspector = engine.create_engine_inspector()
    layers_json = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    env = environment() | {"tf32": tf32, "strongly_typed": True,
                           "network_flags": "none (always strongly typed)" if trt_major(trt) >= 11 else "STRONGLY_TYPED"}
    return BuiltPlan(plan, layers_json, int(engine.num_layers), seconds, cache_out, env)


def _deserialize(trt, plan: bytes, host_code: bool, what: str):
    runtime = trt.Runtime(_logger(trt))
    if host_code:
        # A version-compatible plan embeds the lean runtime (host code): the runtime must be told to trust it.
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise UserError(f"TensorRT could not deserialize {what}: rebuild with resnet-deploy build")
    return runtime, engine  # the caller keeps the runtime alive as long as the engine


def plan_layer_json(plan: "str | Path") -> str:
    """Engine-inspector JSON of an existing plan (checked against this machine before deserializing)."""
    from ..trt.compat import check_plan_compat
    from ..trt.plan import plan_info

    info = plan_info(plan)
    trt = require()
    check_plan_compat(info, environment(), Path(plan).name)
    _runtime, engine = _deserialize(trt, Path(plan).read_bytes(), bool(info and info.get("version_compat")),
                                    Path(plan).name)
    return engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)


def _torch_dtype(trt, dtype):
    import torch

    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.INT8: torch.int8, trt.DataType.INT32: torch.int32}
    if hasattr(trt.DataType, "BF16"):  # a bf16 plan's I/O stays fp32 (Casts in the graph), but a user's may not
        table[trt.DataType.BF16] = torch.bfloat16
    if dtype not in table:
        raise UserError(f"plan I/O data type {dtype} is not supported by this runner")
    return table[dtype]


class TensorRTRunner(Runner):
    """Runs a plan: tensors bound by name, input shape set per batch, ``execute_async_v3`` on its own stream.

    The plan's build record (bundle manifest or ``.plan.json``) is checked against this machine before the plan
    is deserialized; a batch outside the optimization profile is refused. ``cuda_graph=True`` captures one CUDA
    graph per batch size and replays it. The runner never times itself: ``event()`` records a CUDA event on its
    stream for the benchmark harness, ``synchronize()`` waits for the stream.
    """

    def __init__(self, plan: "str | Path", device: int = 0, cuda_graph: bool = False, build_info: dict | None = None,
                 check_compat: bool = True, streams: int = 1):
        super().__init__()
        self.plan = Path(plan)
        self.streams = max(1, int(streams))  # execution contexts / CUDA streams that infer_many keeps busy
        self._slots: list = []
        self.device, self.cuda_graph, self.check_compat = int(device), bool(cuda_graph), check_compat
        self.build_info = build_info
        self.name = "tensorrt" + ("-cudagraph" if cuda_graph else "")
        self.profile = None
        self._profile_shapes = None
        self._buffers: dict[int, tuple] = {}

    def _activate(self) -> None:
        from ..trt.compat import check_plan_compat
        from ..trt.plan import plan_info
        from ..trt.profile import BatchProfile

        if not self.plan.is_file():
            raise UserError(f"plan {str(self.plan)!r} does not exist")
        info = self.build_info if self.build_info is not None else plan_info(self.plan)
        trt = require()
        import torch

        if self.check_compat:  # from the manifest, BEFORE deserializing
            check_plan_compat(info, environment(self.device), self.plan.name)
        torch.cuda.set_device(self.device)
        self._trt = trt
        host_code = bool(info and info.get("version_compat"))
        self._runtime, self.engine = _deserialize(trt, self.plan.read_bytes(), host_code, self.plan.name)
        self.context = create_context(self.engine, self.plan.name)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise UserError(f"{self.plan.name} has inputs {inputs} and outputs {outputs}: expected one of each")
        self._in, self._out = inputs[0], outputs[0]
        self._in_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self._in))
        self._out_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self._out))
        self._profile_shapes = self.engine.get_tensor_profile_shape(self._in, 0)  # (min, opt, max)
        if info and info.get("profile"):
            self.profile = BatchProfile.parse(info["profile"]["batch"])
        else:
            lo, opt, hi = self._profile_shapes
            self.profile = BatchProfile(int(lo[0]), int(opt[0]), int(hi[0]))
        self.stream = torch.cuda.Stream(device=self.device)
        self._buffers = {}

    def _deactivate(self) -> None:
        # Work still queued on the runner's streams reads and writes these buffers: wait for it before freeing them.
        try:
            for stream in [self.stream, *(slot[1] for slot in self._slots)]:
                if stream is not None:
                    stream.synchronize()
        finally:
            self._buffers, self._slots = {}, []
            self.context = self.engine = self._runtime = self.stream = None

    def _prepare(self, n: int) -> tuple:
        """Device buffers for batch ``n`` (and, with CUDA graphs, a context and graph of its own)."""
        import torch

        if n in self._buffers:
            return self._buffers[n]
        x = torch.empty((n, *self.build_shape()[1:]), dtype=self._in_dtype, device=f"cuda:{self.device}")
        ctx = self.context
        graph = None
        if self.cuda_graph:
            # A captured graph fixes shapes, addresses and the context's scratch memory, so each batch size gets
            # its own context; enqueue once with these shapes before capturing (TensorRT's CUDA-graph guidance).
            ctx = create_context(self.engine, self.plan.name)
        set_input_shape(ctx, self._in, x.shape, self.plan.name, self._profile_shapes)
        y = torch.empty(tuple(ctx.get_tensor_shape(self._out)), dtype=self._out_dtype, device=x.device)
        if self.cuda_graph:
            self._bind(ctx, x, y)
            self._enqueue(ctx)
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                self._enqueue(ctx)
        self._buffers[n] = (x, y, ctx, graph)
        return self._buffers[n]

    def build_shape(self) -> tuple:
        return tuple(self._profile_shapes[2])

    def _bind(self, ctx, x, y) -> None:
        set_input_shape(ctx, self._in, x.shape, self.plan.name, self._profile_shapes)
        set_tensor_address(ctx, self._in, x.data_ptr(), self.plan.name)
        set_tensor_address(ctx, self._out, y.data_ptr(), self.plan.name)

    def _enqueue(self, ctx) -> None:
        if not ctx.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"{self.plan.name}: execute_async_v3 failed (see the TensorRT log)")

    def infer_device(self, x):
        """Run a device tensor (N, C, H, W) already on the GPU; returns the device output (no synchronisation).

        ``x`` may still be being written on the caller's current stream: the runner's stream waits for that work
        before copying it. The output is ready on the runner's stream (``synchronize()``, or make the consuming
        stream ``wait_stream(runner.stream)``) and is reused by the next call of the same batch size."""
        import torch

        n = int(x.shape[0])
        self.profile.check(n, self.plan.name)
        producer = torch.cuda.current_stream(x.device)
        if producer != self.stream:
            self.stream.wait_stream(producer)
            x.record_stream(self.stream)  # the caching allocator must not reuse x's memory before the copy ran
        with torch.cuda.stream(self.stream):
            xb, yb, ctx, graph = self._prepare(n)
            xb.copy_(x, non_blocking=True)
            if graph is not None:
                graph.replay()
            else:
                self._bind(ctx, xb, yb)
                self._enqueue(ctx)
        return yb

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        self.profile.check(len(batch), self.plan.name)
        host = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.cuda.stream(self.stream):
            x = host.to(f"cuda:{self.device}", dtype=self._in_dtype)
            y = self.infer_device(x)
            out = y.float().cpu()  # a blocking copy on this stream: waits for the plan
        return out.numpy()

    @property
    def in_flight(self) -> int:
        return self.streams

    def infer_many(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """Requests spread round-robin over ``streams`` execution contexts, each on its own CUDA stream with its own
        device buffers, so they overlap on the GPU; the host waits once, at the end. (Written against TensorRT's
        documented multi-context pattern; not run here.)"""
        if self.streams == 1:
            return super().infer_many(batches)
        import torch

        while len(self._slots) < self.streams:  # (context, stream, {batch: (input, output)})
            self._slots.append((create_context(self.engine, self.plan.name), torch.cuda.Stream(device=self.device),
                                {}))
        pending = []
        for i, batch in enumerate(batches):
            ctx, stream, buffers = self._slots[i % self.streams]
            n = len(batch)
            self.profile.check(n, self.plan.name)
            with torch.cuda.stream(stream):
                if n not in buffers:
                    x = torch.empty((n, *self.build_shape()[1:]), dtype=self._in_dtype, device=f"cuda:{self.device}")
                    set_input_shape(ctx, self._in, x.shape, self.plan.name, self._profile_shapes)
                    y = torch.empty(tuple(ctx.get_tensor_shape(self._out)), dtype=self._out_dtype, device=x.device)
                    buffers[n] = (x, y)
                x, y = buffers[n]
                x.copy_(torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self._in_dtype))
                self._bind(ctx, x, y)
                if not ctx.execute_async_v3(stream.cuda_stream):
                    raise RuntimeError(f"{self.plan.name}: execute_async_v3 failed (see the TensorRT log)")
                host = torch.empty(tuple(y.shape), dtype=y.dtype, pin_memory=True)
                host.copy_(y, non_blocking=True)  # stream order: before this slot's next input copy
                pending.append(host)
        for _, stream, _ in self._slots:
            stream.synchronize()
        return [h.float().numpy() for h in pending]

    def event(self):
        """A CUDA event recorded on the runner's stream now (for timing by the harness)."""
        import torch

        ev = torch.cuda.Event(enable_timing=True)
        ev.record(self.stream)
        return ev

    def synchronize(self) -> None:
        if self.is_active and self.stream is not None:
            self.stream.synchronize()

    def describe(self) -> dict:
        d = {"name": self.name, "plan": self.plan.name, "cuda_graph": self.cuda_graph,
             "profile": str(self.profile) if self.profile else None}
        if self.is_active:
            d.update(environment(self.device))
        return d


# ----------------------------------------------------------------------------------------------- backend table
THROUGHPUT_STREAMS = 2  # execution contexts / CUDA streams in flight in throughput mode


def _available() -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        raise MissingDependency("tensorrt", what="--backend tensorrt")


def _plan_artifact(manifest: dict, precision) -> str | None:
    from ..layout import Kind
    from .table import first_artifact

    return first_artifact(manifest, Kind.PLAN, precision)


def _runner(bundle, artifact: str, precision, options) -> "TensorRTRunner":
    _available()
    return TensorRTRunner(Path(bundle) / artifact, device=0,
                          streams=THROUGHPUT_STREAMS if options.mode == "throughput" else 1)


def _triton_plans(manifest: dict, precision) -> list[str]:
    from ..bundle import find_artifacts
    from ..layout import Kind

    return find_artifacts(manifest, Kind.PLAN, str(precision))


def _triton_stage(bundle, manifest: dict, precision, concurrent: bool):
    """One plan as ``model.plan``, or one per GPU compute capability listed in ``cc_model_filenames`` (``build``
    tags each plan's file entry with its capability), so Triton loads the one that matches its GPU."""
    from .. import layout
    from ..bundle import find_artifacts
    from ..trt.plan import normalize_cc
    from .table import TritonFiles

    plans = _triton_plans(manifest, precision)
    if not plans:
        have = ", ".join(find_artifacts(manifest, "tensorrt-plan")) or "none"
        raise UserError(f"bundle {str(bundle)!r} has no {precision} TensorRT plan (it has: {have}): build one with "
                        "resnet-deploy build on the target GPU")
    by_cc: dict[str | None, str] = {}
    for plan in plans:
        cc = manifest["files"][plan].get("compute_capability")
        by_cc.setdefault(normalize_cc(cc) if cc is not None else None, plan)
    if len(by_cc) == 1:
        plan = next(iter(by_cc.values()))
        return TritonFiles({plan: layout.TRITON_PLAN}, [plan])
    if None in by_cc:
        raise UserError(f"bundle {str(bundle)!r} has several {precision} plans but {by_cc[None]!r} has no "
                        "compute_capability tag: cannot tell them apart")
    names = {cc: layout.triton_cc_plan(cc) for cc in by_cc}
    return TritonFiles({plan: names[cc] for cc, plan in by_cc.items()}, list(by_cc.values()), cc_files=names)


def _backends():
    from .table import BackendSpec, TritonServing

    return (BackendSpec("tensorrt", "gpu", "TensorRT plans", artifact=_plan_artifact, runner=_runner,
                        available=_available, cpp="tensorrt", rank=40,
                        triton=TritonServing("tensorrt_plan", "trt", label="TensorRT", artifacts=_triton_plans,
                                             stage=_triton_stage, kind="KIND_GPU", devices=("gpu",),
                                             default_on=("gpu",))),)


BACKENDS = _backends()
