"""Export of real (random-init, randomised-BN) torchvision ResNets and custom residual nets, parity asserted."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from resnet_deploy import export, export_arch
from resnet_deploy.backends.onnxruntime import OnnxRuntimeRunner
from resnet_deploy.bundle import load_eager, read_manifest, verify
from resnet_deploy.models import randomize_batchnorm
from resnet_deploy.preprocess import make_preprocessing
from resnet_deploy.validate import compare

from .conftest import SMALL, run_cli
from .tolerances import FP32


def assert_fp32_parity(p: dict) -> None:
    assert p["cosine"] >= FP32["min_cosine"], p
    assert p["top1_agreement"] >= FP32["min_agreement"], p
    assert p["max_rel_diff"] <= FP32["max_rel_diff"], p


def test_resnet18_bundle_manifest_and_parity(r18_bundle):
    m = read_manifest(r18_bundle)
    assert m["schema_version"] == 1 and m["arch"] == "resnet18" and m["num_classes"] == 10
    assert m["input"] == {"name": "input", "shape": [-1, 3, SMALL, SMALL], "dtype": "float32", "layout": "NCHW",
                          "dynamic_axes": {"0": "batch"}}
    assert m["outputs"][0]["name"] == "logits" and m["outputs"][0]["shape"] == [-1, 10]
    assert m["preprocessing"]["input_size"] == [SMALL, SMALL] and m["preprocessing"]["resize"] == 73
    assert m["weights"]["source"] == "random" and any("RANDOM" in w for w in m["warnings"])
    v = m["validation"]["fp32"]
    assert v["inputs"].startswith("images:5") and v["batches"] == [1, 4] and v["passed"]
    assert_fp32_parity(v)
    assert set(m["files"]) >= {"model.onnx", "model.pt2"}
    assert all(len(e["sha256"]) == 64 and e["size"] > 0 for e in m["files"].values())
    assert m["toolchain"]["torch"] and m["toolchain"]["onnxruntime"]
    assert verify(r18_bundle) == []


def test_onnx_graph_contract(r18_bundle):
    path = r18_bundle / "model.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    proto = onnx.load(str(path))
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "input" and out.name == "logits"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, SMALL, SMALL]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 18
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["resnet_deploy.arch"] == "resnet18" and meta["resnet_deploy.num_classes"] == "10"
    assert json.loads(meta["resnet_deploy.preprocessing"])["input_size"] == [SMALL, SMALL]
    assert "resnet_deploy.weights_sha256" in meta and "resnet_deploy.version" in meta
    assert not any(n.op_type == "BatchNormalization" for n in proto.graph.node)


def test_dynamic_batch_runs_at_any_batch(r18_bundle):
    eager = load_eager(r18_bundle)
    x = np.random.default_rng(1).standard_normal((3, 3, SMALL, SMALL), dtype=np.float32)
    with OnnxRuntimeRunner(r18_bundle / "model.onnx") as ort:
        for b in (1, 3):
            y = ort.infer(x[:b])
            with torch.no_grad():
                ref = eager(torch.from_numpy(x[:b])).numpy()
            assert y.shape == (b, 10)
            assert compare(ref, y).cosine >= FP32["min_cosine"]


def test_bottleneck_arch_parity(tmp_path):
    res = export_arch("resnet50", tmp_path / "r50", weights="random", input_size="64x96", num_classes=7)
    v = res.manifest["validation"]["fp32"]
    assert_fp32_parity(v)
    assert res.manifest["input"]["shape"] == [-1, 3, 64, 96]
    assert res.manifest["export"]["op_counts"]["Conv"] == 53


class TinyResNet(torch.nn.Module):
    """A user's own residual network: BN in a non-standard place, a custom head."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(16),
                                        torch.nn.ReLU())
        self.body = torch.nn.Sequential(torch.nn.Conv2d(16, 16, 3, 1, 1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                                        torch.nn.Conv2d(16, 16, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(16))
        self.head = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, classes))

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.relu(x + self.body(x)))


def test_python_api_exports_custom_resnet(tmp_path, images_dir):
    torch.manual_seed(0)
    model = TinyResNet()
    randomize_batchnorm(model)
    pre = make_preprocessing("48", mean="0.5,0.5,0.5", std="0.25,0.25,0.25")
    res = export(model, tmp_path / "custom", preprocessing=pre, arch="tiny-resnet", images=images_dir)
    m = res.manifest
    assert m["arch"] == "tiny-resnet" and m["num_classes"] == 5 and m["weights"]["source"] == "user-module"
    assert m["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and m["preprocessing"]["resize"] == 54
    assert_fp32_parity(m["validation"]["fp32"])


def test_checkpoint_round_trip_with_num_classes(tmp_path, images_dir):
    """A DataParallel-style checkpoint of a 10-class model exports with --num-classes 10 and keeps its weights."""
    import torchvision

    from resnet_deploy.models import load_model

    torch.manual_seed(3)
    model = torchvision.models.resnet18(num_classes=10)
    randomize_batchnorm(model, seed=3)
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, ckpt)
    out = tmp_path / "bundle"
    r = run_cli("export", "--arch", "resnet18", "--weights", ckpt, "--num-classes", "10", "--input-size", SMALL,
                "--images", images_dir, "--out", out)
    assert r.returncode == 0, r.stderr
    m = read_manifest(out)
    assert m["weights"]["source"] == "checkpoint" and m["num_classes"] == 10
    assert len(m["weights"]["sha256"]) == 64
    # The bundle holds the checkpoint's weights, not a fresh init: compare with the original model.
    x = np.random.default_rng(0).standard_normal((2, 3, SMALL, SMALL), dtype=np.float32)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    with OnnxRuntimeRunner(out / "model.onnx") as ort:
        assert compare(ref, ort.infer(x)).cosine >= FP32["min_cosine"]
    assert load_model("resnet18", str(ckpt), 10).weights["sha256"] == m["weights"]["sha256"]
    assert "parity" in r.stdout.lower() and "cosine" in r.stdout  # the summary goes to stdout


@pytest.mark.parametrize("plain", [True, False])
def test_checkpoint_containers(tmp_path, plain):
    import torchvision

    from resnet_deploy.models import load_model

    sd = torchvision.models.resnet18(num_classes=4).state_dict()
    path = tmp_path / "c.pt"
    torch.save(sd if plain else {"model": sd}, path)
    loaded = load_model("resnet18", str(path), num_classes=4)
    assert torch.equal(loaded.model.state_dict()["fc.weight"], sd["fc.weight"])
