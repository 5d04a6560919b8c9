"""TensorRT stage on CPU: options, profile shapes, compatibility guards, layer JSON, error paths without TensorRT.

The TensorRT calls themselves need a GPU: see test_tensorrt_gpu.py (marked ``gpu``, skipped here).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from .conftest import DATA, run_cli
from resnet_deploy import bundle as bundle_mod
from resnet_deploy.trt.compat import check_plan_compat, plan_compat_problems
from resnet_deploy.trt.plan import plan_info
from resnet_deploy.trt.profile import BatchProfile
from resnet_deploy.engines.stage import (BuildOptions, detect_precision, engines_unavailable, graphs_to_build,
                                     plan_accuracy)
from resnet_deploy.trt.layers import dtype_of, load_layer_info, onnx_nodes_of, parse_layer_info
from resnet_deploy.errors import MissingDependency, UserError
from resnet_deploy.types import HardwareCompat, Precision

GOLDEN = DATA / "tensorrt"
GPU_EXTRA = "pip install 'resnet-deploy[gpu]'"


def _has_tensorrt_gpu() -> bool:
    return engines_unavailable() is None  # the library's own check: TensorRT importable and a CUDA GPU


no_trt = pytest.mark.skipif(_has_tensorrt_gpu(), reason="TensorRT and a GPU are present: the no-TensorRT path differs")


# ---------------------------------------------------------------- options and profile shapes

@pytest.mark.parametrize("text,expected", [("1:8:32", (1, 8, 32)), ("4", (4, 4, 4)), (" 2:2:16 ", (2, 2, 16))])
def test_batch_profile_parses(text, expected):
    p = BatchProfile.parse(text)
    assert (p.min, p.opt, p.max) == expected


@pytest.mark.parametrize("text", ["0:8:32", "8:4:32", "1:8", "a:b:c", "1:8:32:64", "", "-1:2:3"])
def test_batch_profile_rejects(text):
    with pytest.raises(UserError, match=r"--batch .* MIN:OPT:MAX"):
        BatchProfile.parse(text)


def test_profile_shapes_from_dynamic_input():
    shapes = BatchProfile.parse("1:8:32").shapes([-1, 3, 64, 48])
    assert shapes == {"min": [1, 3, 64, 48], "opt": [8, 3, 64, 48], "max": [32, 3, 64, 48]}
    with pytest.raises(UserError, match="dynamic dimensions besides the batch"):
        BatchProfile.parse("1:8:32").shapes([-1, 3, -1, -1])


def test_batch_outside_profile_is_one_line():
    p = BatchProfile.parse("2:8:16")
    p.check(2)
    p.check(16)
    for bad in (1, 17, 64):
        with pytest.raises(UserError) as e:
            p.check(bad, "model.fp32.plan")
        msg = str(e.value)
        assert "\n" not in msg and f"batch {bad}" in msg and "2..16" in msg and "rebuild with resnet-deploy build" in msg


def test_build_options_validate(tmp_path):
    o = BuildOptions(batch="1:4:8", workspace_mib=512, opt_level=5, hardware_compat="ampere+",
                     timing_cache=tmp_path / "t.cache", precisions="fp16,int8")
    assert o.hardware_compat is HardwareCompat.AMPERE_PLUS and o.precisions == [Precision.FP16, Precision.INT8]
    assert o.to_dict()["batch"] == "1:4:8" and o.to_dict()["strongly_typed"] is True
    with pytest.raises(UserError, match="--opt-level 6 .* 0..5"):
        BuildOptions(opt_level=6)
    with pytest.raises(UserError, match="--workspace 0"):
        BuildOptions(workspace_mib=0)
    with pytest.raises(UserError, match="none, ampere\\+, same-cc"):
        BuildOptions(hardware_compat="turing")
    with pytest.raises(UserError, match="is a folder"):
        BuildOptions(timing_cache=tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        BuildOptions(timing_cache=tmp_path / "missing" / "t.cache")
    with pytest.raises(UserError, match="unknown precision 'int4'"):
        BuildOptions(precisions="fp32,int4")


@pytest.mark.parametrize("args,needle", [
    (["--batch", "8:4:32"], "--batch"),
    (["--opt-level", "9"], "--opt-level 9"),
    (["--hardware-compat", "turing"], "--hardware-compat"),
    (["--workspace", "-5"], "--workspace"),
    (["--precision", "fp64"], "fp64"),
])
def test_cli_build_bad_options_exit_2(tmp_path, args, needle):
    r = run_cli("build", tmp_path, *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]


def test_cli_build_bad_source(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    r = run_cli("build", tmp_path / "x.txt")
    assert r.returncode == 2 and "neither a bundle folder nor an .onnx file" in r.stderr
    r = run_cli("build", tmp_path)  # a folder without manifest.json
    assert r.returncode == 2 and "not a resnet-deploy bundle" in r.stderr


def test_help_works_without_tensorrt():
    for cmd in (["--help"], ["build", "--help"], ["inspect", "--help"], ["export", "--help"]):
        r = run_cli(*cmd)
        assert r.returncode == 0, r.stderr
    assert "--engine" in run_cli("export", "--help").stdout
    build_help = " ".join(run_cli("build", "--help").stdout.split())
    assert "--hardware-compat" in build_help
    assert "10.x plan on 11.x" in build_help and "same major version" not in build_help


# ---------------------------------------------------------------- which graphs become plans

def _manifest(files: dict) -> dict:
    return {"files": {n: {"size": 1, "sha256": "0", **tags} for n, tags in files.items()}}


def test_graphs_to_build_picks_portable_and_tensorrt_targets():
    m = _manifest({
        "model.onnx": {"kind": "onnx", "precision": "fp32", "target": "portable"},
        "model.onnxruntime.onnx": {"kind": "onnx", "precision": "fp32", "target": "onnxruntime"},
        "model.fp16.onnx": {"kind": "onnx", "precision": "fp16", "target": "portable"},
        "model.int8.onnxruntime.onnx": {"kind": "onnx", "precision": "int8", "target": "onnxruntime"},
        "model.int8.tensorrt.onnx": {"kind": "onnx", "precision": "int8", "target": "tensorrt"},
        "model.pt2": {"kind": "torch-exported-program", "precision": "fp32"},
    })
    assert graphs_to_build(m) == [("fp32", "model.onnx"), ("fp16", "model.fp16.onnx"),
                                  ("int8", "model.int8.tensorrt.onnx")]
    assert graphs_to_build(m, [Precision.INT8]) == [("int8", "model.int8.tensorrt.onnx")]


def test_graphs_to_build_prefers_tensorrt_target_and_names_missing():
    m = _manifest({"model.onnx": {"kind": "onnx", "precision": "fp32", "target": "portable"},
                   "model.fp32.tensorrt.onnx": {"kind": "onnx", "precision": "fp32", "target": "tensorrt"},
                   "model.int8.onnxruntime.onnx": {"kind": "onnx", "precision": "int8", "target": "onnxruntime"}})
    assert graphs_to_build(m) == [("fp32", "model.fp32.tensorrt.onnx")]
    with pytest.raises(UserError, match="no int8 ONNX graph for TensorRT .has: fp32"):
        graphs_to_build(m, [Precision.INT8])
    with pytest.raises(UserError, match="no ONNX graph TensorRT can build"):
        graphs_to_build(_manifest({"model.int8.onnxruntime.onnx": m["files"]["model.int8.onnxruntime.onnx"]}))


def _tiny_graph(path: Path, kind: str) -> Path:
    """A one-Conv ONNX graph in fp32, fp16 (fp16 weights) or int8 (Q/DQ around the Conv)."""
    f16 = kind == "fp16"
    dt = TensorProto.FLOAT16 if f16 else TensorProto.FLOAT
    w = helper.make_tensor("w", dt, [4, 3, 3, 3], np.ones(108, dtype=np.float16 if f16 else np.float32).tolist())
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    inits = [w]
    if kind == "int8":
        inits += [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0])]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
                 helper.make_node("Conv", ["xd", "w"], ["y"], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", dt, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", dt, ["N", 4, 8, 8])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("kind", ["fp32", "fp16", "int8"])
def test_detect_precision_of_lone_graph(tmp_path, kind):
    assert str(detect_precision(_tiny_graph(tmp_path / f"m.{kind}.onnx", kind))) == kind


# ---------------------------------------------------------------- compatibility of a plan with this machine

BUILT = {"tensorrt": "10.9.0.34", "cuda": "12.8", "driver": "570.86.15", "gpu": "NVIDIA H100 80GB HBM3",
         "compute_capability": "9.0", "hardware_compat": "none", "version_compat": False,
         "profile": {"batch": "1:8:32"}}


def _env(**kw):
    return {k: BUILT[k] for k in ("tensorrt", "cuda", "driver", "gpu", "compute_capability")} | kw


@pytest.mark.parametrize("info,env,problem", [
    ({}, {}, None),
    ({}, {"driver": "580.1"}, None),  # a newer driver is fine
    ({}, {"tensorrt": "10.9.0.35"}, "TensorRT 10.9.0.35"),
    ({}, {"tensorrt": "11.4.0"}, "TensorRT 11.4.0"),
    ({"version_compat": True}, {"tensorrt": "10.16.1"}, None),
    ({"version_compat": True}, {"tensorrt": "10.8.0"}, "older than the 10.9.0.34 that built"),
    ({"version_compat": True}, {"tensorrt": "11.0.0"}, None),  # 10.x -> 11.x is documented
    ({"version_compat": True}, {"tensorrt": "11.4.0"}, None),
    ({"version_compat": True}, {"tensorrt": "12.0.0"}, "runs on 10.x >= 10.9.0.34 or 11.x"),
    ({"version_compat": True}, {"tensorrt": "9.3.0"}, "older than"),
    ({}, {"cuda": "12.4"}, None),  # same CUDA major
    ({}, {"cuda": "13.0"}, "CUDA 13.0"),
    ({"tensorrt_cuda": "12"}, {"tensorrt_cuda": "13"}, "CUDA 13 (built with CUDA 12)"),
    ({"tensorrt_cuda": "12"}, {"tensorrt_cuda": "12", "cuda": "13.0"}, None),  # TensorRT's CUDA decides
    ({}, {"gpu": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"}, "built on NVIDIA H100"),
    ({}, {"gpu": "NVIDIA H200"}, "GPU NVIDIA H200"),  # another model, same compute capability
    ({"hardware_compat": "same-cc"}, {"gpu": "NVIDIA H200"}, None),
    ({"hardware_compat": "same-cc"}, {"gpu": "NVIDIA L4", "compute_capability": "8.9"}, "compute capability 8.9"),
    ({"hardware_compat": "ampere+"}, {"gpu": "NVIDIA L4", "compute_capability": "8.9"}, None),
    ({"hardware_compat": "ampere+"}, {"gpu": "Tesla T4", "compute_capability": "7.5"}, "needs >= 8.0"),
])
def test_plan_compat_matrix(info, env, problem):
    problems = plan_compat_problems(BUILT | info, _env(**env))
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0]


@pytest.mark.parametrize("built,here,ok", [
    ("10.9.0.34", "10.9.0.34", True),
    ("10.9.0.34", "10.16.1", True),
    ("10.9.0.34", "10.9.0.33", False),   # older build of the same minor
    ("10.16.1", "10.9.0", False),
    ("10.16.1", "11.0.0", True),         # "engines built with TensorRT 10 work with TensorRT 11" (11.1 docs)
    ("10.0.1", "11.1.0", True),
    ("11.0.0", "11.1.0", True),          # "built with 11.0 ... compatible with 11.1 and later 11.x"
    ("11.1.0", "11.0.0", False),
    ("11.1.0", "10.16.1", False),        # never onto an older major
    ("11.1.0", "12.0.0", False),         # not documented: refused
    ("8.6.1", "9.0.1", True),            # "engines built with TensorRT 8 work with TensorRT 9 and 10" (10.16 docs)
    ("8.6.1", "10.16.1", True),
    ("8.6.1", "11.1.0", False),          # two majors: not documented
    ("9.3.0", "10.0.1", True),
    ("9.3.0", "11.0.0", False),
    ("10.16.1", "12.1.0", False),
    ("8.5.3", "8.6.1", False),           # before 8.6 there is no version compatibility
    ("8.5.3", "8.5.3", True),
    (None, "10.16.1", False),
])
def test_version_compatible_plan_rule(built, here, ok):
    from resnet_deploy.trt.compat import version_compat_problem

    problem = version_compat_problem(built, here)
    assert (problem is None) is ok, problem
    if not ok:
        assert f"TensorRT {here}" in problem and "\n" not in problem


def test_non_version_compatible_plan_needs_the_exact_tensorrt():
    for here in ("10.9.0.35", "10.16.1", "11.0.0"):
        problems = plan_compat_problems(BUILT, _env(tensorrt=here))
        assert problems == [f"TensorRT {here} (built with 10.9.0.34)"]


def test_check_plan_compat_is_one_line_with_rebuild_advice():
    with pytest.raises(UserError) as e:
        check_plan_compat(BUILT, _env(tensorrt="11.4.0", cuda="13.0"), "model.fp16.plan")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("model.fp16.plan does not fit this machine")
    assert "TensorRT 11.4.0" in msg and "CUDA 13.0" in msg and msg.endswith("rebuild with resnet-deploy build")
    check_plan_compat(BUILT, _env(), "model.fp16.plan")  # same machine: no error
    check_plan_compat(None, _env(), "model.fp16.plan")  # no record: warns, cannot refuse


def test_plan_info_from_manifest_then_sidecar(tmp_path):
    plan = tmp_path / "model.fp32.plan"
    plan.write_bytes(b"not a real plan")
    assert plan_info(plan) is None
    (tmp_path / "model.fp32.plan.json").write_text(json.dumps(BUILT))
    assert plan_info(plan)["gpu"] == BUILT["gpu"]
    manifest = {"schema_version": 1, "engines": {"plans": {"model.fp32.plan": BUILT | {"gpu": "from manifest"}}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert plan_info(plan)["gpu"] == "from manifest"


# ---------------------------------------------------------------- TensorRT calls that report failure by return value

class _RefusingContext:
    """Stands in for an IExecutionContext only to check how its False returns are handled (TensorRT cannot be
    imported here). set_input_shape / set_tensor_address return a bool and do not raise."""

    def __init__(self, accept: bool):
        self.accept, self.calls = accept, []

    def set_input_shape(self, name, shape):
        self.calls.append(("shape", name, shape))
        return self.accept

    def set_tensor_address(self, name, address):
        self.calls.append(("address", name, address))
        return self.accept


class _Config:
    """Stands in for an IBuilderConfig: add_optimization_profile returns the profile index, or -1 when invalid."""

    def __init__(self, index: int):
        self.index = index

    def add_optimization_profile(self, profile):
        return self.index


def test_set_input_shape_refusal_names_tensor_shape_and_profile():
    from resnet_deploy.backends.tensorrt import set_input_shape

    ok = _RefusingContext(True)
    set_input_shape(ok, "input", (4, 3, 64, 64), "model.fp32.plan")
    assert ok.calls == [("shape", "input", (4, 3, 64, 64))]
    profile = ([1, 3, 64, 64], [8, 3, 64, 64], [32, 3, 64, 64])
    with pytest.raises(UserError) as e:
        set_input_shape(_RefusingContext(False), "input", (4, 3, 64, 64), "model.fp32.plan", profile)
    msg = str(e.value)
    assert "\n" not in msg and "model.fp32.plan" in msg and "refused input shape [4, 3, 64, 64]" in msg
    assert "tensor 'input'" in msg and "[1, 3, 64, 64] to [32, 3, 64, 64]" in msg
    with pytest.raises(UserError, match=r"refused input shape \[2, 3, 8, 8\] for tensor 'x': rebuild"):
        set_input_shape(_RefusingContext(False), "x", (2, 3, 8, 8), "m.plan")  # profile unknown: not guessed


def test_set_tensor_address_refusal_is_an_error_naming_the_tensor():
    from resnet_deploy.backends.tensorrt import set_tensor_address

    set_tensor_address(_RefusingContext(True), "logits", 0x7F0000000000, "m.plan")
    with pytest.raises(RuntimeError, match=r"m.plan: TensorRT refused device address 0x7f0000000100 for tensor 'logits'"):
        set_tensor_address(_RefusingContext(False), "logits", 0x7F0000000100, "m.plan")


def test_add_optimization_profile_minus_one_is_refused_with_the_shapes():
    from resnet_deploy.backends.tensorrt import add_profile

    shapes = BatchProfile.parse("1:8:32").shapes([-1, 3, 64, 64])
    assert add_profile(_Config(0), object(), "input", shapes) == 0
    with pytest.raises(UserError) as e:
        add_profile(_Config(-1), object(), "input", shapes)
    msg = str(e.value)
    assert "\n" not in msg and "optimization profile of input 'input'" in msg
    assert "min [1, 3, 64, 64]" in msg and "max [32, 3, 64, 64]" in msg


@pytest.mark.parametrize("compat,version,expected", [
    ("none", "8.5.3", None),
    ("ampere+", "8.6.1", "AMPERE_PLUS"),
    ("ampere+", "10.16.1.11", "AMPERE_PLUS"),
    ("same-cc", "10.9.0.34", "SAME_COMPUTE_CAPABILITY"),
    ("same-cc", "11.1.0", "SAME_COMPUTE_CAPABILITY"),
])
def test_hardware_level_names(compat, version, expected):
    from resnet_deploy.backends.tensorrt import hardware_level_name

    assert hardware_level_name(compat, version) == expected


@pytest.mark.parametrize("compat,version,needs", [("same-cc", "10.8.0.43", "10.9"), ("same-cc", "10.1.0", "10.9"),
                                                  ("ampere+", "8.5.3", "8.6")])
def test_hardware_level_too_old_tensorrt_is_one_line(compat, version, needs):
    from resnet_deploy.backends.tensorrt import hardware_level_name

    with pytest.raises(UserError) as e:
        hardware_level_name(compat, version)
    msg = str(e.value)
    assert "\n" not in msg and f"--hardware-compat {compat} needs TensorRT >= {needs}" in msg and version in msg


def test_gpu_extra_has_no_unused_cuda_python():
    """Device memory and streams come from torch: nothing imports cuda-python, so the gpu extra does not ask for it."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    gpu = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    assert not [d for d in gpu if d.replace("_", "-").startswith("cuda-python")]
    imports = [p for p in (root / "resnet_deploy").rglob("*.py")
               if any(line.strip().startswith(("import cuda", "from cuda")) for line in p.read_text().splitlines())]
    assert imports == []


