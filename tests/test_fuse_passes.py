"""Each fusion pass on tiny hand-built graphs: how many rewrites, what it declines, and numerical equality with
ONNX Runtime on the unfused graph (dynamic batch kept)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from resnet_deploy import validate
from resnet_deploy.errors import UserError
from resnet_deploy.fuse import fuse_model, get_pass
from resnet_deploy.fuse.graph import op_counts
from .tolerances import FP32

C, H = 4, 8


class Builder:
    """Collects nodes and random initializers for a small NCHW graph with a dynamic batch ``N``."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []

    def const(self, name, value):
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def conv(self, name, x, cin, cout, k=3, stride=1, bias=True):
        w = self.const(f"{name}.w", self.rng.standard_normal((cout, cin, k, k)) * 0.3)
        inputs = [x, w] + ([self.const(f"{name}.b", self.rng.standard_normal(cout) * 0.1)] if bias else [])
        self.nodes.append(helper.make_node("Conv", inputs, [name], name=name, kernel_shape=[k, k],
                                           pads=[k // 2] * 4, strides=[stride, stride]))
        return name

    def bn(self, name, x, c):
        params = [self.rng.uniform(0.5, 1.5, c), self.rng.standard_normal(c) * 0.1, self.rng.standard_normal(c) * 0.1,
                  self.rng.uniform(0.5, 2.0, c)]
        names = [self.const(f"{name}.{p}", v) for p, v in zip(("scale", "bias", "mean", "var"), params)]
        self.nodes.append(helper.make_node("BatchNormalization", [x, *names], [name], name=name, epsilon=1e-5))
        return name

    def op(self, op, inputs, name, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def model(self, out, out_channels=C, out_hw=H):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, H, H])
        y = helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", out_channels, out_hw, out_hw])
        graph = helper.make_graph(self.nodes, "tiny", [x], [y], self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        onnx.checker.check_model(m, full_check=True)
        return m


def run_ort(model, batch):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(batch).standard_normal((batch, C, H, H)).astype(np.float32)
    return sess.run(None, {"x": x})[0]


def fuse_and_compare(model, target):
    """Fuse a copy; assert ONNX Runtime gives the unfused graph's outputs at batch 1 and 3; return the result."""
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    res = fuse_model(fused, target)
    onnx.checker.check_model(res.model)
    for io in (res.model.graph.input[0], res.model.graph.output[0]):  # the dynamic batch is kept
        assert io.type.tensor_type.shape.dim[0].dim_param == "N"
    for batch in (1, 3):
        ref, out = run_ort(model, batch), run_ort(res.model, batch)
        assert out.shape == ref.shape
        assert validate.compare(ref, out).max_rel_diff <= FP32["max_rel_diff"]
    return res


def block(b, shortcut, bias=True):
    """Conv -> BN -> Add(shortcut) -> Relu, shortcut 'identity' or 'downsample' (strided 1x1 Conv + BN)."""
    stride = 2 if shortcut == "downsample" else 1
    cout = 2 * C if shortcut == "downsample" else C
    main = b.bn("bn1", b.conv("conv1", "x", C, cout, stride=stride, bias=bias), cout)
    short = "x" if shortcut == "identity" else b.bn("bn_ds", b.conv("conv_ds", "x", C, cout, k=1, stride=stride), cout)
    return b.op("Relu", [b.op("Add", [main, short], "add")], "y"), cout, H // stride


def test_conv_bn_folds():
    b = Builder()
    out = b.bn("bn", b.conv("conv", "x", C, C), C)
    res = fuse_and_compare(b.model(out), "portable")
    assert res.counts()["fold-batchnorm"] == 1
    assert res.ops_after == {"Conv": 1}


def test_conv_without_bias_gets_one():
    b = Builder()
    out = b.bn("bn", b.conv("conv", "x", C, C, bias=False), C)
    res = fuse_and_compare(b.model(out), "portable")
    assert res.counts()["fold-batchnorm"] == 1
    (conv,) = res.model.graph.node
    assert len(conv.input) == 3 and conv.input[2]


def test_conv_bn_relu_becomes_one_fusedconv():
    b = Builder()
    out = b.op("Relu", [b.bn("bn", b.conv("conv", "x", C, C), C)], "y")
    res = fuse_and_compare(b.model(out), "onnxruntime")
    assert res.counts()["fold-batchnorm"] == 1 and res.counts()["fuse-conv-relu"] == 1
    assert res.ops_after == {"com.microsoft:FusedConv": 1}
    portable = fuse_and_compare(b.model(out), "portable")
    assert portable.ops_after == {"Conv": 1, "Relu": 1}


@pytest.mark.parametrize("bias", [True, False])
def test_residual_identity_shortcut(bias):
    b = Builder()
    out, cout, hw = block(b, "identity", bias)
    res = fuse_and_compare(b.model(out, cout, hw), "onnxruntime")
    assert res.counts()["fold-batchnorm"] == 1 and res.counts()["fuse-conv-add-relu"] == 1
    assert res.ops_after == {"com.microsoft:FusedConv": 1}
    (node,) = res.model.graph.node
    assert list(node.input)[3] == "x"  # Z is the shortcut
    assert node.input[2]  # the BN fold gives a bias-less Conv one, so B is always there


def test_residual_downsample_shortcut():
    b = Builder()
    out, cout, hw = block(b, "downsample")
    res = fuse_and_compare(b.model(out, cout, hw), "onnxruntime")
    assert res.counts()["fold-batchnorm"] == 2 and res.counts()["fuse-conv-add-relu"] == 1
    assert res.ops_after == {"Conv": 1, "com.microsoft:FusedConv": 1}
    (rw,) = [r for r in res.rewrites if r.pass_name == "fuse-conv-add-relu"]
    assert [s[1] for s in rw.sources] == ["Conv", "Add", "Relu"] and rw.sources[0][0] == "conv1"
    assert rw.detail == "Z = bn_ds from Conv"  # the folded downsample Conv (it took its BN's output name)


def test_bn_that_must_not_fold():
    b = Builder()
    after_relu = b.bn("bn_relu", b.op("Relu", [b.conv("conv", "x", C, C)], "r"), C)
    shared = b.conv("conv2", after_relu, C, C)
    out = b.op("Add", [b.bn("bn_shared", shared, C), shared], "y")  # conv2 output also read by the Add
    res = fuse_and_compare(b.model(out), "onnxruntime")
    assert res.counts()["fold-batchnorm"] == 0
    reasons = {d.nodes[-1]: d.reason for d in next(p for p in res.passes if p.name == "fold-batchnorm").declined}
    assert "not a Conv" in reasons["bn_relu"] and "2 consumers" in reasons["bn_shared"]
    assert res.ops_after["BatchNormalization"] == 2


def test_broadcasting_add_is_not_fused():
    b = Builder()
    out = b.op("Relu", [b.op("Add", [b.conv("conv", "x", C, C), b.const("bias", np.ones((1, C, 1, 1)))], "a")], "y")
    res = fuse_and_compare(b.model(out), "onnxruntime")
    assert res.counts()["fuse-conv-add-relu"] == 0
    assert "broadcasts" in next(p for p in res.passes if p.name == "fuse-conv-add-relu").declined[0].reason


def test_cleanup_passes():
    b = Builder()
    conv = b.conv("conv", "x", C, C)
    b.nodes.append(helper.make_node("Constant", [], ["two"], name="two",
                                    value=numpy_helper.from_array(np.full((1, C, 1, 1), 2.0, np.float32))))
    scale = b.op("Mul", ["two", b.const("half", np.full((1, C, 1, 1), 0.5))], "scale")  # constant: folds
    dup = b.const("half_again", np.full((1, C, 1, 1), 0.5))  # duplicate of "half"
    b.op("Neg", [conv], "unused")  # dead
    y = b.op("Mul", [b.op("Identity", [conv], "ident"), scale], "m")
    out = b.op("Add", [y, dup], "y")
    res = fuse_and_compare(b.model(out), "portable")
    counts = res.counts()
    assert counts["eliminate-identity"] == 1 and counts["fold-constants"] == 2
    assert counts["dedup-initializers"] == 1 and counts["remove-dead-nodes"] >= 1
    assert res.ops_after == {"Add": 1, "Conv": 1, "Mul": 1}


def test_skip_and_unknown_names():
    b = Builder()
    out = b.op("Relu", [b.bn("bn", b.conv("conv", "x", C, C), C)], "y")
    res = fuse_and_compare(b.model(out), "portable")
    skipped = fuse_model(b.model(out), "onnxruntime", skip=["fold-batchnorm"])
    assert "fold-batchnorm" in skipped.skipped and skipped.ops_after["BatchNormalization"] == 1
    assert res.ops_after == {"Conv": 1, "Relu": 1}
    with pytest.raises(UserError, match="unknown pass 'nope'"):
        get_pass("nope")
    with pytest.raises(UserError, match="unknown fusion target"):
        fuse_model(b.model(out), "gpu")
    assert op_counts(b.model(out)) == {"BatchNormalization": 1, "Conv": 1, "Relu": 1}
