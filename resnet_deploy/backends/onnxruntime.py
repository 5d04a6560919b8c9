"""ONNX Runtime backend (CPU here; CUDA and TensorRT execution providers where onnxruntime-gpu is installed)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import MissingDependency, UserError, unknown
from .base import Runner

log = logging.getLogger(__name__)


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependency("onnxruntime", extra="cpu", what="ONNX Runtime inference") from None
    return onnxruntime


def session_options(graph_level: str = "all", threads: int | None = None, spinning: bool = False,
                    optimized_model_path: str | None = None, mem_pattern: bool = True, arena: bool = True):
    """SessionOptions with spinning off by default: on 2 cores, spinning threads distort other runtimes.
    ``mem_pattern=False`` turns off ONNX Runtime's memory pattern (one planned block for all intermediates);
    ``arena=False`` its CPU memory arena, which keeps the largest set of tensors a run ever held (memory, not
    numbers: the outputs are the same)."""
    ort = import_onnxruntime()
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if graph_level not in levels:
        raise unknown("graph optimization level", graph_level, levels)
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[graph_level]
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
    if optimized_model_path:
        so.optimized_model_filepath = optimized_model_path
    if not mem_pattern:
        so.enable_mem_pattern = False
    if not arena:
        so.enable_cpu_mem_arena = False
    return so


class OnnxRuntimeRunner(Runner):
    """One ``InferenceSession`` over an ONNX file (or a serialized model in memory); the input is fed by name,
    the first output returned (``run_all``: every output, or the ones named).

    ``single_use``: the serialized model is let go once its session exists, so that a large in-memory graph is not
    held twice while it runs; such a runner cannot be activated again."""

    def __init__(self, model_path: "str | Path | bytes", providers: list | None = None, graph_level: str = "all",
                 threads: int | None = None, spinning: bool = False, require_providers: bool = True,
                 concurrency: int = 1, mem_pattern: bool = True, single_use: bool = False, arena: bool = True):
        super().__init__()
        self.model_path = model_path if isinstance(model_path, bytes) else str(model_path)
        self.in_memory = isinstance(model_path, bytes)
        self.providers = providers or ["CPUExecutionProvider"]
        self.graph_level, self.threads, self.spinning = graph_level, threads, spinning
        self.mem_pattern, self.single_use, self.arena = mem_pattern, single_use, arena
        self.concurrency = max(1, int(concurrency))  # concurrent Run calls in infer_many (throughput mode)
        self.require_providers = require_providers
        self.name = "onnxruntime"
        self.session = self._pool = None

    def _activate(self) -> None:
        ort = import_onnxruntime()
        if self.model_path is None:
            raise RuntimeError(f"{self.name}: a single-use runner cannot be activated again")
        so = session_options(self.graph_level, self.threads, self.spinning, mem_pattern=self.mem_pattern,
                             arena=self.arena)
        self.session = ort.InferenceSession(self.model_path, sess_options=so, providers=self.providers)
        if self.single_use:
            self.model_path = None
        wanted = [p if isinstance(p, str) else p[0] for p in self.providers]
        got = self.session.get_providers()
        # onnxruntime-gpu silently falls back to CPU when CUDA/TensorRT cannot load: never trust the request.
        missing = [p for p in wanted if p not in got]
        if missing and self.require_providers:
            raise UserError(
                f"ONNX Runtime could not use {', '.join(missing)} (session runs on {', '.join(got)}): "
                "check the GPU, CUDA libraries and that onnxruntime-gpu (not onnxruntime) is installed"
            )
        self._input = self.session.get_inputs()[0]
        self._output = self.session.get_outputs()[0].name
        self._fp16_input = self._input.type == "tensor(float16)"

    def _deactivate(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
        # the input's NodeArg holds the session (and its copy of the weights) alive: let both go
        self.session = self._pool = self._input = None

    def _feed(self, batch: np.ndarray) -> dict:
        return {self._input.name: np.ascontiguousarray(batch, dtype=np.float16 if self._fp16_input else np.float32)}

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        (y,) = self.session.run([self._output], self._feed(batch))
        return y.astype(np.float32, copy=False)

    @property
    def in_flight(self) -> int:
        return self.concurrency

    def infer_many(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """Concurrent ``Run`` calls on the one session (thread-safe; ONNX Runtime releases the GIL), at most
        ``concurrency`` at a time: ONNX Runtime's way to keep several requests in flight."""
        if self.concurrency == 1:
            return super().infer_many(batches)
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="ort-request")
        return list(self._pool.map(self.infer, batches))

    def run_all(self, batch: np.ndarray, names: "list[str] | None" = None) -> list[np.ndarray]:
        """The outputs named in ``names`` (default: every output, in ``get_outputs`` order), as the runtime returns
        them."""
        if not self.is_active:
            raise RuntimeError(f"{self.name}: run_all() called before activate()")
        return self.session.run(names, self._feed(batch))

    def describe(self) -> dict:
        ort = import_onnxruntime()
        model = "(in memory)" if self.in_memory else Path(self.model_path).name
        return {"name": self.name, "model": model, "onnxruntime": ort.__version__,
                "providers": self.session.get_providers() if self.session else self.providers,
                "graph_optimization_level": self.graph_level, "threads": self.threads, "spinning": self.spinning,
                "concurrent_requests": self.concurrency}


