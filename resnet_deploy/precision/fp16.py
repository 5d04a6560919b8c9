"""FP16 graph: weights and activations in half precision, fp32 I/O through Casts unless asked otherwise."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..onnx_graph import toposort

log = logging.getLogger(__name__)

# Ops ONNX Runtime's converter leaves in fp32 (no fp16 kernel or numerically unsafe), plus ours: none of a
# ResNet's ops are here, but a custom head may bring some, and the manifest lists every node that stayed fp32.
KEEP_FP32_OPS = ("Softmax", "LogSoftmax")


@dataclass
class Fp16Graph:
    model: object
    fp16_io: bool
    kept_fp32: dict[str, str]  # node name -> op type


def convert(model, fp16_io: bool = False) -> Fp16Graph:
    """An fp16 copy of ``model`` that passes the full ONNX checker (nodes topologically sorted)."""
    import copy

    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    block = list(DEFAULT_OP_BLOCK_LIST) + list(KEEP_FP32_OPS)
    out = convert_float_to_float16(copy.deepcopy(model), keep_io_types=not fp16_io, op_block_list=block,
                                   disable_shape_infer=False)
    # the converter appends its Casts out of order: the checker rejects the graph until it is sorted
    toposort(out)
    kept = {n.name: n.op_type for n in out.graph.node if n.op_type in block}
    return Fp16Graph(out, fp16_io, kept)


def save(graph: Fp16Graph, path: Path) -> None:
    import onnx

    onnx.save(graph.model, str(path))
    onnx.checker.check_model(str(path), full_check=True)
