"""GPU-path corrections checked on CPU with stand-ins for TensorRT and torch.cuda (neither runs here).

The stand-ins reproduce only what the documented API promises at the point under test (a None execution context, a
False from ``set_timing_cache``, a compute capability, the stream calls); they say nothing about TensorRT itself. What
TensorRT really does on a GPU is for tests/test_tensorrt_gpu.py, which has not run.
"""

from __future__ import annotations

import contextlib
import json
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from .conftest import DATA
from resnet_deploy import bundle as bundle_mod
from resnet_deploy.backends import tensorrt as trt_backend
from resnet_deploy.backends.onnxruntime import OnnxRuntimeRunner
from resnet_deploy.errors import UserError
from resnet_deploy.precision import reduced_convert as reduced
from resnet_deploy.engines import stage
from resnet_deploy.engines.reference_graph import FP32_TWIN, fp32_twin
from resnet_deploy.engines.stage import BuildOptions, build_onnx_file, detect_precision
from resnet_deploy.pipeline.update import build_bundle

LAYERS_JSON = (DATA / "tensorrt" / "layers_trt11_handwritten.json").read_text()


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- a lone bf16 graph (item 1)

def _classifier(seed: int = 0):
    """x (N, 3, 8, 8) -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> logits (N, 10), random weights."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w", (8, 3, 3, 3)), ("fc", (10, 8)), ("b", (10,)))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "b"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


@pytest.fixture
def bf16_graph(tmp_path):
    """The project's own bf16 conversion of the classifier (opset 22, fp32 I/O through Casts)."""
    path = tmp_path / "lone.onnx"
    onnx.save(reduced.convert(_classifier(), reduced.BF16).model, str(path))
    assert str(detect_precision(path)) == "bf16"
    return path


def test_onnxruntime_cpu_cannot_run_a_bf16_graph_but_runs_its_fp32_twin(bf16_graph):
    """Why the lone-file check may not use the graph itself; and that the twin is the bf16 graph's meaning in fp32."""
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8), dtype=np.float32)
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
        with OnnxRuntimeRunner(bf16_graph) as r:
            r.infer(x)
    twin = onnx.load_from_string(fp32_twin(bf16_graph))
    onnx.checker.check_model(twin, full_check=True)
    assert not [t for t in twin.graph.initializer if t.data_type == TensorProto.BFLOAT16]
    with OnnxRuntimeRunner(twin.SerializeToString()) as r:
        y = r.infer(x)
    rounded = _classifier()  # fp32 arithmetic on the bf16-rounded weights: what the twin must compute
    for t in rounded.graph.initializer:
        t.CopyFrom(numpy_helper.from_array(reduced.BF16.round(numpy_helper.to_array(t)), t.name))
    with OnnxRuntimeRunner(rounded.SerializeToString()) as r:
        np.testing.assert_allclose(y, r.infer(x), rtol=1e-5, atol=1e-5)


class _FakeRequire:
    """Stands in for TensorRT + a GPU: ``require`` passes and ``build_plan`` records that it ran."""

    def __init__(self, monkeypatch, bf16: bool, capability=(9, 0)):
        self.built = []
        monkeypatch.setattr(trt_backend, "require", lambda: None)
        monkeypatch.setattr(trt_backend, "supports_bf16", lambda device=0: bf16)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=0: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=0: "Stand-in GPU")
        monkeypatch.setattr(trt_backend, "build_plan", self.build_plan)

    def build_plan(self, onnx_path, input_name, shapes, options, timing_cache=None):
        self.built.append((onnx_path.name, input_name, shapes))
        env = {"tensorrt": "10.16.1", "cuda": "12.8", "driver": "570.86.15", "gpu": "Stand-in GPU",
               "compute_capability": "9.0", "tf32": False, "strongly_typed": True}
        return trt_backend.BuiltPlan(b"stand-in plan", LAYERS_JSON, 4, 0.1, None, env)


