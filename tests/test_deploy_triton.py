"""``resnet-deploy triton``: every config.pbtxt parsed with Triton's own ModelConfig protobuf, then checked
for meaning against the bundle's ONNX graph.

TensorRT cannot be installed here, so bundles with plans are made by registering plan files the way
``resnet-deploy build`` records them (kind ``tensorrt-plan``, a precision and a ``compute_capability`` tag).
Their bytes are opaque placeholders: the repository writer only copies plans, it never opens them.
"""

from __future__ import annotations

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from .conftest import run_cli
from resnet_deploy.bundle import BundleUpdate, read_manifest
from resnet_deploy.errors import UserError
from resnet_deploy.deploy.triton import ONNX_TO_TRITON, normalize_cc, write_triton_repo


def parse_config(path) -> mc.ModelConfig:
    """Parse with Triton's schema: unknown fields, bad enums and wrong types raise."""
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def add_plans(bundle, plans: dict[str, str | None], precision: str = "fp16") -> None:
    with BundleUpdate(bundle) as b:
        for name, cc in plans.items():
            (b.path / name).write_bytes(f"placeholder plan for sm {cc}".encode())
            b.add_file(name, kind="tensorrt-plan", precision=precision, target="tensorrt", compute_capability=cc)


def check_against_graph(cfg: mc.ModelConfig, graph: onnx.GraphProto) -> None:
    """Names, types and dims agree with the ONNX graph and with max_batch_size."""
    (inp,), (out,) = cfg.input, cfg.output
    for t, vi in ((inp, graph.input[0]), (out, graph.output[0])):
        assert t.name == vi.name
        assert mc.DataType.Name(t.data_type) == ONNX_TO_TRITON[vi.type.tensor_type.elem_type]
        onnx_dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
        if cfg.max_batch_size > 0:
            assert onnx_dims[0] == -1, "a batching model needs a dynamic batch dimension in the graph"
            assert list(t.dims) == onnx_dims[1:]
        else:
            assert list(t.dims) == onnx_dims


def test_onnx_model_config_parses_and_matches_graph(r18_bundle, tmp_path):
    res = write_triton_repo(r18_bundle, tmp_path / "repo", dynamic_batching=True, preferred_batch_sizes=[8, 4],
                            max_batch_size=16, instances=3, device="cpu")
    (model,) = res.models
    assert model.name == "resnet18_onnx"
    cfg = parse_config(model.config)
    assert cfg.name == "resnet18_onnx" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 16
    graph = onnx.load(str(r18_bundle / "model.onnx"), load_external_data=False).graph
    check_against_graph(cfg, graph)
    m = read_manifest(r18_bundle)
    assert list(cfg.input[0].dims) == m["input"]["shape"][1:]
    assert list(cfg.output[0].dims) == [m["num_classes"]]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
    (group,) = cfg.instance_group
    assert group.count == 3 and group.kind == mc.ModelInstanceGroup.KIND_CPU
    copied = tmp_path / "repo" / "resnet18_onnx" / "1" / "model.onnx"
    assert copied.read_bytes() == (r18_bundle / "model.onnx").read_bytes()


def test_fixed_batch_without_dynamic_batching(r18_bundle, tmp_path):
    res = write_triton_repo(r18_bundle, tmp_path / "repo", name="clf", max_batch_size=1, device="gpu")
    cfg = parse_config(res.models[0].config)
    assert cfg.name == "clf_onnx" and cfg.max_batch_size == 1 and not cfg.HasField("dynamic_batching")
    check_against_graph(cfg, onnx.load(str(r18_bundle / "model.onnx"), load_external_data=False).graph)
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU


def test_plans_for_several_gpus_get_cc_model_filenames(r18_bundle_copy, tmp_path):
    add_plans(r18_bundle_copy, {"model.fp16.plan": "8.6", "model.fp16.sm90.plan": "sm_90"})
    # An fp16 ONNX graph is needed for the ONNX model: reuse the fp32 one under the fp16 tag.
    with BundleUpdate(r18_bundle_copy) as b:
        (b.path / "model.fp16.onnx").write_bytes((r18_bundle_copy / "model.onnx").read_bytes())
        b.add_file("model.fp16.onnx", kind="onnx", precision="fp16", target="portable")
    res = write_triton_repo(r18_bundle_copy, tmp_path / "repo", precision="fp16", dynamic_batching=True, device="gpu")
    names = {m.name: m for m in res.models}
    assert set(names) == {"resnet18_onnx", "resnet18_trt"}
    trt = parse_config(names["resnet18_trt"].config)
    assert trt.platform == "tensorrt_plan" and trt.max_batch_size == 8
    assert dict(trt.cc_model_filenames) == {"8.6": "model.sm86.plan", "9.0": "model.sm90.plan"}
    version = tmp_path / "repo" / "resnet18_trt" / "1"
    tags = {"8.6": "8.6", "9.0": "sm_90"}  # as each plan's manifest entry spells it
    for cc, fname in trt.cc_model_filenames.items():
        assert (version / fname).read_bytes() == f"placeholder plan for sm {tags[cc]}".encode()
    check_against_graph(trt, onnx.load(str(r18_bundle_copy / "model.onnx"), load_external_data=False).graph)
    assert trt.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert trt.HasField("dynamic_batching") and not trt.dynamic_batching.preferred_batch_size


