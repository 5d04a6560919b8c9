"""OpenVINO backend (CPU): one compiled model over an ONNX file, an OpenVINO IR (``.xml`` + ``.bin``) or an
``openvino.Model`` already in memory (e.g. one quantized by NNCF).

Two ways to run it, matching OpenVINO's two performance hints:

- ``infer(batch)``: one synchronous request at a time; what the LATENCY hint is tuned for (one stream using
  every core).
- ``infer_many(batches)``: keeps the runtime's optimal number of requests in flight with an
  ``AsyncInferQueue`` and returns the outputs in input order; what the THROUGHPUT hint is tuned for (several
  streams, each request on a share of the cores). The benchmark harness times one ``infer_many`` call over N
  batches: images per second = sum of the batch sizes / the call's wall time.

Batch: by default the batch dimension stays dynamic (as exported), so one compiled model serves every batch
size; ``batch=N`` reshapes the model to a static batch before compiling, which lets the CPU plugin plan its
memory and pick its kernels at compile time, and then refuses any other batch size.

``openvino`` is imported inside functions only: this module imports without it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import MissingDependency, UserError
from ..types import _ChoiceEnum
from .base import Runner

log = logging.getLogger(__name__)

DEVICES = ("CPU",)


class PerformanceHint(_ChoiceEnum):
    """OpenVINO's ``PERFORMANCE_HINT``: how the plugin splits the cores into streams."""

    LATENCY = "latency"  # one stream, every core on one request
    THROUGHPUT = "throughput"  # several streams, several requests in flight (use ``infer_many``)


class InferencePrecision(_ChoiceEnum):
    """OpenVINO's ``INFERENCE_PRECISION_HINT`` for floating-point layers (quantized layers stay int8)."""

    F32 = "f32"
    BF16 = "bf16"


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise MissingDependency("openvino", extra="openvino", what="OpenVINO inference") from None
    return openvino


def core():
    """A fresh ``openvino.Core``."""
    return import_openvino().Core()


def cpu_capabilities(ov_core=None) -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU device, e.g. ``['FP32', 'BF16', 'INT8', ...]``."""
    return [str(c) for c in (ov_core or core()).get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def bf16_supported(ov_core=None) -> bool:
    """Whether OpenVINO can run bf16 on this CPU (it lists BF16 among the device's capabilities: AVX-512 BF16
    or AMX). Where it can, bf16 is OpenVINO's default inference precision for floating-point layers."""
    return "BF16" in cpu_capabilities(ov_core)


def type_name(t) -> str:
    """``f32`` / ``bf16`` / ``f16`` from an ``openvino.Type`` (or whatever a property returns)."""
    return t.get_type_name() if hasattr(t, "get_type_name") else str(t)


def write_ir(onnx_path: "str | Path", xml_path: "str | Path") -> list[Path]:
    """Convert an ONNX file to OpenVINO IR; returns the files written, ``[xml, bin]``.

    Weights keep their precision (``compress_to_fp16=False``): OpenVINO's default would store float weights
    as fp16, which changes the numbers a bundle's parity was checked with. Both files are written next to each
    other under temporary names first and then renamed, so a failed conversion leaves no half-written IR.
    """
    ov = import_openvino()
    onnx_path, xml_path = Path(onnx_path), Path(xml_path)
    if not onnx_path.is_file():
        raise UserError(f"ONNX model {str(onnx_path)!r} does not exist")
    if xml_path.suffix != ".xml":
        raise UserError(f"OpenVINO IR path {str(xml_path)!r} must end in .xml (the weights go to .bin beside it)")
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    model = ov.Core().read_model(str(onnx_path))
    with tempfile.TemporaryDirectory(dir=xml_path.parent, prefix=".ir-") as tmp:
        tmp_xml = Path(tmp) / xml_path.name
        ov.save_model(model, str(tmp_xml), compress_to_fp16=False)
        bin_path = xml_path.with_suffix(".bin")
        os.replace(tmp_xml.with_suffix(".bin"), bin_path)  # weights first: a new .xml never sees an old .bin
        os.replace(tmp_xml, xml_path)
    return [xml_path, bin_path]


