"""TensorRT on a real GPU: plans in fp32 / fp16 / int8, accuracy vs eager at min/opt/max batch, timing-cache reuse,
the runner, the compatibility guard on a real plan, and the ONNX Runtime GPU backends.

Marked ``gpu``; skipped unless TensorRT imports and torch sees a CUDA GPU. NOT run when this was written (no GPU).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from .conftest import SMALL, run_cli
from resnet_deploy import bundle as bundle_mod
from resnet_deploy.engines.stage import BuildOptions, engines_unavailable
from resnet_deploy.pipeline.update import build_bundle
from resnet_deploy.errors import UserError


def _has_tensorrt_gpu() -> bool:
    return engines_unavailable() is None  # the library's own check: TensorRT importable and a CUDA GPU


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _has_tensorrt_gpu(), reason="needs TensorRT and a CUDA GPU")]

BATCH = "1:4:8"


def _toposort(graph) -> None:
    """convert_float_to_float16 can leave nodes out of topological order (REFERENCE.md): sort them in place."""
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in known for i in n.input)]
        assert ready, "graph has a cycle or a dangling input"
        for n in ready:
            ordered.append(n)
            known.update(n.output)
            pending.remove(n)
    del graph.node[:]
    graph.node.extend(ordered)


def add_fp16_graph(bundle_dir) -> None:
    """An fp16 graph (fp32 I/O, Casts at the edges) registered as the bundle's fp16 portable graph."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(bundle_dir / "model.onnx")), keep_io_types=True)
    _toposort(model.graph)
    onnx.checker.check_model(model)
    with bundle_mod.BundleUpdate(bundle_dir) as b:
        onnx.save(model, str(b.path / "model.fp16.onnx"))
        b.add_file("model.fp16.onnx", kind="onnx", precision="fp16", target="portable")


@pytest.fixture
def gpu_bundle(r18_bundle_copy):
    add_fp16_graph(r18_bundle_copy)
    return r18_bundle_copy


def test_build_fp32_fp16_plans_with_manifest_and_accuracy(gpu_bundle, tmp_path):
    res = build_bundle(gpu_bundle, BuildOptions(batch=BATCH, timing_cache=tmp_path / "timing.cache"))
    assert [p.precision for p in res.plans] == ["fp32", "fp16"]
    m = bundle_mod.read_manifest(gpu_bundle)
    for prec in ("fp32", "fp16"):
        name = f"model.{prec}.plan"
        assert (gpu_bundle / name).is_file() and (gpu_bundle / f"model.{prec}.layers.json").is_file()
        info = m["engines"]["plans"][name]
        for key in ("tensorrt", "cuda", "driver", "gpu", "compute_capability", "build_seconds", "layer_count"):
            assert info[key] not in (None, ""), key
        assert m["files"][name]["compute_capability"] == info["compute_capability"]  # what triton reads
        assert info["profile"]["min"][0] == 1 and info["profile"]["opt"][0] == 4 and info["profile"]["max"][0] == 8
        acc = m["validation"][name]
        assert acc["batches"] == [1, 4, 8] and acc["passed"], acc
    assert (tmp_path / "timing.cache").stat().st_size > 0
    assert run_cli("info", gpu_bundle).returncode == 0  # checksums of the new files


def test_int8_resnet50_plan_fuses_conv_add_relu(tmp_path, images_dir):
    """The int8 (tensorrt-target Q/DQ) resnet50 plan holds far fewer layers than the graph has nodes."""
    from resnet_deploy import export_arch

    # The INT8 graph comes from the precision stage (another issue, branch `precision`); its API as seen there:
    stage = pytest.importorskip("resnet_deploy.precision.stage", reason="the precision stage is not in this tree")
    opts = stage.PrecisionOptions(int8=True, calib=images_dir, calib_size=5, targets=("tensorrt",))
    out = tmp_path / "r50"
    export_arch("resnet50", out, weights="random", input_size=SMALL, num_classes=10, engine="never", precision=opts)
    m = bundle_mod.read_manifest(out)
    assert bundle_mod.find_artifacts(m, kind="onnx", precision="int8", target="tensorrt")
    res = build_bundle(out, BuildOptions(batch=BATCH, precisions="int8"))
    info = res.plans[0].info
    assert info["layer_count"] < info["onnx_nodes"] / 3, info  # Q/DQ + Conv + Add + Relu fold into few kernels
    summary = info["layer_summary"]
    assert summary["fused_layers"] > 10 and summary["precisions"].get("int8", 0) > summary["layers"] / 2, summary


