"""Each fusion pass on tiny hand-built graphs: how many rewrites, what it declines, and numerical equality with
ONNX Runtime on the unfused graph (dynamic batch kept)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from resnet_deploy import validate
from resnet_deploy.backends.onnxruntime import graph_outputs
from resnet_deploy.errors import UserError
from resnet_deploy.fuse import fuse_model, get_pass
from resnet_deploy.onnx_graph import op_counts
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


def se_block(b, x, c, squeeze="ReduceMean"):
    """x * Sigmoid(Conv(Relu(Conv(mean_hw(x))))): timm's squeeze-excitation as the dynamo exporter writes it."""
    axes = b.const("axes", np.array([2, 3]))
    b.inits[-1] = numpy_helper.from_array(np.array([2, 3], np.int64), "axes")
    pooled = b.op("ReduceMean", [x, axes], "se_pool", keepdims=1) if squeeze == "ReduceMean" else \
        b.op("GlobalAveragePool", [x], "se_pool")
    fc1 = b.op("Relu", [b.conv("se_fc1", pooled, c, 2, k=1)], "se_relu")
    gate = b.op("Sigmoid", [b.conv("se_fc2", fc1, 2, c, k=1)], "se_gate")
    return b.op("Mul", [x, gate], "se_scale")


def test_squeeze_excitation_is_recognised_and_its_parts_fused():
    b = Builder()
    main = b.conv("conv", "x", C, C)
    out = b.op("Relu", [b.op("Add", [se_block(b, main, C), "x"], "add")], "y")
    res = fuse_and_compare(b.model(out), "onnxruntime")
    counts = res.counts()
    assert counts["reduce-mean-to-pool"] == 1 and counts["fuse-conv-sigmoid"] == 1 and counts["fuse-conv-relu"] == 1
    (found,) = res.found
    assert found.pass_name == "squeeze-excitation" and found.result == ("se_scale", "Mul")
    assert found.detail.startswith(f"squeeze-excitation ({C} -> 2 -> {C} channels): ReduceMean -> Conv -> Relu")
    assert res.ops_after == {"Add": 1, "Conv": 1, "GlobalAveragePool": 1, "Mul": 1, "Relu": 1,
                             "com.microsoft:FusedConv": 2}
    (declined,) = next(p for p in res.passes if p.name == "fuse-conv-add-relu").declined
    assert "neither Add input is a Conv output (they come from Mul and graph input)" == declined.reason
    portable = fuse_and_compare(b.model(out), "portable")  # recognised there too; only the pooling is rewritten
    assert len(portable.found) == 1 and portable.ops_after["GlobalAveragePool"] == 1
    assert portable.ops_after["Sigmoid"] == 1 and portable.ops_after["Conv"] == 3


def test_gate_that_is_not_squeeze_excitation_is_declined():
    b = Builder()
    other = b.conv("other", "x", C, C)
    gate = b.op("Sigmoid", [b.conv("g", b.op("GlobalAveragePool", [other], "pool"), C, C, k=1)], "gate")
    out = b.op("Mul", ["x", gate], "y")  # pools one tensor, scales another
    res = fuse_and_compare(b.model(out), "portable")
    (d,) = next(p for p in res.passes if p.name == "squeeze-excitation").declined
    assert res.found == [] and "not the tensor it scales" in d.reason


def test_eca_expand_dropped_and_keepdims0_pool():
    """ECA: mean_hw (keepdims=0) -> Reshape (N, 1, C) -> Conv1d -> Sigmoid -> Reshape -> Expand(Shape(x)) -> Mul."""
    b = Builder()
    x = b.conv("conv", "x", C, C)
    b.inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
    pooled = b.op("ReduceMean", [x, "axes"], "pool", keepdims=0)
    b.inits += [numpy_helper.from_array(np.array([-1, 1, C], np.int64), "to_ncl"),
                numpy_helper.from_array(np.array([-1, C, 1, 1], np.int64), "to_nchw")]
    v = b.op("Reshape", [pooled, "to_ncl"], "view")
    b.inits.append(numpy_helper.from_array(b.rng.standard_normal((1, 1, 3)).astype(np.float32), "eca.w"))
    b.nodes.append(helper.make_node("Conv", [v, "eca.w"], ["eca"], name="eca", kernel_shape=[3], pads=[1, 1]))
    gate = b.op("Reshape", [b.op("Sigmoid", ["eca"], "sig"), "to_nchw"], "gate")
    shape = b.op("Shape", [x], "shape")
    out = b.op("Mul", [x, b.op("Expand", [gate, shape], "expand")], "y")
    res = fuse_and_compare(b.model(out), "onnxruntime")
    counts = res.counts()
    assert counts["drop-broadcast-expand"] == 1 and counts["reduce-mean-to-pool"] == 1
    assert counts["fuse-conv-sigmoid"] == 1
    assert "Expand" not in res.ops_after and "Shape" not in res.ops_after  # dead plumbing gone
    assert res.found[0].detail.startswith("ECA (Conv1d over channels, kernel 3)")