class OpenVinoRunner(Runner):
    """One OpenVINO compiled model on the CPU.

    ``model``: an ``.onnx`` file, an ``.xml`` IR (its ``.bin`` beside it) or an ``openvino.Model``.
    ``hint``: ``latency`` (default) or ``throughput``. ``precision``: None keeps OpenVINO's default for this
    CPU (bf16 where the CPU supports it, else f32), or ``f32`` / ``bf16``. ``threads``: total inference threads
    (None: the plugin's choice, every core). ``streams``: override the hint's number of streams (None: the
    hint decides). ``batch``: None keeps the batch dimension dynamic; N compiles for batch N only.
    """

    def __init__(self, model, hint: "str | PerformanceHint" = PerformanceHint.LATENCY,
                 precision: "str | InferencePrecision | None" = None, threads: int | None = None,
                 streams: int | None = None, batch: int | None = None, device: str = "CPU"):
        super().__init__()
        if device not in DEVICES:
            raise UserError(f"OpenVINO device {device!r} is not supported: choose {', '.join(DEVICES)}")
        for what, value in (("threads", threads), ("streams", streams), ("batch", batch)):
            if value is not None and int(value) < 1:
                raise UserError(f"OpenVINO {what} {value} is invalid: it must be >= 1")
        self.model = model if hasattr(model, "get_parameters") else Path(model)
        self.hint = PerformanceHint.parse(hint, "OpenVINO performance hint")
        self.precision = None if precision is None else InferencePrecision.parse(precision, "OpenVINO precision")
        self.threads, self.streams, self.batch, self.device = threads, streams, batch, device
        self.name = "openvino"
        self.compiled = None
        self._request = None
        self._queue = None
        self._calls = 0

    # ------------------------------------------------------------------------------------------- lifecycle
    def config(self) -> dict:
        """The properties passed to ``compile_model``."""
        cfg = {"PERFORMANCE_HINT": self.hint.name}
        if self.precision is not None:
            cfg["INFERENCE_PRECISION_HINT"] = self.precision.value
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.streams:
            cfg["NUM_STREAMS"] = int(self.streams)
        return cfg

    def _activate(self) -> None:
        ov = import_openvino()
        c = ov.Core()
        if self.precision == InferencePrecision.BF16 and not bf16_supported(c):
            raise UserError(f"OpenVINO precision bf16 needs a CPU with bf16 support; this one offers "
                            f"{', '.join(cpu_capabilities(c))}: use f32 or the default")
        if isinstance(self.model, Path):
            if not self.model.is_file():
                raise UserError(f"OpenVINO model {str(self.model)!r} does not exist")
            model = c.read_model(str(self.model))
        else:
            model = self.model.clone()  # reshape below must not change the caller's model
        if len(model.inputs) != 1:
            raise UserError(f"OpenVINO runner expects a model with one input, got {len(model.inputs)}")
        if self.batch is not None:
            shape = model.input(0).get_partial_shape()
            shape[0] = int(self.batch)
            model.reshape({model.input(0): shape})
        self.compiled = c.compile_model(model, self.device, self.config())
        got = type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        if self.precision is not None and got != self.precision.value:  # never trust the request
            raise UserError(f"OpenVINO compiled with inference precision {got}, not the requested "
                            f"{self.precision.value}")
        self._request = self.compiled.create_infer_request()

    def _deactivate(self) -> None:
        self._queue = self._request = self.compiled = None

    # ------------------------------------------------------------------------------------------- inference
    def _check(self, batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        if self.batch is not None and x.shape[0] != self.batch:
            raise UserError(f"this OpenVINO model was compiled for batch {self.batch}, got a batch of {x.shape[0]}")
        return x

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        x = self._check(batch)
        self._request.infer({0: x}, share_inputs=True)
        return self._request.get_output_tensor(0).data.astype(np.float32, copy=True)

    @property
    def in_flight(self) -> int:
        """Requests ``infer_many`` keeps in flight: the runtime's optimal number (1 before activation)."""
        return self.optimal_requests if self.compiled is not None else 1

    @property
    def optimal_requests(self) -> int:
        """How many requests the runtime wants in flight (``OPTIMAL_NUMBER_OF_INFER_REQUESTS``)."""
        if self.compiled is None:
            raise RuntimeError(f"{self.name}: optimal_requests read before activate()")
        return int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    def infer_many(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run every batch with ``optimal_requests`` requests in flight (an ``AsyncInferQueue``); returns one
        float32 output per batch, in input order. Returns when all are done, so one call is one timed unit.

        No Python callback: the queue's own C++ callbacks mark requests idle, and each output is copied out
        of its request when that request is picked for the next batch (or at the end). A Python callback runs
        on OpenVINO's threads under the GIL and can deadlock the queue's destruction (openvino PR #37073).
        """
        if not self.is_active:
            raise RuntimeError(f"{self.name}: infer_many() called before activate()")
        inputs = [self._check(b) for b in batches]  # kept alive until wait_all: requests share their memory
        if self._queue is None:
            self._queue = import_openvino().AsyncInferQueue(self.compiled, self.optimal_requests)
        queue, results = self._queue, [None] * len(inputs)
        self._calls += 1
        call = self._calls  # userdata outlives the call: tag it so a later call never reads a stale index

        def collect(handle: int) -> None:
            tag = queue.userdata[handle]
            if tag is not None and tag[0] == call and results[tag[1]] is None:
                results[tag[1]] = queue[handle].get_output_tensor(0).data.astype(np.float32, copy=True)

        for i, x in enumerate(inputs):
            collect(queue.get_idle_request_id())  # waits for a free request; start_async takes the same one
            queue.start_async({0: x}, (call, i), share_inputs=True)
        queue.wait_all()
        for handle in range(len(queue)):
            collect(handle)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise RuntimeError(f"{self.name}: {len(missing)} of {len(inputs)} async requests returned no output")
        return results

    def describe(self) -> dict:
        ov = import_openvino()
        model = self.model.name if isinstance(self.model, Path) else "(in memory)"
        out = {"name": self.name, "model": model, "openvino": ov.get_version(), "device": self.device,
               "requested": {"hint": str(self.hint), "precision": str(self.precision or "default"),
                             "threads": self.threads, "streams": self.streams},
               "batch": self.batch if self.batch is not None else "dynamic"}
        if self.compiled is not None:
            get = self.compiled.get_property
            out.update({"execution_devices": list(get("EXECUTION_DEVICES")),
                        "inference_precision": type_name(get("INFERENCE_PRECISION_HINT")),
                        "performance_hint": str(get("PERFORMANCE_HINT")).split(".")[-1],
                        "num_streams": int(get("NUM_STREAMS")),
                        "inference_num_threads": int(get("INFERENCE_NUM_THREADS")),
                        "optimal_number_of_infer_requests": int(get("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))})
        return out


# ----------------------------------------------------------------------------------------------- backend table
# Which artifact OpenVINO runs per precision: its own IR first, else the ONNX graph it converts from; for INT8 the
# U8S8 graph, which OpenVINO runs faster than the TensorRT-shaped one. bf16 is the fp32 IR (or graph) run with bf16
# inference precision where the precision stage validated it (its file entry lists bf16 in
# ``inference_precisions``); the bf16 ONNX graph is TensorRT's.
ARTIFACTS = {"fp32": (("openvino-ir", None), ("onnx", "portable")),
             "bf16": (("openvino-ir", None), ("onnx", "portable")),
             "int8": (("openvino-ir", None), ("onnx", "onnxruntime"), ("onnx", "tensorrt"))}
INFERENCE_PRECISION = {"fp32": InferencePrecision.F32, "bf16": InferencePrecision.BF16}  # int8: OpenVINO's default


def _available() -> None:
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        raise MissingDependency("openvino", extra="openvino", what="--backend openvino")


def _artifact(manifest: dict, precision) -> str | None:
    from ..bundle import find_artifacts

    precision = str(precision)
    for kind, target in ARTIFACTS.get(precision, ()):
        if precision == "bf16":
            names = [n for n in find_artifacts(manifest, kind=kind, precision="fp32", target=target)
                     if "bf16" in manifest["files"][n].get("inference_precisions", ())]
        else:
            names = find_artifacts(manifest, kind=kind, precision=precision, target=target)
        if names:
            return names[0]
    return None


def bf16_unsupported() -> str | None:
    """Why OpenVINO cannot run bf16 on this CPU, None when it can."""
    if bf16_supported():
        return None
    return (f"this CPU has no bf16 support (OpenVINO offers {', '.join(cpu_capabilities())}; bf16 needs AVX-512 BF16 "
            "or AMX)")


def _cannot_run(precision) -> str | None:
    return bf16_unsupported() if str(precision) == "bf16" else None


def _runner(bundle, artifact: str, precision, options) -> OpenVinoRunner:
    # fp32 means fp32 and bf16 bf16 (OpenVINO's own default is bf16 on CPUs that have it); INT8 graphs run as
    # OpenVINO runs them by default
    return OpenVinoRunner(Path(bundle) / artifact, hint=options.mode,
                          precision=INFERENCE_PRECISION.get(str(precision)), threads=options.threads)


def _triton_artifacts(manifest: dict, precision) -> list[str]:
    """What Triton's openvino model serves at ``precision``: the file this backend runs (and ``bench`` measures), its
    IR when the bundle has one, else the ONNX graph it converts on load."""
    name = _artifact(manifest, precision)
    return [name] if name else []


def _triton_stage(bundle, manifest: dict, precision, concurrent: bool):
    """Triton's openvino backend reads ``model.xml`` + ``model.bin``, or an ONNX file named by
    ``default_model_filename`` (no IR in the bundle: the graph ``bench`` ran in OpenVINO is served as it is), on CPUs."""
    from .. import layout
    from .table import TritonFiles

    names = _triton_artifacts(manifest, precision)
    if not names:
        from ..bundle import find_artifacts

        have = ", ".join(find_artifacts(manifest, "openvino-ir") + find_artifacts(manifest, "onnx")) or "none"
        raise UserError(f"bundle {str(bundle)!r} has no {precision} OpenVINO IR or graph OpenVINO runs (it runs "
                        f"{', '.join(ARTIFACTS)}; the bundle has: {have})")
    parameters = {"PERFORMANCE_HINT": "THROUGHPUT" if concurrent else "LATENCY"}
    name = names[0]
    if name.endswith(".xml"):
        weights = layout.ir_weights(name)
        return TritonFiles({name: layout.TRITON_IR, weights: layout.TRITON_IR_WEIGHTS}, [name, weights],
                           parameters=parameters)
    copies = {name: layout.TRITON_ONNX}
    data = layout.external_data(name)
    if data in manifest["files"]:
        copies[data] = data  # the graph names its weights file: keep the name
    return TritonFiles(copies, list(copies), parameters=parameters, model_filename=layout.TRITON_ONNX)


def _serve_precision(precision: str) -> tuple[str, str | None]:
    # OpenVINO's bf16 is the fp32 IR at bf16 inference precision, OpenVINO's default on such CPUs (Triton's openvino
    # backend sets no precision)
    if precision == "bf16":
        return "fp32", "served as the fp32 IR (OpenVINO runs it in bf16 there)"
    return precision, None


def _backends():
    from .table import BackendSpec, TritonServing

    return (BackendSpec("openvino", "cpu", "OpenVINO, CPU", artifact=_artifact, runner=_runner, available=_available,
                        cannot_run=_cannot_run, rank=25,
                        triton=TritonServing("openvino", "ov", label="OpenVINO", artifacts=_triton_artifacts,
                                             stage=_triton_stage, kind="KIND_CPU", as_backend=True,
                                             serve_precision=_serve_precision)),)


BACKENDS = _backends()