# ---------------------------------------------------------------- error paths without TensorRT

@no_trt
def test_runner_without_tensorrt_names_the_gpu_extra(tmp_path):
    from resnet_deploy.backends.tensorrt import TensorRTRunner

    plan = tmp_path / "model.fp32.plan"
    plan.write_bytes(b"\0" * 16)
    with pytest.raises(MissingDependency, match=r"tensorrt is not installed.*pip install 'resnet-deploy\[gpu\]'"):
        TensorRTRunner(plan).activate()
    with pytest.raises(UserError, match="does not exist"):
        TensorRTRunner(tmp_path / "missing.plan").activate()


@no_trt
def test_cli_build_without_tensorrt_exit_2_and_bundle_untouched(r18_bundle_copy):
    before = {p.name: p.stat().st_mtime_ns for p in r18_bundle_copy.iterdir()}
    manifest_before = (r18_bundle_copy / "manifest.json").read_text()
    r = run_cli("build", r18_bundle_copy, "--batch", "1:2:4")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and GPU_EXTRA in lines[0], r.stderr
    assert {p.name: p.stat().st_mtime_ns for p in r18_bundle_copy.iterdir()} == before  # no plan, no stage dir
    assert (r18_bundle_copy / "manifest.json").read_text() == manifest_before


@no_trt
def test_cli_build_onnx_file_without_tensorrt(tmp_path):
    graph = _tiny_graph(tmp_path / "m.onnx", "fp16")
    r = run_cli("build", graph)
    assert r.returncode == 2 and GPU_EXTRA in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@no_trt