# ----------------------------------------------------------------------------------------------- in-memory graphs
GRAPH_BATCH = 16  # inputs per run when an in-memory graph is checked in ONNX Runtime


def run_graph(model, data: np.ndarray, batch: int = GRAPH_BATCH, graph_level: str = "all") -> np.ndarray:
    """Logits (the first output) of an in-memory ONNX model over ``data`` in ONNX Runtime (CPU), ``batch`` at a
    time, at graph optimization level ``graph_level``. A check, not a benchmark: the session keeps no memory
    between runs (no arena, no memory pattern), since several such checks of a large model run one after another."""
    with OnnxRuntimeRunner(model.SerializeToString(), graph_level=graph_level, single_use=True, arena=False,
                           mem_pattern=False) as runner:
        return np.concatenate([runner.infer(data[i:i + batch]) for i in range(0, len(data), batch)])


def graph_outputs(model, data: np.ndarray, batch: int, graph_level: str = "basic"):
    """Yield ``{output name: array}`` per ``batch`` inputs of ``data``: every output of an in-memory ONNX model
    (one with intermediate tensors exposed, ``onnx_graph.expose_outputs``) in ONNX Runtime (CPU)."""
    names = [o.name for o in model.graph.output]
    # every intermediate is an output here: an arena would keep all of them after each run
    with OnnxRuntimeRunner(model.SerializeToString(), graph_level=graph_level, single_use=True, arena=False,
                           mem_pattern=False) as runner:
        for i in range(0, len(data), batch):
            yield dict(zip(names, runner.run_all(data[i:i + batch])))


# ----------------------------------------------------------------------------------------------- backend table
def request_options(options) -> dict:
    """Runner keywords for a mode: latency runs one request on every intra-op thread; throughput keeps one
    request per core in flight on the one session (one intra-op thread each unless ``threads`` says otherwise)."""
    import os

    if options.mode != "throughput":
        return {"threads": options.threads, "spinning": options.spinning}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = options.threads or 1
    return {"threads": threads, "spinning": options.spinning, "concurrency": max(1, cores // threads)}


def onnx_artifact(*targets: str):
    """An ``artifact`` lookup: the bundle's ONNX graph at the precision, for the first target that has one."""
    def find(manifest: dict, precision) -> str | None:
        from ..layout import Kind
        from .table import first_artifact

        return first_artifact(manifest, Kind.ONNX, precision, targets)

    return find


TRITON_GRAPHS = ("portable", "onnxruntime", "tensorrt")  # portable graphs run on Triton's CPU and GPU EPs


def _triton_graphs(manifest: dict, precision) -> list[str]:
    from ..bundle import find_artifacts
    from ..layout import Kind

    return [n for t in TRITON_GRAPHS for n in find_artifacts(manifest, Kind.ONNX, str(precision), t)]


def _triton_stage(bundle, manifest: dict, precision, concurrent: bool):
    from .. import layout
    from .table import TritonFiles

    graphs = _triton_graphs(manifest, precision)
    if not graphs:
        from ..bundle import find_artifacts

        have = ", ".join(find_artifacts(manifest, "onnx")) or "none"
        raise UserError(f"bundle {str(bundle)!r} has no {precision} ONNX model (it has: {have}): "
                        f"run the stage that writes it first")
    copies = {graphs[0]: layout.TRITON_ONNX}
    data = layout.external_data(graphs[0])
    if data in manifest["files"]:
        copies[data] = data  # the graph names its weights file: keep the name
    return TritonFiles(copies, list(copies))


def _available() -> None:
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        raise MissingDependency("onnxruntime", extra="cpu", what="--backend onnxruntime")


def _cpu_runner(bundle, artifact: str, precision, options) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(Path(bundle) / artifact, **request_options(options))


def _backends():
    from .table import BackendSpec, TritonServing

    return (BackendSpec("onnxruntime", "cpu", "ONNX Runtime, CPU execution provider",
                        artifact=onnx_artifact("onnxruntime", "portable"), runner=_cpu_runner,
                        available=_available,
                        triton=TritonServing("onnxruntime_onnx", "onnx", label="ONNX Runtime",
                                             artifacts=_triton_graphs, stage=_triton_stage,
                                             default_on=("cpu", "gpu")),
                        cpp="onnxruntime", rank=20),)


BACKENDS = _backends()
