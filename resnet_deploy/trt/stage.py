"""The build stage: TensorRT plans from the bundle's ONNX graphs, with their layer JSON, manifest entries and accuracy.

Everything here is plain Python (option parsing, profile shapes, compatibility checks, bundle bookkeeping) and
runs without TensorRT; the TensorRT calls themselves live in ``backends/tensorrt.py``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import validate
from ..bundle import BundleUpdate, file_entry, find_artifacts, locate, read_manifest, write_json_atomic
from ..errors import CheckFailed, UserError
from ..files import write_file_no_replace
from ..progress import step
from ..types import HardwareCompat, Precision, Target
from .layers import parse_layer_info
from .plan import layers_name, sidecar_path
from .profile import DEFAULT_BATCH, BatchProfile

log = logging.getLogger(__name__)
# Accuracy bar of a plan against eager, per precision: (min cosine, min top-1 agreement). fp32 is the export's
# own bar; fp16 / int8 bars are loose sanity bars (int8 accuracy proper is measured on labelled images).
ACCURACY_BARS = {"fp32": (validate.FP32_MIN_COSINE, 1.0), "fp16": (0.9999, 0.99), "int8": (0.98, 0.75)}
HARD_FAIL = ("fp32", "fp16")  # an int8 plan below its sanity bar is recorded and warned about, not refused


@dataclass
class BuildOptions:
    """Builder settings (the ``build`` command's options)."""

    batch: BatchProfile = field(default_factory=lambda: BatchProfile.parse(DEFAULT_BATCH))
    workspace_mib: int | None = None
    timing_cache: Path | None = None
    opt_level: int = 3
    hardware_compat: HardwareCompat = HardwareCompat.NONE
    version_compat: bool = False
    tf32: bool = False
    precisions: list[Precision] | None = None

    def __post_init__(self) -> None:
        self.batch = BatchProfile.parse(self.batch)
        self.hardware_compat = HardwareCompat.parse(self.hardware_compat, "--hardware-compat")
        if not 0 <= int(self.opt_level) <= 5:
            raise UserError(f"--opt-level {self.opt_level} is invalid: choose 0..5 (TensorRT's default is 3)")
        if self.workspace_mib is not None and int(self.workspace_mib) < 1:
            raise UserError(f"--workspace {self.workspace_mib} is invalid: give MiB >= 1")
        if self.timing_cache is not None:
            self.timing_cache = Path(self.timing_cache).expanduser()
            if self.timing_cache.is_dir():
                raise UserError(f"--timing-cache {str(self.timing_cache)!r} is a folder: give a file")
            if not self.timing_cache.parent.is_dir():
                raise UserError(f"--timing-cache {str(self.timing_cache)!r}: folder "
                                f"{str(self.timing_cache.parent)!r} does not exist")
        if isinstance(self.precisions, str):
            self.precisions = Precision.parse_list(self.precisions, "precision")

    def to_dict(self) -> dict:
        return {"batch": str(self.batch), "workspace_mib": self.workspace_mib, "opt_level": self.opt_level,
                "hardware_compat": str(self.hardware_compat), "version_compat": self.version_compat,
                "tf32": self.tf32, "timing_cache": str(self.timing_cache) if self.timing_cache else None,
                "profiling_verbosity": "detailed", "strongly_typed": True}


@dataclass
class PlanResult:
    plan: str
    precision: str
    info: dict
    accuracy: dict | None


@dataclass
class EngineBuildResult:
    """What the build stage did: plans written (with manifest info) or why it skipped."""

    plans: list[PlanResult] = field(default_factory=list)
    skipped: str | None = None
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- which graphs, which precision

def graphs_to_build(manifest: dict, precisions: list[Precision] | None = None) -> list[tuple[str, str]]:
    """(precision, onnx file) per plan: portable or tensorrt-target ONNX graphs, tensorrt target preferred."""
    chosen: dict[str, str] = {}
    for target in (Target.PORTABLE, Target.TENSORRT):  # later wins: a tensorrt-shaped graph beats a portable one
        for prec in Precision:
            names = find_artifacts(manifest, kind="onnx", precision=prec, target=target)
            if names:
                chosen[str(prec)] = names[0]
    out = [(p, chosen[p]) for p in (str(x) for x in Precision) if p in chosen]
    if precisions:
        wanted = [str(p) for p in precisions]
        missing = [p for p in wanted if p not in chosen]
        if missing:
            have = ", ".join(chosen) or "none"
            raise UserError(f"the bundle has no {'/'.join(missing)} ONNX graph for TensorRT (has: {have}); "
                            "create it with the precision stage first")
        out = [(p, n) for p, n in out if p in wanted]
    if not out:
        raise UserError("the bundle has no ONNX graph TensorRT can build (kind onnx, target portable or tensorrt)")
    return out


def detect_precision(onnx_path: "str | Path") -> Precision:
    """Precision of a lone ONNX graph: int8 when it has Q/DQ nodes, fp16 when it holds fp16 weights, else fp32."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    ops = {n.op_type for n in proto.graph.node}
    if {"QuantizeLinear", "DequantizeLinear"} & ops:
        return Precision.INT8
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer):
        return Precision.FP16
    return Precision.FP32


def onnx_input(onnx_path: "str | Path") -> tuple[str, list, int]:
    """Name and shape of the graph's first input (dynamic dims as -1) and its node count."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in proto.graph.initializer}
    inp = next(i for i in proto.graph.input if i.name not in inits)
    shape = [d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim]
    return inp.name, shape, len(proto.graph.node)


# ---------------------------------------------------------------- the stage

def accuracy_inputs(shape: list, n: int, images=None, pre=None, seed: int = 0) -> tuple[np.ndarray, str]:
    """``n`` inputs: real images (cycled to n) when given, else seeded standard-normal data."""
    if images is not None and pre is not None:
        from ..preprocess import load_images

        loaded = load_images(images, pre, what="--images")
        imgs = loaded.data
        reps = -(-n // len(imgs))
        return np.concatenate([imgs] * reps)[:n], f"{loaded.describe(images)} (cycled to {n})"
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape[1:]), dtype=np.float32), f"random:{n} seed={seed}"


