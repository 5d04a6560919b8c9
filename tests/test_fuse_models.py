"""Fusion of whole exported ResNets (randomised BatchNorm, 64x64): node counts per target, parity with eager,
the bundle's fusion artifacts, and the PyTorch-level Conv+BN fold."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from resnet_deploy import validate
from resnet_deploy.bundle import find_artifacts, read_manifest, verify
from resnet_deploy.fuse import fuse_model
from .tolerances import FP32

from .conftest import SMALL


def ort_logits(model, x):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def assert_parity(ref, out):
    p = validate.compare(ref, out)
    assert p.meets(validate.BARS["fp32"]) and p.max_rel_diff <= FP32["max_rel_diff"], p


def test_r18_bundle_has_fused_graphs(r18_bundle):
    m = read_manifest(r18_bundle)
    assert verify(r18_bundle) == []
    assert find_artifacts(m, kind="onnx", precision="fp32", target="onnxruntime") == ["model.onnxruntime.onnx"]
    assert find_artifacts(m, kind="onnx", precision="fp32", target="portable") == ["model.onnx"]
    fusion = m["fusion"]
    assert all(fusion["targets"][t]["parity"]["passed"] for t in ("portable", "onnxruntime"))
    report = json.loads((r18_bundle / "fusion_report.json").read_text())
    ort = report["targets"]["onnxruntime"]
    assert ort["ops_after"] == {"Conv": 3, "Gemm": 1, "GlobalAveragePool": 1, "MaxPool": 1, "Reshape": 1,
                                "com.microsoft:FusedConv": 17}
    assert report["targets"]["portable"]["ops_after"]["Conv"] == 20
    assert "BatchNormalization" not in report["targets"]["portable"]["ops_after"]
    # Every residual block: its first Conv+Relu and its Conv+Add+Relu each became one FusedConv.
    blocks = [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    for name in blocks:
        passes = sorted(r["pass_name"] for r in ort["blocks"][name])
        assert passes == ["fuse-conv-add-relu", "fuse-conv-relu"], (name, passes)
    assert fusion["torch_fold"]["folded"] == 20  # every BN of resnet18 follows a Conv


def export_small(arch, tmp_path):
    from resnet_deploy.exporter.onnx_export import export_onnx
    from resnet_deploy.models import load_model

    model = load_model(arch, "random", 10, seed=0).model
    path = tmp_path / f"{arch}.onnx"
    export_onnx(model, path, (SMALL, SMALL))
    return model, onnx.load(str(path))


def test_resnet50_node_counts_and_parity(tmp_path):
    model, proto = export_small("resnet50", tmp_path)
    assert {k: v for k, v in fuse_model(onnx.ModelProto.FromString(proto.SerializeToString()), "portable")
            .ops_after.items() if k in ("Conv", "Relu", "Add")} == {"Conv": 53, "Relu": 49, "Add": 16}
    x = np.random.default_rng(0).standard_normal((3, 3, SMALL, SMALL)).astype(np.float32)
    with torch.no_grad():
        eager = model(torch.from_numpy(x)).numpy()
    res = fuse_model(proto, "onnxruntime")
    ops = res.ops_after
    assert ops.get("Conv", 0) + ops["com.microsoft:FusedConv"] == 53
    assert ops["com.microsoft:FusedConv"] == 49 and ops["Conv"] == 4  # the four downsample Convs feed Z
    assert "Relu" not in ops and "Add" not in ops
    assert res.counts()["fuse-conv-add-relu"] == 16 and res.counts()["fuse-conv-relu"] == 33
    batch = res.model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # dynamic batch kept
    assert_parity(eager, ort_logits(res.model, x))
    assert_parity(eager[:1], ort_logits(res.model, x[:1]))


class OddNet(torch.nn.Module):
    """BatchNorm in odd places: a BN defined outside the Conv's container, one after a ReLU, one whose Conv
    output is also read elsewhere."""

    def __init__(self):
        super().__init__()
        self.convs = torch.nn.ModuleList([torch.nn.Conv2d(3, 8, 3, padding=1, bias=False),
                                          torch.nn.Conv2d(8, 8, 3, padding=1)])
        self.norms = torch.nn.ModuleDict({"a": torch.nn.BatchNorm2d(8), "after_relu": torch.nn.BatchNorm2d(8),
                                          "shared": torch.nn.BatchNorm2d(8)})
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.norms["a"](self.convs[0](x)))
        y = self.norms["after_relu"](y)
        z = self.convs[1](y)
        y = self.norms["shared"](z) + z
        return self.fc(y.mean((2, 3)))


def test_torch_fold_handles_odd_places(tmp_path):
    from resnet_deploy.pipeline.api import export
    from resnet_deploy.exporter.torch_fold import fold_conv_bn
    from resnet_deploy.models import randomize_batchnorm

    torch.manual_seed(0)
    net = OddNet()
    randomize_batchnorm(net)
    res = fold_conv_bn(net.train())  # a training-mode model: the fold works on an eval copy
    assert res.folded == [{"conv": "convs.0", "bn": "norms.a"}]
    reasons = {d["bn"]: d["reason"] for d in res.declined}
    assert "not a Conv" in reasons["norms.after_relu"] and "2 users" in reasons["norms.shared"]
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(res.model(x), net.eval()(x), rtol=1e-4, atol=1e-5)
    assert net.norms["a"] is not None and isinstance(net.convs[0], torch.nn.Conv2d)  # input untouched

    bundle = export(net, tmp_path / "odd", input_size=32)
    m = read_manifest(bundle.path)
    assert m["fusion"]["torch_fold"] == {"folded": 1, "declined": 2}
    graph = onnx.load(str(bundle.path / "model.onnx"))
    assert [n.op_type for n in graph.graph.node].count("BatchNormalization") == 2  # the two that cannot fold
    report = json.loads((bundle.path / "fusion_report.json").read_text())
    declined = [d["reason"] for d in report["targets"]["portable"]["declined"]]
    assert any("not a Conv" in r for r in declined) and any("2 consumers" in r for r in declined)
    assert all(m["fusion"]["targets"][t]["parity"]["passed"] for t in ("portable", "onnxruntime"))


def test_ort_finds_nothing_left_to_fuse(r18_bundle, tmp_path):
    """The onnxruntime graph needs no fusion at session start: ORT_ENABLE_EXTENDED leaves it as it is."""
    import onnxruntime as ort

    from resnet_deploy.backends.onnxruntime import session_options
    from resnet_deploy.onnx_graph import op_counts

    src = r18_bundle / "model.onnxruntime.onnx"
    saved = tmp_path / "ort_extended.onnx"
    ort.InferenceSession(str(src), session_options("extended", optimized_model_path=str(saved)),
                         providers=["CPUExecutionProvider"])
    assert op_counts(onnx.load(str(saved))) == op_counts(onnx.load(str(src)))


def test_unoptimized_export_with_batchnorm(tmp_path):
    """A graph that still carries BatchNormalization and shape plumbing (the dynamo exporter without its
    optimizer, like graphs from other tools): clean-up and BN folding bring it to the optimized form."""
    import contextlib
    import io

    from resnet_deploy.models import load_model

    model = load_model("resnet18", "random", 10, seed=0).model
    path = tmp_path / "raw.onnx"
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        torch.onnx.export(model, (torch.randn(2, 3, SMALL, SMALL),), str(path), dynamo=True, optimize=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    raw = onnx.load(str(path))
    assert [n.op_type for n in raw.graph.node].count("BatchNormalization") == 20
    x = np.random.default_rng(1).standard_normal((3, 3, SMALL, SMALL)).astype(np.float32)
    with torch.no_grad():
        eager = model(torch.from_numpy(x)).numpy()
    portable = fuse_model(onnx.load(str(path)), "portable")
    assert portable.counts()["fold-batchnorm"] == 20 and portable.counts()["fold-constants"] > 0
    assert "BatchNormalization" not in portable.ops_after and "Expand" not in portable.ops_after
    assert_parity(eager, ort_logits(portable.model, x))
    fused = fuse_model(raw, "onnxruntime")
    assert fused.ops_after["com.microsoft:FusedConv"] == 17 and fused.ops_after["Conv"] == 3
    assert_parity(eager, ort_logits(fused.model, x))
    assert_parity(eager[:1], ort_logits(fused.model, x[:1]))
