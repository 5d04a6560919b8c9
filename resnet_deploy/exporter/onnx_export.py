"""Export a PyTorch model to ONNX with the maintained (dynamo) exporter, then check and annotate the graph."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..onnx_graph import EXTERNAL_DATA_THRESHOLD, save_model

log = logging.getLogger(__name__)

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 18
MIN_OPSET = 18  # the dynamo exporter's floor: asking for less silently yields 18
MAX_OPSET = 23


@dataclass
class ExportResult:
    path: Path
    opset: int
    seconds: float
    external_data: bool
    node_count: int
    op_counts: dict
    proto: object = None  # the graph as written (weights included), for the next stage; None with external data


def check_opset(opset: int) -> int:
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise UserError(f"--opset {opset} is not supported: choose {MIN_OPSET}..{MAX_OPSET} "
                        f"(the maintained exporter's floor is {MIN_OPSET})")
    return int(opset)


def param_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def export_onnx(model, path: "str | Path", input_size: tuple[int, int], opset: int = DEFAULT_OPSET,
                external_data: bool | None = None, metadata: dict | None = None,
                save: "Callable[[object], None] | None" = None) -> ExportResult:
    """Export ``model`` to ``path`` with input ``input`` (N,3,H,W float32, dynamic N) and output ``logits``.

    Weights go into the one ``.onnx`` file unless they pass 2 GB or ``external_data`` is True. The result
    passes the full ONNX checker and strict shape inference; ``metadata`` becomes ONNX metadata props. ``save``
    writes the graph to ``path`` instead of ``onnx.save`` (a bundle records it as it writes); the graph is built in
    memory and written once (with external data, the exporter writes it and its weights file itself).
    """
    import onnx
    import torch

    path = Path(path)  # opset: checked by the caller (check_opset; the export request does it once)
    opset = int(opset)
    if external_data is None:
        external_data = param_bytes(model) > EXTERNAL_DATA_THRESHOLD * 0.9
    model = model.eval()
    # Batch 2, not 1: torch.export specialises a size-1 dimension, which would pin the batch.
    example = torch.randn(2, 3, *input_size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        program = torch.onnx.export(
            model, (example,), str(path) if external_data else None, dynamo=True, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), opset_version=opset,
            external_data=external_data, verbose=False,
        )
    seconds = time.perf_counter() - start
    if external_data:  # the exporter wrote the graph and its weights file; the graph gets the metadata
        release_weights(program)
        del program
        proto = onnx.load(str(path), load_external_data=False)
        if metadata:
            set_metadata(proto, metadata)
            save_model(proto, path, external_data)
    else:  # the same bytes the exporter would write (model_proto is what it serialises)
        proto = program.model_proto
        release_weights(program)
        del program
        if metadata:
            set_metadata(proto, metadata)
        (save or (lambda p: save_model(p, path)))(proto)
    check_model(path)
    ops: dict[str, int] = {}
    for node in proto.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    log.info("exported %s in %.1f s (%d nodes)", path.name, seconds, len(proto.graph.node))
    return ExportResult(path, opset, seconds, external_data, len(proto.graph.node), ops,
                        None if external_data else proto)


def release_weights(program) -> None:
    """Let the exporter's IR go of the model's weights: onnxscript's rewrite rules keep a reference to the last graph
    they matched, and through its initializers every parameter of the exported model stays alive (found with
    ``gc.get_referrers``). The proto already holds its own copy."""
    graph = getattr(getattr(program, "model", None), "graph", None)
    for value in list(getattr(graph, "initializers", {}).values()):
        value.const_value = None


def save_exported_program(model, path: "str | Path", input_size: tuple[int, int]) -> None:
    """Save the eager model as a ``torch.export`` program (``.pt2``, dynamic batch) so the bundle can run the
    eager reference later (benchmarks, accuracy gates) without the user's Python code."""
    import torch

    example = torch.randn(2, 3, *input_size)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.no_grad():
        program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def set_metadata(proto, metadata: dict) -> None:
    """Replace the model's metadata props; non-string values are stored as JSON."""
    keep = {p.key: p.value for p in proto.metadata_props if p.key not in metadata}
    del proto.metadata_props[:]
    for key, value in {**keep, **metadata}.items():
        entry = proto.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def check_model(path: "str | Path") -> None:
    """Full ONNX checker plus strict shape inference; a failure here is a bug in the export."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)
    onnx.shape_inference.infer_shapes_path(str(path), str(path) + ".inferred", strict_mode=True, data_prop=True)
    Path(str(path) + ".inferred").unlink(missing_ok=True)