def plan_accuracy(reference, plan_runner, data: np.ndarray, profile: BatchProfile, precision: str) -> dict:
    """Plan vs reference at the profile's min, opt and max batch (TensorRT 11.1 once broke some batch sizes)."""
    per_batch = {}
    for b in sorted({profile.min, profile.opt, profile.max}):
        per_batch[b] = validate.compare(reference.infer(data[:b]), plan_runner.infer(data[:b]),
                                        candidate_name="plan")
    overall = validate.merge(list(per_batch.values()))
    min_cos, min_agree = ACCURACY_BARS[precision]
    return {"batches": sorted(per_batch), **overall.to_dict(),
            "per_batch": {str(b): p.to_dict() for b, p in per_batch.items()},
            "bar": {"min_cosine": min_cos, "min_top1_agreement": min_agree},
            "passed": overall.passes(min_cos, min_agree)}


def _write_timing_cache(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def build_one(onnx_path: Path, out_dir: Path, plan_name: str, precision: str, options: BuildOptions) -> dict:
    """Build one plan and its layer JSON into ``out_dir``; returns the plan's build record (no accuracy yet)."""
    from ..backends import tensorrt as trt_backend

    input_name, input_shape, onnx_nodes = onnx_input(onnx_path)
    shapes = options.batch.shapes(input_shape)
    cache_in = options.timing_cache.read_bytes() if options.timing_cache and options.timing_cache.is_file() else None
    with step(f"Building TensorRT plan {plan_name} ({precision}, batch {options.batch})"):
        built = trt_backend.build_plan(onnx_path, input_name, shapes, options, timing_cache=cache_in)
    (out_dir / plan_name).write_bytes(built.plan)
    (out_dir / layers_name(plan_name)).write_text(built.layers_json)
    if options.timing_cache is not None and built.timing_cache:
        _write_timing_cache(options.timing_cache, built.timing_cache)
    report = parse_layer_info(built.layers_json)
    return {
        **built.env, "precision": precision, "source_onnx": onnx_path.name, "input": input_name,
        "profile": {"batch": str(options.batch), **shapes}, "build_seconds": round(built.seconds, 2),
        "layer_count": built.num_layers, "onnx_nodes": onnx_nodes, "layers_file": layers_name(plan_name),
        "layer_summary": report.summary(), "timing_cache": {"file": str(options.timing_cache) if options.timing_cache
                                                             else None, "reused": cache_in is not None},
        "hardware_compat": str(options.hardware_compat), "version_compat": options.version_compat,
        "options": options.to_dict(),
    }


def _check_accuracy(name: str, precision: str, acc: dict, warnings: list[str]) -> None:
    """fp32/fp16 plans below their bar, and any plan with NaN/Inf, are refused; an int8 plan below its sanity
    bar is recorded and warned about."""
    parity = validate.Parity.from_dict(acc)
    if acc["passed"]:
        return
    msg = validate.failure_message(f"{name} vs eager at batches {acc['batches']}", parity,
                                   acc["bar"]["min_cosine"], acc["bar"]["min_top1_agreement"])
    if precision in HARD_FAIL or parity.nonfinite:
        raise CheckFailed(msg + "; nothing written")
    warnings.append(msg)


def build_engines(bundle, options: BuildOptions, images=None, seed: int = 0) -> EngineBuildResult:
    """The build stage on a ``BundleWriter`` / ``BundleUpdate``: one plan per buildable graph, checked vs eager.

    Writes ``model.<precision>.plan`` and ``model.<precision>.layers.json`` and records them in
    ``manifest["engines"]["plans"]`` and ``manifest["validation"]``.
    """
    from ..backends import tensorrt as trt_backend
    from ..backends.torch_eager import TorchRunner
    from ..onnx_export import load_exported_program
    from ..preprocess import Preprocessing

    graphs = graphs_to_build(bundle.manifest, options.precisions)
    if not bundle.force:
        existing = [f"model.{p}.plan" for p, _ in graphs if (bundle.out / f"model.{p}.plan").exists()]
        if existing:
            raise UserError(f"{', '.join(existing)} already exist in {str(bundle.out)!r}: pass --force to replace")
    manifest = bundle.manifest
    sources = {p: locate(bundle, n) for p, n in graphs}  # a missing or altered graph: one line, before anything
    eager_names = find_artifacts(manifest, kind="torch-exported-program")
    if not eager_names:
        raise UserError(f"bundle {str(bundle.out)!r} has no eager reference (model.pt2): re-export it")
    eager_path = locate(bundle, eager_names[0])
    trt_backend.require()  # one line (exit 2) before any work when TensorRT or the GPU is missing
    eager = load_exported_program(eager_path)
    pre = Preprocessing.from_dict(manifest["preprocessing"]) if manifest.get("preprocessing") else None
    data, desc = accuracy_inputs(manifest["input"]["shape"], options.batch.max, images, pre, seed)
    result = EngineBuildResult()
    engines = manifest.setdefault("engines", {})
    engines.update({"status": "built", "reason": None})
    plans = engines.setdefault("plans", {})
    device = "cpu"  # the exported eager program is traced on CPU; plans are few and small batches are cheap
    with TorchRunner(eager, device=device) as reference:
        for precision, _ in graphs:
            plan_name = f"model.{precision}.plan"
            info = build_one(sources[precision], bundle.path, plan_name, precision, options)
            with step(f"Checking {plan_name} vs eager at batches {options.batch}"):
                with trt_backend.TensorRTRunner(bundle.path / plan_name, build_info=info) as runner:
                    acc = plan_accuracy(reference, runner, data, options.batch, precision)
            acc.update({"backend": "tensorrt", "reference": f"torch eager fp32 ({device})", "inputs": desc})
            _check_accuracy(plan_name, precision, acc, result.warnings)
            bundle.add_file(plan_name, kind="tensorrt-plan", precision=precision, target="tensorrt",
                            compute_capability=info["compute_capability"])
            bundle.add_file(layers_name(plan_name), kind="tensorrt-layers", precision=precision)
            plans[plan_name] = info
            manifest.setdefault("validation", {})[plan_name] = acc
            result.plans.append(PlanResult(plan_name, precision, info, acc))
    manifest.setdefault("warnings", []).extend(result.warnings)
    return result


def skip_engines(manifest: dict, reason: str) -> EngineBuildResult:
    """Record plainly that plans were not built (``export --engine auto`` without a GPU / TensorRT)."""
    manifest["engines"] = {"status": "skipped", "reason": reason, "plans": {}}
    return EngineBuildResult(skipped=reason)


def build_bundle(bundle_dir: "str | Path", options: BuildOptions, images=None, force: bool = False,
                 seed: int = 0) -> EngineBuildResult:
    """``resnet-deploy build BUNDLE``: add plans to an existing bundle (atomically: all or nothing)."""
    read_manifest(bundle_dir)
    with BundleUpdate(bundle_dir, force=force) as b:
        return build_engines(b, options, images=images, seed=seed)


def build_onnx_file(onnx_path: "str | Path", out_dir: "str | Path | None", options: BuildOptions,
                    force: bool = False, seed: int = 0) -> EngineBuildResult:
    """``resnet-deploy build MODEL.onnx``: a plan beside the graph (or in ``out_dir``) with a ``.plan.json``
    build record; its accuracy reference is ONNX Runtime (CPU) on the same graph, there being no eager model."""
    from ..backends import tensorrt as trt_backend
    from ..backends.onnxruntime import OnnxRuntimeRunner

    onnx_path = Path(onnx_path)
    out = Path(out_dir) if out_dir else onnx_path.parent
    if not out.is_dir():
        raise UserError(f"--out {str(out)!r} is not a folder")
    precision = str(detect_precision(onnx_path))
    if options.precisions and precision not in [str(p) for p in options.precisions]:
        raise UserError(f"{onnx_path.name} is a {precision} graph, not {'/'.join(map(str, options.precisions))}")
    plan_name = f"{onnx_path.name.removesuffix('.onnx')}.{precision}.plan"
    targets = [out / plan_name, out / layers_name(plan_name), sidecar_path(out / plan_name)]
    if any(t.exists() for t in targets) and not force:
        raise UserError(f"{str(out / plan_name)!r} already exists: pass --force to replace it")
    trt_backend.require()
    import shutil
    import tempfile

    stage = Path(tempfile.mkdtemp(prefix=".build-", dir=out))
    try:
        info = build_one(onnx_path, stage, plan_name, precision, options)
        data, desc = accuracy_inputs(info["profile"]["max"], options.batch.max, seed=seed)
        with OnnxRuntimeRunner(onnx_path) as ref, trt_backend.TensorRTRunner(stage / plan_name, build_info=info) as r:
            acc = plan_accuracy(ref, r, data, options.batch, precision)
        acc.update({"backend": "tensorrt", "reference": "onnxruntime cpu (same graph)", "inputs": desc})
        warnings: list[str] = []
        _check_accuracy(plan_name, precision, acc, warnings)
        info["validation"] = acc
        info["files"] = {n: file_entry(stage / n) for n in (plan_name, layers_name(plan_name))}
        write_json_atomic(stage / sidecar_path(plan_name).name, info)
        for t in sorted(targets, key=lambda t: t.suffix == ".plan"):  # the plan last, after its records
            write_file_no_replace(stage / t.name, t, force, "plan file")
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return EngineBuildResult([PlanResult(plan_name, precision, info, acc)], warnings=warnings)


def engines_unavailable() -> str | None:
    """Why plans cannot be built here (no TensorRT, no GPU), None when they can."""
    from ..backends import tensorrt as trt_backend

    try:
        trt_backend.require()
    except UserError as e:
        return str(e)
    return None


def export_engines(bundle, mode, options: BuildOptions | None = None, images=None, seed: int = 0) -> EngineBuildResult:
    """The ``export --engine auto|always|never`` step: build plans, or record plainly why they were skipped."""
    from ..types import EngineMode

    mode = EngineMode.parse(mode, "--engine")
    if mode is EngineMode.NEVER:
        return skip_engines(bundle.manifest, "--engine never")
    if mode is EngineMode.AUTO:
        reason = engines_unavailable()
        if reason:
            log.info("TensorRT plans skipped: %s", reason)
            return skip_engines(bundle.manifest, reason)
    return build_engines(bundle, options or BuildOptions(), images=images, seed=seed)