def test_export_auto_records_plainly_that_plans_were_skipped(r18_bundle):
    eng = bundle_mod.read_manifest(r18_bundle)["engines"]
    assert eng["status"] == "skipped" and eng["plans"] == {}
    assert "tensorrt is not installed" in eng["reason"] and GPU_EXTRA in eng["reason"]


@no_trt
def test_cli_export_says_plainly_that_plans_were_skipped(tmp_path):
    out = tmp_path / "b"
    r = run_cli("export", "--arch", "resnet18", "--weights", "random", "--input-size", "64", "--num-classes", "10",
                "--out", out)
    assert r.returncode == 0, r.stderr
    said = " ".join(r.stderr.split())  # rich wraps long lines
    assert "TensorRT plans skipped: tensorrt is not installed" in said and GPU_EXTRA in said
    assert "for TensorRT plans" not in said  # said once, by the heading
    assert not list(out.glob("*.plan"))
    # BatchNorm was folded before export: the portable graph's unchanged node count says so
    assert ("fused portable: 49 nodes (20 BatchNorm folded into their Conv in PyTorch before export; 2 rewrites "
            "here), parity vs eager:") in r.stdout
    assert "fused onnxruntime: 49 -> 24 nodes, parity vs eager:" in r.stdout


@no_trt
def test_export_engine_always_without_tensorrt_writes_nothing(tmp_path):
    out = tmp_path / "b"
    r = run_cli("export", "--arch", "resnet18", "--weights", "random", "--input-size", "64", "--num-classes", "10",
                "--engine", "always", "--out", out)
    assert r.returncode == 2 and GPU_EXTRA in r.stderr.strip().splitlines()[-1]
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_engine_bad_value_fails_fast(tmp_path):
    r = run_cli("export", "--arch", "resnet18", "--weights", "random", "--engine", "sometimes", "--out", tmp_path / "b")
    assert r.returncode == 2 and "unknown --engine 'sometimes': choose one of auto, always, never" in r.stderr
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- accuracy at min / opt / max batch