def test_lone_bf16_graph_plan_is_checked_against_its_fp32_twin(tmp_path, bf16_graph, monkeypatch):
    """The plan (here: the bf16 emulation in ONNX Runtime, which rounds every bf16 tensor as a bf16 engine does) is
    compared with the fp32 twin under the bf16 bar; before, the check ran the bf16 graph in ONNX Runtime's CPU and
    died with NOT_IMPLEMENTED after the plan was built."""
    fake = _FakeRequire(monkeypatch, bf16=True)
    emulation = reduced.convert(_classifier(), reduced.BF16, emulate=True).model.SerializeToString()

    class PlanStandIn(OnnxRuntimeRunner):
        def __init__(self, plan, build_info=None, **kwargs):
            assert plan.name == "lone.bf16.plan" and build_info["precision"] == "bf16"
            super().__init__(emulation, graph_level="basic")

    monkeypatch.setattr(trt_backend, "TensorRTRunner", PlanStandIn)
    result = build_onnx_file(bf16_graph, tmp_path, BuildOptions(batch="1:2:4"))
    assert fake.built == [("lone.onnx", "x", {"min": [1, 3, 8, 8], "opt": [2, 3, 8, 8], "max": [4, 3, 8, 8]})]
    (plan,) = result.plans
    assert plan.precision == "bf16" and plan.accuracy["reference"] == FP32_TWIN
    assert plan.accuracy["passed"] is True and plan.accuracy["batches"] == [1, 2, 4]
    assert plan.accuracy["bar"]["min_top1_agreement"] == 0.97  # the bf16 bar, as for a bundle's bf16 plan
    sidecar = json.loads((tmp_path / "lone.bf16.plan.json").read_text())
    assert sidecar["validation"]["reference"] == FP32_TWIN and (tmp_path / "lone.bf16.plan").is_file()


def test_lone_bf16_graph_on_a_gpu_without_bf16_is_one_line_before_building(tmp_path, bf16_graph, monkeypatch):
    fake = _FakeRequire(monkeypatch, bf16=False, capability=(7, 5))
    with pytest.raises(UserError) as e:
        build_onnx_file(bf16_graph, tmp_path, BuildOptions(batch="1:2:4"))
    msg = _one_line(e)
    assert "lone.onnx is a bf16 graph" in msg and "compute capability >= 8.0" in msg
    assert fake.built == [] and sorted(p.name for p in tmp_path.iterdir()) == ["lone.onnx"]


# ---------------------------------------------------------------- --hardware-compat ampere+ on the build GPU (item 7)

@pytest.mark.parametrize("compat,capability,refused", [
    ("ampere+", (7, 5), True), ("ampere+", (8, 0), False), ("ampere+", (9, 0), False),
    ("none", (7, 5), False), ("same-cc", (7, 5), False)])
def test_ampere_plus_needs_an_ampere_build_gpu(monkeypatch, compat, capability, refused):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=0: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=0: "Tesla T4")
    if not refused:
        trt_backend.check_build_gpu(compat)
        return
    with pytest.raises(UserError) as e:
        trt_backend.check_build_gpu(compat)
    msg = _one_line(e)
    assert msg.startswith("--hardware-compat ampere+ needs an Ampere or newer GPU to build on")
    assert "Tesla T4 is 7.5" in msg and "--hardware-compat none" in msg


def test_ampere_plus_on_an_older_gpu_builds_nothing_from_a_lone_graph(tmp_path, monkeypatch):
    fake = _FakeRequire(monkeypatch, bf16=False, capability=(7, 5))
    graph = tmp_path / "m.onnx"
    onnx.save(_classifier(), graph)
    with pytest.raises(UserError, match="--hardware-compat ampere\\+ needs an Ampere"):
        build_onnx_file(graph, tmp_path, BuildOptions(batch="1:2:4", hardware_compat="ampere+"))
    assert fake.built == [] and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_ampere_plus_on_an_older_gpu_leaves_the_bundle_unchanged(r18_bundle_copy, monkeypatch):
    fake = _FakeRequire(monkeypatch, bf16=False, capability=(7, 5))
    manifest = (r18_bundle_copy / "manifest.json").read_text()
    with pytest.raises(UserError, match="--hardware-compat ampere\\+ needs an Ampere"):
        build_bundle(r18_bundle_copy, BuildOptions(batch="1:2:4", hardware_compat="ampere+"))
    assert fake.built == [] and (r18_bundle_copy / "manifest.json").read_text() == manifest
    assert not list(r18_bundle_copy.glob("*.plan"))
    bundle_mod.read_manifest(r18_bundle_copy)


