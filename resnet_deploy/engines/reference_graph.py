"""What ONNX Runtime (CPU) runs as the reference of a plan built from a lone ONNX file (there is no eager model).

Mostly the graph itself. Not a bf16 graph: ONNX Runtime's CPU has no bf16 kernels (no bf16 Conv), so it runs the
graph's fp32 twin instead: every bf16 weight and constant widened to fp32 (exactly: each bf16 value is an fp32
value), every Cast to bf16 made a Cast to fp32, every bf16 tensor typed fp32. The twin computes what the bf16 graph
means with fp32 activations, as the eager fp32 model does for a bundle's bf16 plan (less the rounding of the weights,
which both sides share), so the plan is held to the same bf16 bar.
"""

from __future__ import annotations

import itertools
from pathlib import Path

FLOAT, BFLOAT16 = 1, 16  # onnx.TensorProto element types

SAME_GRAPH = "onnxruntime cpu (same graph)"
FP32_TWIN = "onnxruntime cpu (the same graph in fp32: ONNX Runtime's CPU has no bf16 kernels)"


def _widened(tensor):
    import numpy as np
    from onnx import numpy_helper

    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)


def fp32_twin(onnx_path: "str | Path") -> bytes:
    """The bf16 graph at ``onnx_path`` (external weights included) with every bf16 tensor in fp32, serialized."""
    import onnx

    model = onnx.load(str(onnx_path))
    g = model.graph
    for init in g.initializer:
        if init.data_type == BFLOAT16:
            init.CopyFrom(_widened(init))
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == BFLOAT16:
                a.i = FLOAT
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == BFLOAT16:  # Constant, ConstantOfShape
                a.t.CopyFrom(_widened(a.t))
    for vi in itertools.chain(g.input, g.output, g.value_info):
        if vi.type.tensor_type.elem_type == BFLOAT16:
            vi.type.tensor_type.elem_type = FLOAT
    return model.SerializeToString()


def reference_graph(onnx_path: "str | Path", precision: str) -> tuple["str | bytes", str]:
    """The model ONNX Runtime (CPU) runs as the reference of ``onnx_path``'s plan, and how to record it."""
    if str(precision) == "bf16":
        return fp32_twin(onnx_path), FP32_TWIN
    return str(onnx_path), SAME_GRAPH