def test_expand_that_sets_the_shape_stays():
    b = Builder()
    b.inits.append(numpy_helper.from_array(np.array([1, C, H, H], np.int64), "shape"))
    small = b.op("GlobalAveragePool", [b.conv("conv", "x", C, C)], "pool")
    out = b.op("Add", [b.op("Expand", [small, "shape"], "expand"), b.const("one", np.ones((1, C, 1, 1)))], "y")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, H, H])
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, C, H, H])
    m = helper.make_model(helper.make_graph(b.nodes, "t", [x], [y], b.inits), opset_imports=[helper.make_opsetid("", 18)])
    res = fuse_model(m, "portable")
    (d,) = next(p for p in res.passes if p.name == "drop-broadcast-expand").declined
    assert "the Expand may set its output shape" in d.reason and res.ops_after["Expand"] == 1


def test_reduce_mean_that_is_not_a_spatial_pool_stays():
    b = Builder()
    b.inits.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    out = b.op("ReduceMean", [b.conv("conv", "x", C, C), "axes"], "y", keepdims=1)
    m = b.model(out, out_channels=1)
    res = fuse_model(m, "portable")
    (d,) = next(p for p in res.passes if p.name == "reduce-mean-to-pool").declined
    assert "reduces axes [1], not H and W" in d.reason


def test_pre_activation_block():
    """ResNet-V2: Add -> BN -> Relu -> Conv ... Conv -> Add(shortcut) with no Relu after the Add."""
    b = Builder()
    pre = b.op("Relu", [b.bn("bn_pre", "x", C)], "pre")
    main = b.conv("conv2", b.op("Relu", [b.conv("conv1", pre, C, C)], "r1"), C, C)
    out = b.op("Add", [main, "x"], "y")
    res = fuse_and_compare(b.model(out), "onnxruntime")
    counts = res.counts()
    assert counts["fuse-conv-add"] == 1 and counts["fuse-conv-relu"] == 1 and counts["fold-batchnorm"] == 0
    (d,) = next(p for p in res.passes if p.name == "fold-batchnorm").declined
    assert "pre-activation" in d.reason and "stays BatchNormalization" in d.reason
    assert res.ops_after == {"BatchNormalization": 1, "Relu": 1, "com.microsoft:FusedConv": 2}
    (rw,) = [r for r in res.rewrites if r.pass_name == "fuse-conv-add"]
    assert rw.detail == "no activation; Z = x from graph input"


@pytest.mark.parametrize("data_prop", [False, True])
def test_infer_shapes_without_weights_gives_onnx_result(r18_bundle, data_prop):
    """The light shape inference (weights taken out for the call) returns exactly what ONNX's own returns (with
    ``weights=False``: the same shapes and types, no weights), and leaves the model as it was, on a real exported
    graph whose Reshape reads a small shape initializer."""
    from resnet_deploy.onnx_graph import LIGHT_BYTES, infer_shapes

    for name in ("model.onnx", "model.onnxruntime.onnx"):
        m = onnx.load(str(r18_bundle / name))
        del m.graph.value_info[:]
        assert sum(len(t.raw_data) >= LIGHT_BYTES for t in m.graph.initializer) > 10
        before = m.SerializeToString()
        expected = onnx.shape_inference.infer_shapes(m, data_prop=data_prop)
        got = infer_shapes(m, data_prop=data_prop)
        assert len(got.graph.value_info) > 0 or name != "model.onnx"  # contrib ops (FusedConv) stop inference
        assert got.SerializeToString() == expected.SerializeToString()
        shapes_only = infer_shapes(m, data_prop=data_prop, weights=False)
        assert [v.SerializeToString() for v in shapes_only.graph.value_info] == \
            [v.SerializeToString() for v in expected.graph.value_info]
        assert shapes_only.ByteSize() < expected.ByteSize() // 10  # the weights stayed out
        assert m.SerializeToString() == before


def test_expose_outputs_adds_typed_intermediates_and_runs_them():
    """``onnx_graph.expose_outputs``: intermediate tensors become outputs with their inferred types (a copy unless
    in place; outputs already there and untyped names left out), and ``graph_outputs`` (the ONNX Runtime backend) reads them all."""
    from resnet_deploy.onnx_graph import expose_outputs, tensor_types

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["a"], name="relu"),
                           helper.make_node("Cast", ["a"], ["i"], to=TensorProto.INT64, name="cast"),
                           helper.make_node("Neg", ["a"], ["y"], name="neg")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", C])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    assert tensor_types(m) == {"x": TensorProto.FLOAT, "a": TensorProto.FLOAT, "i": TensorProto.INT64,
                               "y": TensorProto.FLOAT}
    before = m.SerializeToString()
    exposed = expose_outputs(m, ["i", "y", "a", "nowhere", "a"])
    assert m.SerializeToString() == before
    assert [(o.name, o.type.tensor_type.elem_type) for o in exposed.graph.output] == \
        [("y", TensorProto.FLOAT), ("i", TensorProto.INT64), ("a", TensorProto.FLOAT)]
    assert expose_outputs(m, ["a"], {"a": TensorProto.FLOAT}, in_place=True) is m and len(m.graph.output) == 2
    x = np.random.default_rng(0).standard_normal((5, C)).astype(np.float32)
    batches = list(graph_outputs(exposed, x, batch=2))
    assert [len(b["y"]) for b in batches] == [2, 2, 1]
    got = {k: np.concatenate([b[k] for b in batches]) for k in ("y", "i", "a")}
    np.testing.assert_array_equal(got["a"], np.maximum(x, 0))
    np.testing.assert_array_equal(got["y"], -np.maximum(x, 0))
    assert got["i"].dtype == np.int64