def test_plan_accuracy_checks_every_profile_batch(r18_bundle):
    """The accuracy helper with real runners (ONNX Runtime standing in for a plan): min, opt and max batch."""
    from resnet_deploy.backends.onnxruntime import OnnxRuntimeRunner
    from resnet_deploy.preprocess import Preprocessing
    from resnet_deploy.stages.reference import build_reference

    profile = BatchProfile.parse("1:3:5")
    pre = Preprocessing.from_dict(bundle_mod.read_manifest(r18_bundle)["preprocessing"])
    reference = build_reference(bundle_mod.load_eager(r18_bundle), pre, seed=1)
    assert reference.inputs(profile.max).shape == (5, 3, 64, 64) and reference.description.startswith("random:16")
    with OnnxRuntimeRunner(r18_bundle / "model.onnx") as ort:
        acc = plan_accuracy(reference, ort, profile, "fp32")
    assert acc["batches"] == [1, 3, 5] and set(acc["per_batch"]) == {"1", "3", "5"}
    assert acc["samples"] == 1 + 3 + 5 and acc["passed"] is True
    assert acc["bar"] == {"min_cosine": 0.99999, "min_top1_agreement": 1.0, "max_spread_error": 1e-3}

    class Broken:  # a candidate that is wrong only at the max batch must fail the check
        def infer(self, x):
            y = ort.infer(x)
            return y[:, ::-1].copy() if len(x) == profile.max else y

    with OnnxRuntimeRunner(r18_bundle / "model.onnx") as ort:
        acc = plan_accuracy(reference, Broken(), profile, "fp32")
    assert acc["passed"] is False and acc["per_batch"]["5"]["cosine"] < 0.99 and acc["per_batch"]["1"]["cosine"] > 0.9999


