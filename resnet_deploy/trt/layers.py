"""Read TensorRT's engine-inspector JSON: which layers a plan holds and which ONNX nodes each fused layer came from.

The JSON is what ``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`` returns. Checked against:
- TensorRT "Engine Inspector" docs (10.x): top level ``{"Layers": [...], "Bindings": [...]}``; with
  ``ProfilingVerbosity.DETAILED`` each layer is an object (``Name``, ``LayerType``, ``Inputs``, ``Outputs``,
  ``Metadata``, tactic fields), otherwise (``LAYER_NAMES_ONLY``) a plain string.
- "Migrating IEngineInspector Usage from TensorRT 10.x to 11.x": ``Bindings`` (names) became ``I/O Tensors``
  (objects with ``Name``, ``IOMode``, ``DataType`` ...), and the tensor ``Format/Datatype`` field was split into
  ``Format`` and ``DataType``. Polygraphy (``backend/trt/util.py``) reads the 10.x layer tensors' ``Format/Datatype``.
- onnx-tensorrt ``processMetadata``: each layer's metadata is ``[ONNX Layer: <node name> | ...]``; a layer fused
  from several ONNX nodes joins their entries with ``\\x1f`` (unit separator).
Both schemas are read; unknown keys are ignored. Nothing here imports TensorRT.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^|\]\x1f]+?)\s*(?:\|[^\]]*)?\]")
_TOKEN = re.compile(r"[a-z0-9]+")
# Data-type words of the inspector's strings ("Float", "Half", "BFloat16", "UInt8", "Row major linear FP32", "Int8
# NC32HW", ...), matched as whole tokens: "uint8" is not int8 and "bfloat16" is not float.
_DTYPE_TOKENS = {
    "fp32": "fp32", "float": "fp32", "float32": "fp32",
    "fp16": "fp16", "half": "fp16", "float16": "fp16",
    "bf16": "bf16", "bfloat16": "bf16",
    "fp8": "fp8", "float8": "fp8", "e4m3": "fp8",
    "fp4": "fp4", "float4": "fp4", "e2m1": "fp4",
    "e8m0": "e8m0",
    "int4": "int4", "int8": "int8", "uint8": "uint8", "int32": "int32", "int64": "int64", "bool": "bool",
}
# Where a tensor entry keeps its type, most explicit first: "DataType" (11.x tensors, I/O entries) or "Datatype",
# then 10.x's combined "Format/Datatype", then a bare "Format" (its text may name the type). Keys compare
# case-insensitively, so "Format/DataType" is read too.
_DTYPE_KEYS = ("datatype", "format/datatype", "format")


@dataclass
class Layer:
    """One engine layer (a kernel, possibly fused from several ONNX nodes)."""

    name: str
    type: str = ""
    onnx_nodes: list[str] = field(default_factory=list)
    input_dtypes: list[str] = field(default_factory=list)
    output_dtypes: list[str] = field(default_factory=list)
    tactic: str = ""

    @property
    def precision(self) -> str:
        """The layer's output precision (its first output), '' when the JSON does not say."""
        return self.output_dtypes[0] if self.output_dtypes else ""


@dataclass
class LayerReport:
    """All layers of a plan plus its I/O tensor names; ``schema`` is '10.x' (Bindings) or '11.x' (I/O Tensors)."""

    layers: list[Layer]
    io_tensors: list[str]
    schema: str
    detailed: bool

    @property
    def onnx_nodes(self) -> set[str]:
        return {n for layer in self.layers for n in layer.onnx_nodes}

    @property
    def fused(self) -> list[Layer]:
        return [layer for layer in self.layers if len(layer.onnx_nodes) > 1]

    def summary(self) -> dict:
        """Counts recorded in the manifest and printed by ``inspect``."""
        return {
            "layers": len(self.layers),
            "fused_layers": len(self.fused),
            "onnx_nodes_in_layers": len(self.onnx_nodes),
            "layer_types": dict(Counter(layer.type for layer in self.layers if layer.type)),
            "precisions": dict(Counter(layer.precision for layer in self.layers if layer.precision)),
            "schema": self.schema,
            "detailed": self.detailed,
        }