# ---------------------------------------------------------------- the timing-cache message (item 6)

class _Reached(Exception):
    """Raised by the stand-in builder: the build got past the timing cache."""


def _fake_tensorrt(cache_accepted: bool, cache_created: bool = True):
    """A stand-in ``tensorrt`` module with just what ``build_plan`` calls before ``build_serialized_network``."""

    class Config(SimpleNamespace):
        def set_memory_pool_limit(self, pool, size):
            pass

        def add_optimization_profile(self, profile):
            return 0

        def clear_flag(self, flag):
            pass

        def set_flag(self, flag):
            pass

        def create_timing_cache(self, data):
            self.cache_bytes = data
            return object() if cache_created else None

        def set_timing_cache(self, cache, ignore_mismatch):
            return cache_accepted

    class Builder:
        def __init__(self, logger):
            self.config = Config()

        def create_network(self, flags):
            return object()

        def create_optimization_profile(self):
            return SimpleNamespace(set_shape=lambda *a: None)

        def create_builder_config(self):
            return self.config

        def build_serialized_network(self, network, config):
            raise _Reached()

    class ILogger:
        def __init__(self):
            pass

    return SimpleNamespace(
        __version__="10.16.1", ILogger=ILogger, Builder=Builder,
        OnnxParser=lambda network, logger: SimpleNamespace(parse_from_file=lambda path: True),
        NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=0), MemoryPoolType=SimpleNamespace(WORKSPACE=0),
        ProfilingVerbosity=SimpleNamespace(DETAILED="detailed"), BuilderFlag=SimpleNamespace(TF32=1, VERSION_COMPATIBLE=2),
        HardwareCompatibilityLevel=SimpleNamespace(AMPERE_PLUS=1, SAME_COMPUTE_CAPABILITY=2))


def _build_with(monkeypatch, fake, options, cache_bytes):
    monkeypatch.setattr(trt_backend, "require", lambda: fake)
    monkeypatch.setattr(trt_backend, "_LOGGER", None)  # the logger subclasses the stand-in's ILogger
    shapes = {"min": [1, 3, 8, 8], "opt": [2, 3, 8, 8], "max": [4, 3, 8, 8]}
    trt_backend.build_plan("m.onnx", "x", shapes, options, timing_cache=cache_bytes)


def test_timing_cache_message_only_when_a_timing_cache_file_was_given(tmp_path, monkeypatch):
    cache_file = tmp_path / "t.cache"
    with pytest.raises(UserError) as e:  # the user's file, refused: their message
        _build_with(monkeypatch, _fake_tensorrt(cache_accepted=False), BuildOptions(timing_cache=cache_file),
                    b"old cache")
    assert _one_line(e).startswith(f"--timing-cache {str(cache_file)!r} was written by another TensorRT version")
    for options, cache_bytes, created in ((BuildOptions(), None, True), (BuildOptions(), None, False),
                                          (BuildOptions(timing_cache=cache_file), None, True)):  # file not there yet
        with pytest.raises(RuntimeError) as e:
            _build_with(monkeypatch, _fake_tensorrt(cache_accepted=False, cache_created=created), options, cache_bytes)
        assert "--timing-cache" not in str(e.value) and "empty timing cache" in str(e.value)
    with pytest.raises(_Reached):  # an accepted cache: on to the build
        _build_with(monkeypatch, _fake_tensorrt(cache_accepted=True), BuildOptions(timing_cache=cache_file), b"ok")


# ---------------------------------------------------------------- a None execution context (item 3)

class _Engine:
    """Stands in for an ICudaEngine whose ``create_execution_context`` returns None (TensorRT's failure signal)."""

    def __init__(self, context=None):
        self.context = context

    def create_execution_context(self):
        return self.context


def test_none_execution_context_is_one_line():
    ctx = object()
    assert trt_backend.create_context(_Engine(ctx), "m.plan") is ctx
    with pytest.raises(UserError) as e:
        trt_backend.create_context(_Engine(None), "model.fp16.plan")
    assert _one_line(e).startswith("model.fp16.plan: TensorRT could not create an execution context")