# ---------------------------------------------------------------- layer JSON and inspect

def test_parse_layer_json_trt10_handwritten_golden():
    r = load_layer_info(GOLDEN / "layers_trt10_handwritten.json")
    assert r.schema == "10.x" and r.detailed and r.io_tensors == ["input", "logits"]
    assert len(r.layers) == 7 and len(r.fused) == 4
    block = r.layers[5]
    assert block.type == "CaskConvolution" and block.precision == "int8" and block.input_dtypes == ["int8", "int8"]
    assert block.onnx_nodes == ["/layer1/layer1.0/conv2/Conv", "/layer1/layer1.0/Add", "/layer1/layer1.0/relu_1/Relu"]
    assert r.layers[4].onnx_nodes == ["/layer1/layer1.0/conv1/Conv", "/layer1/layer1.0/relu/Relu"]  # '| fn' stripped
    assert r.layers[0].onnx_nodes == [] and r.layers[0].precision == "fp32"
    assert r.summary()["precisions"] == {"fp32": 2, "int8": 5}


def test_parse_layer_json_trt11_handwritten_golden():
    r = load_layer_info(GOLDEN / "layers_trt11_handwritten.json")
    assert r.schema == "11.x" and r.io_tensors == ["input", "logits"]
    assert [layer.precision for layer in r.layers] == ["fp16", "fp16", "fp16", "fp32"]
    assert r.layers[2].onnx_nodes[1] == "/layer1/layer1.0/Add" and len(r.fused) == 2