def test_runner_batches_profile_guard_cuda_graph_and_events(gpu_bundle):
    from resnet_deploy.backends.tensorrt import TensorRTRunner
    from resnet_deploy.backends.torch_eager import TorchRunner

    build_bundle(gpu_bundle, BuildOptions(batch=BATCH, precisions="fp32"))
    data = np.random.default_rng(0).standard_normal((8, 3, SMALL, SMALL), dtype=np.float32)
    plan = gpu_bundle / "model.fp32.plan"
    with TorchRunner(bundle_mod.load_eager(gpu_bundle)) as eager, TensorRTRunner(plan) as trt, \
            TensorRTRunner(plan, cuda_graph=True) as graphed:
        for n in (1, 3, 8):
            ref, y = eager.infer(data[:n]), trt.infer(data[:n])
            assert y.shape == ref.shape and np.abs(y - ref).max() <= 1e-3 * np.abs(ref).max()
            np.testing.assert_allclose(graphed.infer(data[:n]), y, rtol=1e-5, atol=1e-5)
        with pytest.raises(UserError, match="outside the profile"):
            trt.infer(np.zeros((9, 3, SMALL, SMALL), np.float32))
        e0 = trt.event()
        trt.infer(data[:4])
        e1 = trt.event()
        e1.synchronize()
        assert e0.elapsed_time(e1) > 0
        assert trt.describe()["gpu"]


def test_guard_refuses_foreign_plan_before_deserializing(gpu_bundle):
    from resnet_deploy.backends.tensorrt import TensorRTRunner

    build_bundle(gpu_bundle, BuildOptions(batch=BATCH, precisions="fp32"))
    m = json.loads((gpu_bundle / "manifest.json").read_text())
    m["engines"]["plans"]["model.fp32.plan"]["gpu"] = "Some Other GPU"
    (gpu_bundle / "manifest.json").write_text(json.dumps(m))
    (gpu_bundle / "model.fp32.plan").write_bytes(b"garbage: must never reach deserialize_cuda_engine")
    with pytest.raises(UserError, match="does not fit this machine.*rebuild with resnet-deploy build"):
        TensorRTRunner(gpu_bundle / "model.fp32.plan").activate()


def test_version_compatible_plan_loads_with_host_code_allowed(gpu_bundle):
    """A --version-compat plan embeds the lean runtime: it loads only because the runner allows host code, which it
    does because the build record says version_compat."""
    from resnet_deploy.backends.tensorrt import TensorRTRunner

    build_bundle(gpu_bundle, BuildOptions(batch=BATCH, precisions="fp32", version_compat=True))
    info = bundle_mod.read_manifest(gpu_bundle)["engines"]["plans"]["model.fp32.plan"]
    assert info["version_compat"] is True
    data = np.random.default_rng(0).standard_normal((2, 3, SMALL, SMALL), dtype=np.float32)
    with TensorRTRunner(gpu_bundle / "model.fp32.plan") as r:
        assert r.infer(data).shape[0] == 2
    # The same plan without its record's version_compat: the runtime refuses the embedded host code.
    with pytest.raises(UserError, match="could not deserialize"):
        TensorRTRunner(gpu_bundle / "model.fp32.plan", build_info={**info, "version_compat": False}).activate()


