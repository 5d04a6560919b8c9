"""TensorRT check of the INT8 TensorRT-target graph: builds and fuses Conv+Add(+ReLU). GPU only; NOT run here.

Written against the documented TensorRT 10/11 Python API (strongly typed network, engine inspector); it has
never run on this project's CPU machines, which have no GPU and no TensorRT.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.gpu
trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (GPU machines only)")


def _build_engine_layers(onnx_path, input_shape):
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):  # TensorRT 10; 11 is always strongly typed
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(open(onnx_path, "rb").read()), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, (1, *input_shape), (4, *input_shape), (8, *input_shape))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "TensorRT failed to build the INT8 Q/DQ graph"
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    return [layer if isinstance(layer, str) else layer.get("Name", "") for layer in info["Layers"]]


def test_tensorrt_fuses_conv_add_relu(r18_bundle_copy, images_dir):
    import onnx
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU")
    from resnet_deploy.cli import main

    assert main(["quantize", str(r18_bundle_copy), "--int8", "--calib", str(images_dir), "--target", "tensorrt",
                 "--max-drop", "100"]) == 0
    path = r18_bundle_copy / "model.int8.tensorrt.onnx"
    model = onnx.load(str(path))
    layers = _build_engine_layers(str(path), tuple(d.dim_value for d in model.graph.input[0].type.tensor_type
                                                   .shape.dim[1:]))
    adds = [n.name for n in model.graph.node if n.op_type == "Add"]
    assert adds
    for add in adds:
        fused = [name for name in layers if add in name]
        assert fused, f"{add} not in any engine layer"
        assert any("Conv" in name for name in fused), f"{add} was not fused into its Conv: {fused}"
