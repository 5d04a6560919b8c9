"""The build stage: TensorRT plans from the bundle's ONNX graphs, with their layer JSON, manifest entries and accuracy.

Everything here is plain Python (option parsing, profile shapes, compatibility checks, bundle bookkeeping) and
runs without TensorRT; the TensorRT calls themselves live in ``backends/tensorrt.py``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import layout, validate
from ..bundle import file_entry, find_artifacts, locate
from ..errors import CheckFailed, MissingDependency, UserError
from ..files import StagedFiles, write_bytes_atomic, write_json_atomic
from ..layout import Kind
from ..progress import step
from ..stages.reference import Reference
from ..types import EngineMode, HardwareCompat, Precision, Target
from ..trt.layers import parse_layer_info
from ..trt.profile import DEFAULT_BATCH, BatchProfile, onnx_input

log = logging.getLogger(__name__)

HARD_FAIL = ("fp32", "fp16", "bf16")  # an int8 plan below its sanity bar is recorded and warned about, not refused


NAME = "engines"


@dataclass(frozen=True)
class BuildOptions:
    """Builder settings (the ``build`` command's options), checked and parsed once, when made."""

    batch: BatchProfile = field(default_factory=lambda: BatchProfile.parse(DEFAULT_BATCH))
    workspace_mib: int | None = None
    timing_cache: Path | None = None
    opt_level: int = 3
    hardware_compat: HardwareCompat = HardwareCompat.NONE
    version_compat: bool = False
    tf32: bool = False
    precisions: list[Precision] | None = None

    def __post_init__(self) -> None:
        parsed = {"batch": BatchProfile.parse(self.batch),
                  "hardware_compat": HardwareCompat.parse(self.hardware_compat, "--hardware-compat")}
        if not 0 <= int(self.opt_level) <= 5:
            raise UserError(f"--opt-level {self.opt_level} is invalid: choose 0..5 (TensorRT's default is 3)")
        if self.workspace_mib is not None and int(self.workspace_mib) < 1:
            raise UserError(f"--workspace {self.workspace_mib} is invalid: give MiB >= 1")
        if self.timing_cache is not None:
            cache = parsed["timing_cache"] = Path(self.timing_cache).expanduser()
            if cache.is_dir():
                raise UserError(f"--timing-cache {str(cache)!r} is a folder: give a file")
            if not cache.parent.is_dir():
                raise UserError(f"--timing-cache {str(cache)!r}: folder {str(cache.parent)!r} does not exist")
        if isinstance(self.precisions, str):
            parsed["precisions"] = Precision.parse_list(self.precisions, "precision")
        for key, value in parsed.items():  # frozen: the parsed values replace what was given, once
            object.__setattr__(self, key, value)

    def to_dict(self) -> dict:
        return {"batch": str(self.batch), "workspace_mib": self.workspace_mib, "opt_level": self.opt_level,
                "hardware_compat": str(self.hardware_compat), "version_compat": self.version_compat,
                "tf32": self.tf32, "timing_cache": str(self.timing_cache) if self.timing_cache else None,
                "profiling_verbosity": "detailed", "strongly_typed": True}


@dataclass(frozen=True)
class EngineOptions:
    """The engine stage's options: ``mode`` (``export --engine``: auto builds when TensorRT and a GPU are here and
    says why not otherwise, always fails without them, never skips) and the builder settings."""

    mode: EngineMode = EngineMode.AUTO
    build: BuildOptions = field(default_factory=BuildOptions)


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
    notes: list[str] = field(default_factory=list)  # e.g. a bf16 plan skipped on a GPU without bf16


# ---------------------------------------------------------------- which graphs, which precision

def graphs_to_build(manifest: dict, precisions: list[Precision] | None = None) -> list[tuple[str, str]]:
    """(precision, onnx file) per plan: portable or tensorrt-target ONNX graphs, tensorrt target preferred."""
    chosen: dict[str, str] = {}
    for target in (Target.PORTABLE, Target.TENSORRT):  # later wins: a tensorrt-shaped graph beats a portable one
        for prec in Precision:
            names = find_artifacts(manifest, kind=Kind.ONNX, precision=prec, target=target)
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
    """Precision of a lone ONNX graph: int8 when it has Q/DQ nodes, fp16 / bf16 when it holds such weights, else
    fp32."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    ops = {n.op_type for n in proto.graph.node}
    if {"QuantizeLinear", "DequantizeLinear"} & ops:
        return Precision.INT8
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer):
        return Precision.FP16
    if any(t.data_type == onnx.TensorProto.BFLOAT16 for t in proto.graph.initializer):
        return Precision.BF16
    return Precision.FP32


# ---------------------------------------------------------------- the stage

def plan_accuracy(reference: Reference, plan_runner, profile: BatchProfile, precision: str) -> dict:
    """Plan vs reference at the profile's min, opt and max batch (TensorRT 11.1 once broke some batch sizes), on
    the reference inputs (cycled to the batch); a validation record."""
    per_batch = {}
    for b in sorted({profile.min, profile.opt, profile.max}):
        per_batch[b] = validate.compare(reference.logits(b, b), plan_runner.infer(reference.inputs(b)),
                                        candidate_name="plan")
    overall = validate.merge(list(per_batch.values()))
    return layout.validation_record(overall, reference.bar(precision), backend="tensorrt",
                                    inputs=reference.describe(profile.max), batches=sorted(per_batch),
                                    per_batch=per_batch)


def build_one(onnx_path: Path, out_dir: Path, plan_name: str, precision: str, options: BuildOptions) -> dict:
    """Build one plan and its layer JSON into ``out_dir``; returns the plan's build record (no accuracy yet)."""
    from ..backends import tensorrt as trt_backend

    input_name, input_shape, onnx_nodes = onnx_input(onnx_path)
    shapes = options.batch.shapes(input_shape)
    cache_in = options.timing_cache.read_bytes() if options.timing_cache and options.timing_cache.is_file() else None
    with step(f"Building TensorRT plan {plan_name} ({precision}, batch {options.batch})"):
        built = trt_backend.build_plan(onnx_path, input_name, shapes, options, timing_cache=cache_in)
    layers = layout.plan_layers(plan_name)
    (out_dir / plan_name).write_bytes(built.plan)
    (out_dir / layers).write_text(built.layers_json)
    if options.timing_cache is not None and built.timing_cache:
        write_bytes_atomic(options.timing_cache, built.timing_cache)
    report = parse_layer_info(built.layers_json)
    return {
        **built.env, "precision": precision, "source_onnx": onnx_path.name, "input": input_name,
        "profile": {"batch": str(options.batch), **shapes}, "build_seconds": round(built.seconds, 2),
        "layer_count": built.num_layers, "onnx_nodes": onnx_nodes, "layers_file": layers,
        "layer_summary": report.summary(), "timing_cache": {"file": str(options.timing_cache) if options.timing_cache
                                                             else None, "reused": cache_in is not None},
        "hardware_compat": str(options.hardware_compat), "version_compat": options.version_compat,
        "options": options.to_dict(),
    }


def _check_accuracy(name: str, precision: str, acc: dict, warnings: list[str]) -> None:
    """fp32/fp16 plans below their bar, and any plan with NaN/Inf, are refused; an int8 plan below its sanity
    bar is recorded and warned about."""
    if acc["passed"]:
        return
    parity = validate.Parity.from_dict(acc)
    msg = validate.failure_message(f"{name} vs eager at batches {acc['batches']}", parity,
                                   validate.Bar.from_dict(acc["bar"]))
    if precision in HARD_FAIL or parity.nonfinite:
        raise CheckFailed(msg + "; nothing written")
    warnings.append(msg)


def build_plans(bundle, reference: Reference, options: BuildOptions) -> EngineBuildResult:
    """The build stage on a ``BundleWriter`` / ``BundleUpdate``: one plan per buildable graph, checked against the
    reference at the profile's batch sizes. Writes ``model.<precision>.plan`` and its layer JSON and records
    them in ``manifest["engines"]["plans"]`` and ``manifest["validation"]``."""
    from ..backends import tensorrt as trt_backend

    graphs = graphs_to_build(bundle.manifest, options.precisions)
    if not bundle.force:
        existing = [layout.plan(p) for p, _ in graphs if (bundle.out / layout.plan(p)).exists()]
        if existing:
            raise UserError(f"{', '.join(existing)} already exist in {str(bundle.out)!r}: pass --force to replace")
    manifest = bundle.manifest
    sources = {p: locate(bundle, n) for p, n in graphs}  # a missing or altered graph: one line, before anything
    trt_backend.require()  # one line (exit 2) before any work when TensorRT or the GPU is missing
    trt_backend.check_build_gpu(options.hardware_compat)
    result = EngineBuildResult()
    engines = manifest.setdefault("engines", {})
    engines.update({"status": "built", "reason": None})
    plans = engines.setdefault("plans", {})
    for precision, _ in graphs:
        plan_name = layout.plan(precision)
        if precision == str(Precision.BF16) and not trt_backend.supports_bf16():
            note = f"{plan_name} not built: this GPU has no bf16 (needs compute capability >= 8.0)"
            engines.setdefault("skipped_plans", {})[plan_name] = note
            result.notes.append(note)
            continue
        info = build_one(sources[precision], bundle.path, plan_name, precision, options)
        with step(f"Checking {plan_name} vs eager at batches {options.batch}"):
            with trt_backend.TensorRTRunner(bundle.path / plan_name, build_info=info) as runner:
                acc = plan_accuracy(reference, runner, options.batch, precision)
        _check_accuracy(plan_name, precision, acc, result.warnings)
        bundle.add_file(plan_name, kind=Kind.PLAN, precision=precision, target="tensorrt",
                        compute_capability=info["compute_capability"])
        bundle.add_file(layout.plan_layers(plan_name), kind=Kind.PLAN_LAYERS, precision=precision)
        plans[plan_name] = info
        layout.record_validation(manifest, plan_name, acc)
        result.plans.append(PlanResult(plan_name, precision, info, acc))
    return result


def skip_engines(manifest: dict, reason: str) -> EngineBuildResult:
    """Record plainly that plans were not built (``export --engine auto`` without a GPU / TensorRT)."""
    manifest["engines"] = {"status": "skipped", "reason": reason, "plans": {}}
    return EngineBuildResult(skipped=reason)


def build_onnx_file(onnx_path: "str | Path", out_dir: "str | Path | None", options: BuildOptions,
                    force: bool = False, seed: int = 0) -> EngineBuildResult:
    """``resnet-deploy build MODEL.onnx``: a plan beside the graph (or in ``out_dir``) with a ``.plan.json``
    build record; its accuracy reference is ONNX Runtime (CPU) on the same graph, there being no eager model (on
    a bf16 graph's fp32 twin: ``reference_graph``)."""
    from ..backends import tensorrt as trt_backend
    from ..backends.onnxruntime import OnnxRuntimeRunner
    from .reference_graph import reference_graph

    onnx_path = Path(onnx_path)
    out = Path(out_dir) if out_dir else onnx_path.parent
    if not out.is_dir():
        raise UserError(f"--out {str(out)!r} is not a folder")
    precision = str(detect_precision(onnx_path))
    if options.precisions and precision not in [str(p) for p in options.precisions]:
        raise UserError(f"{onnx_path.name} is a {precision} graph, not {'/'.join(map(str, options.precisions))}")
    plan_name = layout.onnx_plan(onnx_path.name, precision)
    names = [plan_name, layout.plan_layers(plan_name), layout.plan_sidecar(plan_name)]
    if any((out / n).exists() for n in names) and not force:
        raise UserError(f"{str(out / plan_name)!r} already exists: pass --force to replace it")
    trt_backend.require()
    trt_backend.check_build_gpu(options.hardware_compat)
    if precision == str(Precision.BF16) and not trt_backend.supports_bf16():
        raise UserError(f"{onnx_path.name} is a bf16 graph and this GPU has no bf16 (TensorRT needs compute "
                        "capability >= 8.0): build it on an Ampere or newer GPU")
    warnings: list[str] = []
    with StagedFiles(out, force, "plan file") as stage:
        info = build_one(onnx_path, stage.path, plan_name, precision, options)
        shape = info["profile"]["max"]
        data = np.random.default_rng(seed).standard_normal((options.batch.max, *shape[1:]), dtype=np.float32)
        model, reference_name = reference_graph(onnx_path, precision)
        reference = Reference(OnnxRuntimeRunner(model), data, f"random:{len(data)} seed={seed}")
        with trt_backend.TensorRTRunner(stage.path / plan_name, build_info=info) as r:
            acc = plan_accuracy(reference, r, options.batch, precision)
        acc["reference"] = reference_name
        _check_accuracy(plan_name, precision, acc, warnings)
        info["validation"] = acc
        info["files"] = {n: file_entry(stage.path / n) for n in names[:2]}
        write_json_atomic(stage.path / names[2], info)
        stage.keep(*names[::-1])  # the plan last, after its records
    return EngineBuildResult([PlanResult(plan_name, precision, info, acc)], warnings=warnings)


def engines_unavailable() -> str | None:
    """Why plans cannot be built here (no TensorRT, no GPU), None when they can."""
    from ..backends import tensorrt as trt_backend

    try:
        trt_backend.require()
    except MissingDependency as e:  # the reason follows "TensorRT plans skipped:", which says what for
        return f"{e.package} is not installed: {e.install}"
    except UserError as e:
        return str(e)
    return None


def run(bundle, reference: Reference, options: EngineOptions) -> EngineBuildResult:
    """The engine stage: build the plans (``build_plans``), or, in auto mode without TensorRT or a GPU and in
    never mode, record plainly why they were skipped."""
    if options.mode is EngineMode.NEVER:
        return skip_engines(bundle.manifest, "--engine never")
    if options.mode is EngineMode.AUTO:
        reason = engines_unavailable()
        if reason:
            log.info("TensorRT plans skipped: %s", reason)
            return skip_engines(bundle.manifest, reason)
    return build_plans(bundle, reference, options.build)