def test_single_plan_is_model_plan(r18_bundle_copy, tmp_path):
    add_plans(r18_bundle_copy, {"model.fp32.plan": "8.9"}, precision="fp32")
    res = write_triton_repo(r18_bundle_copy, tmp_path / "repo", backends=["tensorrt"], instances=2)
    (model,) = res.models
    cfg = parse_config(model.config)
    assert not cfg.cc_model_filenames and cfg.instance_group[0].count == 2
    assert (tmp_path / "repo" / "resnet18_trt" / "1" / "model.plan").is_file()


@pytest.mark.parametrize("value,expected", [("8.6", "8.6"), ("86", "8.6"), ("sm_90", "9.0"), ((12, 0), "12.0"),
                                            ("120", "12.0")])
def test_normalize_cc(value, expected):
    assert normalize_cc(value) == expected


def test_cli_writes_repo_and_refuses_existing(r18_bundle, tmp_path):
    repo = tmp_path / "repo"
    res = run_cli("triton", r18_bundle, "--repo", repo, "--dynamic-batching", "--preferred-batch-sizes", "2,4")
    assert res.returncode == 0, res.stderr
    parse_config(repo / "resnet18_onnx" / "config.pbtxt")
    before = (repo / "resnet18_onnx" / "config.pbtxt").read_text()
    res = run_cli("triton", r18_bundle, "--repo", repo, "--instances", "4")
    assert res.returncode == 2 and "exists and is not empty: pass --force" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert (repo / "resnet18_onnx" / "config.pbtxt").read_text() == before
    res = run_cli("triton", r18_bundle, "--repo", repo, "--instances", "4", "--force")
    assert res.returncode == 0, res.stderr
    assert parse_config(repo / "resnet18_onnx" / "config.pbtxt").instance_group[0].count == 4


def test_cli_documented_dynamic_batching_form(r18_bundle, tmp_path):
    """The README's form works; sizes given to the flag itself get a usage error that names the right option."""
    repo = tmp_path / "repo"
    res = run_cli("triton", r18_bundle, "--repo", repo, "--dynamic-batching", "4,8", "--instances", "2")
    assert res.returncode == 2 and not repo.exists()
    (line,) = res.stderr.strip().splitlines()
    assert "--dynamic-batching is a flag" in line and "--preferred-batch-sizes 4,8" in line
    res = run_cli("triton", r18_bundle, "--repo", repo, "--dynamic-batching=4,8")
    assert res.returncode == 2 and "--preferred-batch-sizes 4,8" in res.stderr
    res = run_cli("triton", r18_bundle, "--repo", repo, "--dynamic-batching", "--preferred-batch-sizes", "4,8",
                  "--instances", "2")
    assert res.returncode == 0, res.stderr
    cfg = parse_config(repo / "resnet18_onnx" / "config.pbtxt")
    assert list(cfg.dynamic_batching.preferred_batch_size) == [4, 8] and cfg.instance_group[0].count == 2


@pytest.mark.parametrize("gpu, kind", [(False, "KIND_CPU"), (True, "KIND_GPU")])
def test_device_defaults_to_what_this_machine_has(r18_bundle, tmp_path, monkeypatch, gpu, kind):
    from resnet_deploy.backends import table

    monkeypatch.setattr(table, "cuda_available", lambda: gpu)
    res = write_triton_repo(r18_bundle, tmp_path / "repo")
    assert res.device == ("gpu" if gpu else "cpu") and res.device_note
    assert mc.ModelInstanceGroup.Kind.Name(parse_config(res.models[0].config).instance_group[0].kind) == kind


def test_device_default_follows_a_gpu_only_model(r18_bundle_copy, tmp_path, monkeypatch):
    """Asking for TensorRT models means a GPU server, whatever this machine has."""
    from resnet_deploy.backends import table

    monkeypatch.setattr(table, "cuda_available", lambda: False)
    add_plans(r18_bundle_copy, {"model.fp32.plan": "8.9"}, precision="fp32")
    res = write_triton_repo(r18_bundle_copy, tmp_path / "repo", backends=["onnxruntime", "tensorrt"])
    assert res.device == "gpu" and "TensorRT models run on GPUs only" in res.device_note
    assert {parse_config(m.config).instance_group[0].kind for m in res.models} == {mc.ModelInstanceGroup.KIND_GPU}