def test_runner_activation_stops_at_a_none_context(tmp_path, monkeypatch):
    plan = tmp_path / "model.fp32.plan"
    plan.write_bytes(b"stand-in plan")
    monkeypatch.setattr(trt_backend, "require", lambda: SimpleNamespace())
    monkeypatch.setattr(trt_backend, "_deserialize", lambda trt, data, host_code, what: (object(), _Engine(None)))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    runner = trt_backend.TensorRTRunner(plan, build_info={}, check_compat=False)
    with pytest.raises(UserError, match="could not create an execution context"):
        runner.activate()
    assert not runner.is_active


# ---------------------------------------------------------------- streams (item 4)

class _Stream:
    """Stands in for a torch.cuda.Stream: records wait_stream / synchronize into a shared log."""

    def __init__(self, name: str, log: list):
        self.name, self.log, self.cuda_stream = name, log, id(self)

    def wait_stream(self, other):
        self.log.append(f"{self.name}.wait_stream({other.name})")

    def synchronize(self):
        self.log.append(f"{self.name}.synchronize")


class _Tensor:
    def __init__(self, name: str, log: list, shape=(2, 3, 8, 8)):
        self.name, self.log, self.shape, self.device = name, log, shape, "cuda:0"

    def record_stream(self, stream):
        self.log.append(f"{self.name}.record_stream({stream.name})")

    def copy_(self, src, non_blocking=False):
        self.log.append(f"{self.name}.copy_({src.name})")

    def data_ptr(self):
        return 0x7F0000000000


class _Context:
    def __init__(self, log):
        self.log = log

    def set_input_shape(self, name, shape):
        return True

    def set_tensor_address(self, name, address):
        return True

    def execute_async_v3(self, stream_handle):
        self.log.append("execute_async_v3")
        return True


def _runner_with_streams(monkeypatch, tmp_path, caller: str = "caller"):
    from resnet_deploy.trt.profile import BatchProfile

    log: list = []
    r = trt_backend.TensorRTRunner(tmp_path / "m.plan")
    r.stream = _Stream("runner", log)
    r.profile, r._profile_shapes, r._in, r._out = BatchProfile(1, 2, 4), None, "x", "y"
    r._buffers = {2: (_Tensor("xb", log), _Tensor("yb", log), _Context(log), None)}
    current = r.stream if caller == "runner" else _Stream(caller, log)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current)

    @contextlib.contextmanager
    def on_stream(stream):
        log.append(f"enter {stream.name}")
        yield

    monkeypatch.setattr(torch.cuda, "stream", on_stream)
    return r, log


def test_infer_device_waits_for_the_callers_stream_before_copying(tmp_path, monkeypatch):
    r, log = _runner_with_streams(monkeypatch, tmp_path)
    assert r.infer_device(_Tensor("x", log)).name == "yb"
    assert log == ["runner.wait_stream(caller)", "x.record_stream(runner)", "enter runner", "xb.copy_(x)",
                   "execute_async_v3"]


def test_infer_device_on_its_own_stream_does_not_wait_on_itself(tmp_path, monkeypatch):
    r, log = _runner_with_streams(monkeypatch, tmp_path, caller="runner")  # as from _infer
    r.infer_device(_Tensor("x", log))
    assert log == ["enter runner", "xb.copy_(x)", "execute_async_v3"]


def test_deactivate_synchronizes_every_stream_before_releasing_buffers(tmp_path):
    log: list = []
    r = trt_backend.TensorRTRunner(tmp_path / "m.plan", streams=2)
    r.stream = _Stream("runner", log)
    r._slots = [(object(), _Stream("slot0", log), {}), (object(), _Stream("slot1", log), {})]
    r._buffers = {2: "buffers"}
    r.engine = r.context = r._runtime = object()
    r.is_active = True

    def sync_then_check():  # the buffers must still be held when the runner's stream is waited for
        log.append(f"runner.synchronize with buffers {sorted(r._buffers)}")

    r.stream.synchronize = sync_then_check
    r.deactivate()
    assert log == ["runner.synchronize with buffers [2]", "slot0.synchronize", "slot1.synchronize"]
    assert r._buffers == {} and r._slots == [] and r.stream is None and r.engine is None and not r.is_active