def test_hardware_compat_same_cc_builds_on_this_tensorrt(gpu_bundle):
    import tensorrt

    from resnet_deploy.backends.tensorrt import hardware_level_name

    try:
        hardware_level_name("same-cc", tensorrt.__version__)
    except UserError as e:
        assert "needs TensorRT >= 10.9" in str(e)
        pytest.skip(str(e))
    res = build_bundle(gpu_bundle, BuildOptions(batch=BATCH, precisions="fp32", hardware_compat="same-cc"))
    assert res.plans[0].info["hardware_compat"] == "same-cc" and res.plans[0].accuracy["passed"]


def test_timing_cache_reuse_makes_the_second_build_faster(r18_bundle_copy, tmp_path):
    cache = tmp_path / "timing.cache"
    first = build_bundle(r18_bundle_copy, BuildOptions(batch=BATCH, timing_cache=cache)).plans[0].info
    size = cache.stat().st_size
    second = build_bundle(r18_bundle_copy, BuildOptions(batch=BATCH, timing_cache=cache), force=True).plans[0].info
    assert not first["timing_cache"]["reused"] and second["timing_cache"]["reused"]
    assert second["build_seconds"] < first["build_seconds"], (first["build_seconds"], second["build_seconds"])
    assert cache.stat().st_size >= size


def test_inspect_real_plan(gpu_bundle):
    build_bundle(gpu_bundle, BuildOptions(batch=BATCH, precisions="fp32"))
    layers = bundle_mod.read_manifest(gpu_bundle)["engines"]["plans"]["model.fp32.plan"]["layer_count"]
    r = run_cli("inspect", gpu_bundle / "model.fp32.plan", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["summary"]["layers"] == layers
    (gpu_bundle / "model.fp32.layers.json").unlink()  # falls back to the engine inspector through TensorRT
    r = run_cli("inspect", gpu_bundle / "model.fp32.plan")
    assert r.returncode == 0 and f"{layers} layers" in r.stdout


def test_export_engine_auto_builds_plans(tmp_path):
    from resnet_deploy import export_arch

    res = export_arch("resnet18", tmp_path / "b", weights="random", input_size=SMALL, num_classes=10,
                      engine="auto", engine_options=BuildOptions(batch="1:2:4"))
    eng = res.manifest["engines"]
    assert eng["status"] == "built" and "model.fp32.plan" in eng["plans"]
    assert res.manifest["validation"]["model.fp32.plan"]["passed"]


def test_build_lone_onnx_file(r18_bundle, tmp_path):
    from resnet_deploy.engines.stage import build_onnx_file

    onnx_path = tmp_path / "model.onnx"
    shutil.copy(r18_bundle / "model.onnx", onnx_path)
    res = build_onnx_file(onnx_path, None, BuildOptions(batch=BATCH))
    assert (tmp_path / "model.fp32.plan").is_file() and (tmp_path / "model.fp32.plan.json").is_file()
    assert res.plans[0].accuracy["passed"]


def test_onnxruntime_cuda_and_tensorrt_ep(r18_bundle, tmp_path):
    import onnxruntime as ort

    from resnet_deploy.backends.onnxruntime_gpu import cuda_runner, tensorrt_ep_runner
    from resnet_deploy.backends.torch_eager import TorchRunner
    from resnet_deploy.trt.profile import BatchProfile
    from resnet_deploy.validate import compare

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    data = np.random.default_rng(0).standard_normal((4, 3, SMALL, SMALL), dtype=np.float32)
    shapes = BatchProfile.parse(BATCH).shapes([-1, 3, SMALL, SMALL])
    with TorchRunner(bundle_mod.load_eager(r18_bundle)) as eager:
        ref = eager.infer(data)
    with cuda_runner(r18_bundle / "model.onnx") as r:
        assert r.session.get_providers()[0] == "CUDAExecutionProvider"
        assert compare(ref, r.infer(data)).cosine > 0.99999
    with tensorrt_ep_runner(r18_bundle / "model.onnx", tmp_path / "cache", "input", shapes) as r:
        assert r.session.get_providers()[0] == "TensorrtExecutionProvider"
        assert compare(ref, r.infer(data)).cosine > 0.9999
    assert any((tmp_path / "cache").iterdir())  # engine / timing caches written
