"""Q/DQ placement: TensorRT rules walked over every residual block of resnet50; ORT's U8S8 format and fusion."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from resnet_deploy import validate
from resnet_deploy.precision import calibrate as cal
from resnet_deploy.precision import quantize_ort, quantize_trt
from resnet_deploy.onnx_graph import Graph
from resnet_deploy.backends.onnxruntime import run_graph
from resnet_deploy.types import CalibMethod


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    """resnet50 (random weights, randomised BN) exported at 64x64, with minmax ranges from 8 random inputs."""
    import onnx
    import torch
    import torchvision

    from resnet_deploy.exporter.onnx_export import export_onnx

    torch.manual_seed(0)
    model = torchvision.models.resnet50(num_classes=10).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("r50") / "model.onnx"
    export_onnx(model, path, (64, 64))
    proto = onnx.load(str(path))
    data = np.random.default_rng(0).standard_normal((8, 3, 64, 64), dtype=np.float32)
    tensors = sorted(set(quantize_trt.tensors_to_calibrate(proto)) | set(quantize_ort.tensors_to_calibrate(proto)))
    ranges = cal.calibrate(path, tensors, data, "random", CalibMethod.MINMAX).ranges
    return proto, ranges, data


def _int_initializer(idx, name):
    return idx.array(name) if name in idx.inits else None


def _dq_source(idx, tensor):
    """For a DequantizeLinear output: (its QuantizeLinear or None, the DQ node)."""
    dq = idx.producer(tensor)
    assert dq is not None and dq.op_type == "DequantizeLinear", f"{tensor} is not dequantized"
    q = idx.producer(dq.input[0])
    return q, dq


def test_tensorrt_placement_every_residual_block(r50):
    import onnx

    proto, ranges, data = r50
    res = quantize_trt.quantize(proto, ranges)
    onnx.checker.check_model(res.model, full_check=True)
    g = res.model.graph
    idx = Graph(res.model)
    ops = Counter(n.op_type for n in g.node)
    assert ops["Conv"] == 53 and ops["Add"] == 16 and len(res.quantized) == 53

    # every Conv: activation through symmetric int8 Q/DQ (zero point 0), weights int8 per output channel
    for conv in (n for n in g.node if n.op_type == "Conv"):
        q, dq = _dq_source(idx, conv.input[0])
        assert q is not None and q.op_type == "QuantizeLinear"
        zp = _int_initializer(idx, q.input[2])
        assert zp.dtype == np.int8 and zp.item() == 0 and idx.array(q.input[1]).ndim == 0
        wq, wdq = _dq_source(idx, conv.input[1])
        assert wq is None, "weights are stored quantized (int8 initializer + DequantizeLinear)"
        w = idx.array(wdq.input[0])
        assert w.dtype == np.int8 and np.abs(w).max() <= 127
        assert idx.array(wdq.input[1]).shape == (w.shape[0],)
        assert not idx.array(wdq.input[2]).any()
        assert next(a.i for a in wdq.attribute if a.name == "axis") == 0
        # nothing between a Conv and its Relu / Add (TensorRT fuses them); only a downsample conv, which is the
        # shortcut of its block, is read through Q/DQ, and only by the Add
        for reader in idx.consumers[conv.output[0]]:
            if reader.op_type == "QuantizeLinear":
                (dq,) = idx.consumers[reader.output[0]]
                assert [n.op_type for n in idx.consumers[dq.output[0]]] == ["Add"]
            else:
                assert reader.op_type in ("Relu", "Add"), reader.op_type

    downsample = 0
    for add in (n for n in g.node if n.op_type == "Add"):
        kinds = [idx.producer(i).op_type for i in add.input]
        assert sorted(kinds) == ["Conv", "DequantizeLinear"], f"{add.name}: {kinds}"
        main = add.input[kinds.index("Conv")]
        short = add.input[kinds.index("DequantizeLinear")]
        assert len(idx.consumers[main]) == 1, "the conv branch feeds only its Add"
        q, _ = _dq_source(idx, short)
        assert _int_initializer(idx, q.input[2]).item() == 0
        src = idx.producer(q.input[0])
        assert src.op_type in ("Relu", "MaxPool", "Conv"), src.op_type
        if src.op_type == "Conv":
            downsample += 1  # the downsample conv: the shortcut, so the main conv3/conv2 is the one fused
            assert idx.is_ancestor(src.input[0].replace("_dequantized", ""),
                                   idx.producer(main).input[0].replace("_dequantized", ""))
        (relu,) = idx.consumers[add.output[0]]
        assert relu.op_type == "Relu", "Add feeds its Relu directly"
    assert downsample == 4

    # numerically sane: runs in ONNX Runtime and follows the fp32 graph
    ref = run_graph(proto, data)
    got = run_graph(res.model, data)
    assert validate.compare(ref, got).cosine > 0.99


def test_onnxruntime_u8s8_fuses_to_qlinear_ops(r50, tmp_path):
    import onnx
    import onnxruntime as ort

    proto, ranges, data = r50
    res = quantize_ort.quantize(proto, ranges)
    onnx.checker.check_model(res.model, full_check=True)
    idx = Graph(res.model)
    for q in (n for n in res.model.graph.node if n.op_type == "QuantizeLinear"):
        assert idx.array(q.input[2]).dtype == np.uint8, "activations are uint8"
    for conv in (n for n in res.model.graph.node if n.op_type == "Conv"):
        _, wdq = _dq_source(idx, conv.input[1])
        assert idx.array(wdq.input[0]).dtype == np.int8
        assert idx.array(wdq.input[1]).shape[0] == idx.array(wdq.input[0]).shape[0]
        _, bdq = _dq_source(idx, conv.input[2])
        assert idx.array(bdq.input[0]).dtype == np.int32
    path = tmp_path / "q.onnx"
    onnx.save(res.model, str(path))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    ops = Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)
    assert ops["QLinearConv"] == 53 and ops["Conv"] == 0, ops
    assert ops["QLinearAdd"] == 16, ops
    assert validate.compare(run_graph(proto, data), run_graph(res.model, data)).cosine > 0.99


def test_excluded_layers_stay_float(r50):
    proto, ranges, _ = r50
    first = next(n.name for n in proto.graph.node if n.op_type == "Conv")
    for mod in (quantize_trt, quantize_ort):
        res = mod.quantize(proto, ranges, {first})
        idx = Graph(res.model)
        conv = next(n for n in res.model.graph.node if n.name == first)
        assert idx.producer(conv.input[0]) is None or idx.producer(conv.input[0]).op_type != "DequantizeLinear"
        assert conv.input[1] in idx.inits and idx.array(conv.input[1]).dtype == np.float32
        assert first in res.kept and len(res.quantized) == 52