@pytest.mark.parametrize("tensor,expected", [
    # 10.x layer tensors: one combined "Format/Datatype" string
    ({"Format/Datatype": "Row major linear FP32"}, "fp32"),
    ({"Format/Datatype": "Channel major FP16 format where channel % 2 == 0"}, "fp16"),
    ({"Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}, "int8"),
    ({"Format/Datatype": "Int8 NC32HW"}, "int8"),
    ({"Format/Datatype": "Row major linear UInt8 format"}, "uint8"),   # not int8
    ({"Format/Datatype": "Row major linear BFloat16 format"}, "bf16"),  # not fp32
    ({"Format/Datatype": "Row major linear Int32"}, "int32"),
    ({"Format/Datatype": "Row major linear Int64"}, "int64"),
    ({"Format/Datatype": "Row major linear Bool"}, "bool"),
    ({"Format/Datatype": "Float"}, "fp32"),
    ({"Format/DataType": "Half"}, "fp16"),                               # key spelling varies
    ({"Format/Datatype": "Row major linear FP8"}, "fp8"),
    ({"Format/Datatype": "Row major linear FP4"}, "fp4"),
    ({"Format/Datatype": "Row major linear Int4"}, "int4"),
    # 11.x: the field is split; "DataType" holds the type, "Format" the layout
    ({"Format": "Channel major format where channel % 8 == 0 (kHWC8)", "DataType": "Half"}, "fp16"),
    ({"Format": "Row major linear format (kLINEAR)", "DataType": "BFloat16"}, "bf16"),
    ({"Format": "Row major linear format (kLINEAR)", "DataType": "UInt8"}, "uint8"),
    ({"Format": "Row major linear format (kLINEAR)", "DataType": "Float"}, "fp32"),
    ({"Format": "Row major linear format (kLINEAR)", "Datatype": "Int8"}, "int8"),
    ({"DataType": "Unknown", "Format": "Row major linear FP32 format (kLINEAR)"}, "fp32"),  # next field names it
    ({"Format": "Row major linear FP16 format (kLINEAR)"}, "fp16"),
    # nothing names a type: '' (not the raw string)
    ({"Format": "Row major linear format (kLINEAR)"}, ""),
    ({"Format/Datatype": "N/A"}, ""),
    ({"Name": "x"}, ""),
    ({"DataType": None}, ""),
])
def test_dtype_reads_every_spelling_by_token(tensor, expected):
    assert dtype_of(tensor) == expected


def test_parse_layer_json_names_only_and_errors():
    r = parse_layer_info({"Layers": ["/conv1/Conv + /relu/Relu", "/fc/Gemm"], "Bindings": ["input", "logits"]})
    assert not r.detailed and r.layers[0].onnx_nodes == ["/conv1/Conv", "/relu/Relu"] and r.layers[1].onnx_nodes == []
    assert onnx_nodes_of("[ONNX Layer: a | f (Fn)]\x1f[ONNX Layer: b]\x1f[ONNX Layer: a]") == ["a", "b"]
    with pytest.raises(UserError, match="not valid JSON"):
        parse_layer_info("{nope")
    with pytest.raises(UserError, match="no 'Layers' list"):
        parse_layer_info({"Bindings": []})


def _plan_with_layers(tmp_path, golden="layers_trt10_handwritten.json") -> Path:
    plan = tmp_path / "model.int8.plan"
    plan.write_bytes(b"placeholder: inspect reads the layer JSON, not the plan")
    shutil.copy(GOLDEN / golden, tmp_path / "model.int8.layers.json")
    return plan


def test_cli_inspect_shows_fused_onnx_nodes(tmp_path):
    plan = _plan_with_layers(tmp_path)
    r = run_cli("inspect", plan)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "io tensors  input, logits" in out
    assert "<- /layer1/layer1.0/Add" in out and "<- /layer1/layer1.0/relu_1/Relu" in out
    assert "7 layers, 4 fused from several ONNX nodes" in out
    j = json.loads(run_cli("inspect", plan, "--json").stdout)
    assert j["summary"]["layers"] == 7 and j["layers"][5]["onnx_nodes"][1] == "/layer1/layer1.0/Add"
    direct = run_cli("inspect", tmp_path / "model.int8.layers.json")
    assert direct.returncode == 0 and "7 layers" in direct.stdout


def test_cli_inspect_uses_the_manifest_record(tmp_path):
    plan = tmp_path / "model.fp16.plan"
    plan.write_bytes(b"x")
    shutil.copy(GOLDEN / "layers_trt11_handwritten.json", tmp_path / "fp16-layers.json")
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"schema_version": 1, "engines": {"plans": {"model.fp16.plan": {"layers_file": "fp16-layers.json"}}}}))
    r = run_cli("inspect", plan)
    assert r.returncode == 0 and "inspector schema 11.x" in r.stdout