def dtype_of(tensor: dict) -> str:
    """A tensor entry's data type as 'fp32', 'fp16', 'bf16', 'int8', 'uint8', ...; '' when no field names one."""
    fields = {str(k).lower(): v for k, v in tensor.items()}
    for key in _DTYPE_KEYS:
        for token in _TOKEN.findall(str(fields.get(key) or "").lower()):
            if token in _DTYPE_TOKENS:
                return _DTYPE_TOKENS[token]
    return ""


def onnx_nodes_of(metadata: str, name: str = "") -> list[str]:
    """ONNX node names a layer was built from: from ``Metadata``, else from a ``a + b`` fused layer name."""
    found = [m.strip() for m in _ONNX_LAYER.findall(metadata or "")]
    if found:
        return list(dict.fromkeys(found))
    if " + " in name:
        return [part.strip() for part in name.split(" + ") if part.strip()]
    return []


def parse_layer_info(data: "str | dict") -> LayerReport:
    """Parse engine-inspector JSON (text or already-loaded dict) of TensorRT 10.x or 11.x."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise UserError(f"engine layer information is not valid JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("Layers"), list):
        raise UserError("engine layer information has no 'Layers' list: not TensorRT engine-inspector JSON")
    layers, detailed = [], False
    for raw in data["Layers"]:
        if isinstance(raw, str):  # ProfilingVerbosity.LAYER_NAMES_ONLY
            layers.append(Layer(name=raw, onnx_nodes=onnx_nodes_of("", raw)))
            continue
        detailed = True
        name = str(raw.get("Name", ""))
        layers.append(Layer(
            name=name,
            type=str(raw.get("LayerType", "")),
            onnx_nodes=onnx_nodes_of(str(raw.get("Metadata", "")), name),
            input_dtypes=[dtype_of(t) for t in raw.get("Inputs", []) if isinstance(t, dict)],
            output_dtypes=[dtype_of(t) for t in raw.get("Outputs", []) if isinstance(t, dict)],
            tactic=str(raw.get("TacticName", raw.get("TacticValue", ""))),
        ))
    if "I/O Tensors" in data:
        io = [str(t.get("Name", "")) for t in data["I/O Tensors"] if isinstance(t, dict)]
        schema = "11.x"
    else:
        io = [str(b) for b in data.get("Bindings", [])]
        schema = "10.x"
    return LayerReport(layers, io, schema, detailed)


def load_layer_info(path: "str | Path") -> LayerReport:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"layer information {str(path)!r} does not exist")
    return parse_layer_info(path.read_text())


def format_layers(report: LayerReport, width: int = 110) -> list[str]:
    """Human-readable table: one line per layer, then the ONNX nodes it holds when it fused several."""
    lines = [f"{'#':>4}  {'type':<22} {'prec':<5} {'onnx':>4}  name"]
    for i, layer in enumerate(report.layers):
        name = layer.name if len(layer.name) <= width - 42 else layer.name[: width - 45] + "..."
        lines.append(f"{i:>4}  {layer.type[:22]:<22} {layer.precision[:5]:<5} {len(layer.onnx_nodes):>4}  {name}")
        if len(layer.onnx_nodes) > 1:
            for node in layer.onnx_nodes:
                lines.append(f"{'':>4}  {'':<22} {'':<5} {'':>4}    <- {node}")
    s = report.summary()
    lines.append(f"{s['layers']} layers, {s['fused_layers']} fused from several ONNX nodes, "
                 f"{s['onnx_nodes_in_layers']} ONNX nodes named; precisions {s['precisions'] or 'not recorded'}"
                 f"; inspector schema {s['schema']}{'' if s['detailed'] else ' (names only: build with detailed profiling verbosity)'}")
    return lines