def test_cli_says_which_device_it_chose(r18_bundle_copy, tmp_path):
    """On this machine: gpu only when torch sees one; a bundle recommended for the CPU is served on the CPU."""
    import json

    import torch

    manifest = json.loads((r18_bundle_copy / "manifest.json").read_text())
    manifest["recommended"] = {"cpu": {"cpu": "test", "throughput": {
        "backend": "onnxruntime", "precision": "fp32", "artifact": "model.onnxruntime.onnx", "batch": 8}}}
    (r18_bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    res = run_cli("triton", r18_bundle_copy, "--repo", tmp_path / "repo")
    assert res.returncode == 0, res.stderr
    device = "gpu" if torch.cuda.is_available() else "cpu"
    assert [line for line in res.stderr.splitlines() if "--device" in line] == \
        [line for line in res.stderr.splitlines() if line.startswith(f"note: --device {device} (")]
    assert f"note: --device {device} (" in res.stderr
    cfg = parse_config(tmp_path / "repo" / "resnet18_onnx" / "config.pbtxt")
    assert mc.ModelInstanceGroup.Kind.Name(cfg.instance_group[0].kind) == f"KIND_{device.upper()}"
    if device == "cpu":
        assert "recommended for cpu by bench" in res.stdout


def test_openvino_pick_measured_on_an_onnx_graph_is_served_as_that_graph(r18_bundle_copy, tmp_path):
    """bench measures OpenVINO on the INT8 ONNX graph when the bundle has no IR; Triton's openvino backend reads that
    graph too (default_model_filename), so the recommendation is served as measured instead of refused."""
    import json

    with BundleUpdate(r18_bundle_copy) as b:  # an INT8 graph stand-in: its bytes are never run here
        (b.path / "model.int8.onnxruntime.onnx").write_bytes((r18_bundle_copy / "model.onnx").read_bytes())
        b.add_file("model.int8.onnxruntime.onnx", kind="onnx", precision="int8", target="onnxruntime")
    manifest = json.loads((r18_bundle_copy / "manifest.json").read_text())
    assert not [n for n, e in manifest["files"].items() if e["kind"] == "openvino-ir"]
    manifest["recommended"] = {"cpu": {"cpu": "test", "throughput": {
        "backend": "openvino", "precision": "int8", "artifact": "model.int8.onnxruntime.onnx", "batch": 8}}}
    (r18_bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    repo = tmp_path / "repo"
    res = run_cli("triton", r18_bundle_copy, "--repo", repo, "--device", "cpu", "--dynamic-batching")
    assert res.returncode == 0, res.stderr
    assert "resnet18_ov  openvino  from model.int8.onnxruntime.onnx" in res.stdout
    cfg = parse_config(repo / "resnet18_ov" / "config.pbtxt")
    assert cfg.backend == "openvino" and cfg.default_model_filename == "model.onnx"
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert cfg.parameters["PERFORMANCE_HINT"].string_value == "THROUGHPUT"
    check_against_graph(cfg, onnx.load(str(r18_bundle_copy / "model.onnx"), load_external_data=False).graph)
    assert sorted(p.name for p in (repo / "resnet18_ov" / "1").iterdir()) == ["model.onnx"]
    assert (repo / "resnet18_ov" / "1" / "model.onnx").read_bytes() == \
        (r18_bundle_copy / "model.int8.onnxruntime.onnx").read_bytes()
    assert json.loads((repo / "resnet_deploy.json").read_text())["precision"] == "int8"


@pytest.mark.parametrize("args,expect", [
    (("--backend", "tensorrt"), "has no fp32 TensorRT plan"),
    (("--precision", "int8"), "has no int8 ONNX model"),
    (("--precision", "fp8"), "unknown precision 'fp8'"),
    (("--name", "bad/name"), "bad model name 'bad/name'"),
    (("--name", ".hidden"), "bad model name"),
    (("--backend", "tflite"), "unknown backend 'tflite'"),
    (("--dynamic-batching", "--preferred-batch-sizes", "4,32"), "preferred batch sizes [32]"),
    (("--preferred-batch-sizes", "4"), "needs --dynamic-batching"),
    (("--device", "cpu", "--backend", "tensorrt"), "TensorRT models run on GPUs only"),
])
def test_cli_bad_input_one_line_exit_2(r18_bundle, tmp_path, args, expect):
    repo = tmp_path / "repo"
    res = run_cli("triton", r18_bundle, "--repo", repo, *args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], res.stderr
    assert not repo.exists()
    assert not list(tmp_path.glob(".repo.tmp-*"))


def test_not_a_bundle(tmp_path):
    with pytest.raises(UserError, match="not a resnet-deploy bundle"):
        write_triton_repo(tmp_path, tmp_path / "repo")


def test_ambiguous_plans_without_cc_tag(r18_bundle_copy, tmp_path):
    add_plans(r18_bundle_copy, {"model.fp32.plan": None, "model.fp32.b.plan": "9.0"}, precision="fp32")
    with pytest.raises(UserError, match="no compute_capability tag"):
        write_triton_repo(r18_bundle_copy, tmp_path / "repo", backends=["tensorrt"])
    assert not (tmp_path / "repo").exists()