@no_trt
def test_cli_inspect_without_layer_json_needs_tensorrt(tmp_path):
    plan = tmp_path / "model.fp32.plan"
    plan.write_bytes(b"x")
    r = run_cli("inspect", plan)
    assert r.returncode == 2 and GPU_EXTRA in r.stderr
    r = run_cli("inspect", tmp_path / "missing.plan")
    assert r.returncode == 2 and "does not exist" in r.stderr


# ---------------------------------------------------------------- ONNX Runtime GPU backends

def test_tensorrt_ep_provider_options(tmp_path):
    from resnet_deploy.backends.onnxruntime_gpu import tensorrt_providers

    shapes = BatchProfile.parse("1:8:32").shapes([-1, 3, 64, 64])
    providers = tensorrt_providers(tmp_path / "cache", "input", shapes, workspace_mib=1024)
    name, opts = providers[0]
    assert name == "TensorrtExecutionProvider" and providers[1][0] == "CUDAExecutionProvider"
    assert opts["trt_engine_cache_enable"] and opts["trt_timing_cache_enable"]
    assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == str(tmp_path / "cache")
    assert (tmp_path / "cache").is_dir() and opts["trt_max_workspace_size"] == 1 << 30
    assert opts["trt_profile_min_shapes"] == "input:1x3x64x64" and opts["trt_profile_max_shapes"] == "input:32x3x64x64"


def test_onnxruntime_gpu_runner_fails_clearly_without_gpu_build(tmp_path):
    import onnxruntime as ort

    from resnet_deploy.backends.onnxruntime_gpu import cuda_runner, tensorrt_ep_runner

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here: covered by the gpu tests")
    graph = _tiny_graph(tmp_path / "m.onnx", "fp32")
    for runner in (cuda_runner(graph), tensorrt_ep_runner(graph, tmp_path / "cache")):
        with pytest.raises(MissingDependency, match=r"onnxruntime-gpu is not installed.*resnet-deploy\[gpu\]"):
            runner.activate()
        assert not runner.is_active


def test_modules_import_without_gpu_libraries():
    import importlib

    for mod in ("resnet_deploy.engines.stage", "resnet_deploy.trt.layers", "resnet_deploy.backends.tensorrt",
                "resnet_deploy.backends.onnxruntime_gpu", "resnet_deploy.cli.build_cmd", "resnet_deploy.cli.inspect_cmd"):
        importlib.import_module(mod)
