"""A Triton Inference Server model repository from a bundle: one model per backend (ONNX Runtime, TensorRT,
OpenVINO, or any backend of the table that declares how Triton serves it).

Each model gets ``<repo>/<name>/config.pbtxt`` and ``<repo>/<name>/1/`` with its files, which the backend table
chooses (``TritonServing.stage``). Input and output names, types and dims come from the bundle's ONNX graph (plans
and IRs are built from that graph, so they share them). When the bundle holds plans for several GPU compute
capabilities, the TensorRT model lists them all in ``cc_model_filenames`` and Triton loads the one that matches
the GPU it runs on. The repository is written into a temporary folder and renamed into place, so a failure leaves
nothing behind.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..backends import table
from ..bundle import find_artifacts, read_manifest, verified
from ..errors import UserError, unknown
from ..files import StagedDir, check_output
from ..layout import Kind
from ..trt.plan import normalize_cc  # noqa: F401  (re-exported: the form cc_model_filenames keys take)
from ..types import Precision

log = logging.getLogger(__name__)

DEVICES = ("gpu", "cpu")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# ONNX TensorProto element types -> Triton DataType names.
ONNX_TO_TRITON = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 5: "TYPE_INT16", 6: "TYPE_INT32",
                  7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 16: "TYPE_BF16"}


@dataclass
class TritonModel:
    name: str
    platform: str
    config: Path
    files: list[str]
    compute_capabilities: list[str] = field(default_factory=list)


@dataclass
class TritonResult:
    repo: Path
    models: list[TritonModel]
    note: str | None = None  # how the backend and precision were chosen, when the bundle's recommendation did
    device: str = "gpu"
    device_note: str | None = None  # why, when the device was not given


@dataclass
class _Tensor:
    name: str
    data_type: str
    dims: list[int]  # without the batch dimension when the model batches


def check_model_name(name: str) -> str:
    """A Triton model name is a folder name: letters, digits, '_', '.', '-' (not starting with '.' or '-')."""
    if not NAME_RE.fullmatch(name or ""):
        raise UserError(f"bad model name {name!r}: use letters, digits, '_', '.', '-' (starting with a letter or "
                        "digit, at most 128 characters)")
    return name


def default_model_name(arch: str) -> str:
    """A valid model name from a bundle's arch: ``timm/resnet50d`` -> ``timm-resnet50d``, a ``--model`` spec
    ``path/to/my_resnet.py:build`` -> ``my_resnet.py-build``."""
    if ":" in arch:
        arch = arch.replace("\\", "/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", arch).strip(".-")[:128] or "resnet"


def _graph_io(onnx_path: Path, batched: bool) -> tuple[_Tensor, _Tensor]:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]

    def tensor(vi) -> _Tensor:
        t = vi.type.tensor_type
        elem = t.elem_type
        if elem not in ONNX_TO_TRITON:
            raise UserError(f"{onnx_path.name}: tensor {vi.name!r} has ONNX type {elem}, which has no Triton type")
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
        return _Tensor(vi.name, ONNX_TO_TRITON[elem], dims[1:] if batched else dims)

    return tensor(inputs[0]), tensor(graph.output[0])


def _config_text(name: str, serving: table.TritonServing, max_batch: int, inp: _Tensor, out: _Tensor,
                 instances: int, kind: str, dynamic_batching: bool, preferred: list[int], queue_delay_us: int,
                 cc_files: dict[str, str], parameters: dict | None = None, model_filename: str | None = None) -> str:
    q = json.dumps  # a JSON string literal is a valid protobuf text-format string for these names

    def tensor_block(t: _Tensor) -> str:
        return f"  {{\n    name: {q(t.name)}\n    data_type: {t.data_type}\n    dims: [ {', '.join(map(str, t.dims))} ]\n  }}"

    declare = f"{'backend' if serving.as_backend else 'platform'}: {q(serving.platform)}"
    lines = [f"name: {q(name)}", declare, f"max_batch_size: {max_batch}",
             f"input [\n{tensor_block(inp)}\n]", f"output [\n{tensor_block(out)}\n]",
             f"instance_group [\n  {{\n    count: {instances}\n    kind: {kind}\n  }}\n]"]
    if model_filename:
        lines.append(f"default_model_filename: {q(model_filename)}")
    if dynamic_batching:
        sizes = f"\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]" if preferred else ""
        lines.append(f"dynamic_batching {{{sizes}\n  max_queue_delay_microseconds: {queue_delay_us}\n}}")
    for cc, fname in sorted(cc_files.items()):
        lines.append(f"cc_model_filenames [\n  {{\n    key: {q(cc)}\n    value: {q(fname)}\n  }}\n]")
    for key, value in (parameters or {}).items():
        lines.append(f"parameters {{\n  key: {q(key)}\n  value {{\n    string_value: {q(value)}\n  }}\n}}")
    return "\n".join(lines) + "\n"


def recommended_choice(manifest: dict, device: str) -> tuple[list[str], str, str] | None:
    """(backends, precision, why) from the bundle's ``recommended`` entry for the device (throughput first: a
    server batches), None when ``bench`` recorded none or its backend has no Triton model here."""
    entry = manifest.get("recommended", {}).get(device)
    pick = (entry or {}).get("throughput") or (entry or {}).get("latency")
    if not pick or pick.get("backend") not in table.names():
        return None
    served_by = table.get(pick["backend"]).served_by
    if served_by is None:
        return None
    why = (f"recommended for {device} by bench on {entry.get('cpu')}: {pick['backend']} {pick['precision']} "
           f"({pick['artifact']})")
    precision, note = table.get(served_by).triton.serve_precision(pick["precision"])
    return [served_by], precision, why + (f"; {note}" if note else "")


def default_device(backends: "list[str] | None") -> tuple[str, str]:
    """The device when none is given, and why: ``gpu`` when a requested model runs on GPUs only or torch sees a CUDA
    GPU here, else ``cpu`` (a repository written on a CPU machine serves CPUs unless told otherwise)."""
    servable = {s.name: s.triton for s in table.triton_backends()}
    for b in backends or ():
        serving = servable.get(b)  # an unknown name is refused later, with the choices
        if serving is not None and "cpu" not in serving.devices:
            return "gpu", f"{serving.label} models run on GPUs only"
    if table.cuda_available():
        return "gpu", "torch sees a CUDA GPU here"
    return "cpu", "no CUDA GPU is visible here; pass --device gpu for a GPU server"


def write_triton_repo(bundle: "str | Path", repo: "str | Path", *, name: str | None = None,
                      backends: "list[str] | None" = None, precision: "str | Precision | None" = None,
                      max_batch_size: int = 8, dynamic_batching: bool = False,
                      preferred_batch_sizes: "list[int] | None" = None, max_queue_delay_us: int = 100,
                      instances: int = 1, device: str | None = None, force: bool = False) -> TritonResult:
    """Write a Triton model repository for ``bundle`` into ``repo``.

    ``backends``: backends of the table with a Triton model (``onnxruntime``, ``tensorrt``, ``openvino`` ...);
    ``precision``: fp32, fp16, int8. With neither given, the bundle's ``recommended`` entry for ``device``
    (written by ``bench``) decides; without one, fp32 on every backend whose Triton model is written by default on
    ``device`` and whose artifact the bundle has (ONNX Runtime, plus TensorRT on GPUs). Models are named
    ``<name>_<suffix>`` (``_onnx``, ``_trt``, ``_ov``; ``name`` defaults to the bundle's arch). ``device`` None:
    ``default_device`` (gpu where a GPU is visible or a requested model needs one, else cpu). Raises
    ``UserError`` for a bundle without the needed artifact, an existing non-empty repo without ``force``, a bad
    name or inconsistent batching options.
    """
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    note = device_note = None
    if device is None:
        device, device_note = default_device(backends)
    if backends is None and precision is None and device in DEVICES:
        choice = recommended_choice(manifest, device)
        if choice is not None:
            backends, precision, note = choice
    prec = Precision.parse(precision or "fp32", "precision")
    base = check_model_name(name or default_model_name(str(manifest.get("arch") or "resnet")))
    if device not in DEVICES:
        raise unknown("device", device, DEVICES)
    if instances < 1:
        raise UserError(f"--instances {instances} must be >= 1")
    if max_batch_size < 0:
        raise UserError(f"--max-batch-size {max_batch_size} must be >= 0")
    preferred = sorted(set(preferred_batch_sizes or []))
    if preferred and not dynamic_batching:
        raise UserError("--preferred-batch-sizes needs --dynamic-batching")
    if dynamic_batching and max_batch_size == 0:
        raise UserError("--dynamic-batching needs --max-batch-size >= 1")
    bad = [b for b in preferred if b < 1 or b > max_batch_size]
    if bad:
        raise UserError(f"preferred batch sizes {bad} must be between 1 and --max-batch-size {max_batch_size}")

    servable = {s.name: s for s in table.triton_backends()}
    if backends is None:
        backends = [s.name for s in servable.values()
                    if device in s.triton.default_on and s.triton.artifacts(manifest, prec)]
        backends = backends or ["onnxruntime"]
    for b in backends:
        if b not in servable:
            raise unknown("backend", b, servable)
    onnx_names = [n for t in ("portable", "onnxruntime", "tensorrt")
                  for n in find_artifacts(manifest, Kind.ONNX, str(prec), t)]
    if not onnx_names:
        have = ", ".join(find_artifacts(manifest, "onnx")) or "none"
        raise UserError(f"bundle {str(bundle)!r} has no {prec} ONNX model (it has: {have}): "
                        f"run the stage that writes it first")
    staged_files = {}
    for b in backends:
        serving = servable[b].triton
        if device not in serving.devices:
            where = " or ".join(f"{d.upper()}s" for d in serving.devices)
            raise UserError(f"{serving.label} models run on {where} only: drop --device {device} or use "
                            "--backend onnxruntime")
        staged_files[b] = serving.stage(bundle, manifest, prec, dynamic_batching or instances > 1)

    batch_dim = (manifest.get("input", {}).get("shape") or [-1])[0]
    if batch_dim not in (-1, None) and max_batch_size > 0:
        raise UserError(f"the model has a fixed batch of {batch_dim}: use --max-batch-size 0")
    batched = max_batch_size > 0
    onnx_file = onnx_names[0]
    check_output(repo, force, "--repo")  # before reading anything big
    inp, out = _graph_io(verified(bundle, manifest, onnx_file), batched)
    for t in (inp, out):
        if any(d == 0 for d in t.dims) or (not batched and any(d < 0 for d in t.dims)):
            raise UserError(f"{onnx_file}: tensor {t.name!r} has dims {t.dims} Triton cannot serve as configured")

    models: list[TritonModel] = []
    with StagedDir(repo, force, "--repo") as staged:
        tmp, repo = staged.path, staged.out
        for backend in backends:
            serving, files = servable[backend].triton, staged_files[backend]
            model_name = check_model_name(f"{base}_{serving.suffix}")
            version = tmp / model_name / "1"
            version.mkdir(parents=True)
            for source, target in files.copies.items():
                # verified() checks a graph with its companions (external weights, IR weights) before any copy
                shutil.copy2(verified(bundle, manifest, source), version / target)
            kind = serving.kind or ("KIND_GPU" if device == "gpu" else "KIND_CPU")
            config = _config_text(model_name, serving, max_batch_size, inp, out, instances, kind, dynamic_batching,
                                  preferred, max_queue_delay_us, files.cc_files, files.parameters, files.model_filename)
            (tmp / model_name / "config.pbtxt").write_text(config)
            models.append(TritonModel(model_name, serving.platform, repo / model_name / "config.pbtxt",
                                      list(files.sources), sorted(files.cc_files)))
        (tmp / "resnet_deploy.json").write_text(json.dumps({
            "bundle": str(bundle.absolute()), "precision": str(prec), "models": [m.name for m in models],
            "chosen_by": note or "the command's options",
            "preprocessing": manifest.get("preprocessing"), "num_classes": manifest.get("num_classes"),
        }, indent=2) + "\n")
    log.info("wrote Triton repository %s with %s", repo, ", ".join(m.name for m in models))
    return TritonResult(repo, models, note, device, device_note)
