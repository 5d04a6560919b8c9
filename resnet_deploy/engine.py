"""Build stage: TensorRT plans from the bundle's ONNX graphs, with their layer JSON, manifest entries and accuracy.

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

from . import validate
from .bundle import MANIFEST, BundleUpdate, file_entry, find_artifacts, locate, read_manifest, write_json_atomic
from .engine_layers import parse_layer_info
from .errors import CheckFailed, UserError
from .files import write_file_no_replace
from .progress import step
from .types import HardwareCompat, Precision, Target

log = logging.getLogger(__name__)

DEFAULT_BATCH = "1:8:32"
REBUILD = "rebuild with resnet-deploy build"
# Accuracy bar of a plan against eager, per precision: (min cosine, min top-1 agreement). fp32 is the export's
# own bar; fp16 / int8 bars are loose sanity bars (int8 accuracy proper is measured on labelled images).
ACCURACY_BARS = {"fp32": (validate.FP32_MIN_COSINE, 1.0), "fp16": (0.9999, 0.99), "int8": (0.98, 0.75)}
HARD_FAIL = ("fp32", "fp16")  # an int8 plan below its sanity bar is recorded and warned about, not refused


@dataclass(frozen=True)
class BatchProfile:
    """The optimization profile's batch sizes."""

    min: int
    opt: int
    max: int

    @classmethod
    def parse(cls, text: "str | BatchProfile") -> "BatchProfile":
        """``MIN:OPT:MAX`` (or one number N for N:N:N) with 1 <= MIN <= OPT <= MAX."""
        if isinstance(text, BatchProfile):
            return text
        parts = str(text).strip().split(":")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            nums = []
        if len(nums) == 1:
            nums = nums * 3
        if len(nums) != 3 or not 1 <= nums[0] <= nums[1] <= nums[2]:
            raise UserError(f"--batch {text!r} is invalid: use MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, e.g. "
                            f"{DEFAULT_BATCH}")
        return cls(*nums)

    def shapes(self, input_shape) -> dict:
        """min/opt/max input shapes from an NCHW shape whose batch is dynamic (-1, 0, None or a name)."""
        rest = [int(d) for d in list(input_shape)[1:]]
        if any(d <= 0 for d in rest):
            raise UserError(f"input shape {list(input_shape)} has dynamic dimensions besides the batch: "
                            "TensorRT plans here need fixed C, H, W")
        return {k: [getattr(self, k), *rest] for k in ("min", "opt", "max")}

    def check(self, batch: int, plan: str = "plan") -> None:
        """A batch outside the profile is refused with one line (TensorRT would fail on it)."""
        if not self.min <= int(batch) <= self.max:
            raise UserError(f"batch {batch} is outside the profile of {plan} ({self.min}..{self.max}, "
                            f"--batch {self}): use a batch in range or {REBUILD} --batch MIN:OPT:MAX")

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


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


# ---------------------------------------------------------------- compatibility of a plan with this machine

def _major(version) -> str:
    return str(version).split(".")[0]


def _vtuple(version) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in str(version).split("."))


# Where a plan built with BuilderFlag.VERSION_COMPATIBLE may run, as TensorRT's documentation states it (10.16:
# "Version Compatibility"; 11.1: "Engine Compatibility" > "Version Compatibility"). It runs on the TensorRT that built
# it or any later one of the same major version (11.0 -> 11.1 and later 11.x). Across a major version only these
# pairs are named: plans of 8.x run on 9.x and 10.x, plans of 9.x on 10.x, plans of 10.x on 11.x. Nothing runs on an
# older TensorRT, and both sides must be at least 8.6, the first release with version compatibility.
VERSION_COMPAT_SINCE = (8, 6)
VERSION_COMPAT_LATER_MAJORS = {8: (9, 10), 9: (10,), 10: (11,)}


def version_compat_problem(built, here) -> str | None:
    """Why TensorRT ``here`` cannot load a version-compatible plan built with TensorRT ``built``; None when it can."""
    if built is None or here is None:
        return None if built == here else f"TensorRT {here} (built with {built})"
    b, h = _vtuple(built), _vtuple(here)
    if b[:2] < VERSION_COMPAT_SINCE:
        return (f"TensorRT {here} (built with {built}, older than 8.6: version compatibility starts at 8.6, "
                "so only that exact version loads it)") if b != h else None
    later = VERSION_COMPAT_LATER_MAJORS.get(b[0], ())
    allowed = f"{b[0]}.x >= {built}" + "".join(f" or {m}.x" for m in later)
    if h < b:
        return f"TensorRT {here} is older than the {built} that built this version-compatible plan (runs on {allowed})"
    if h[0] != b[0] and h[0] not in later:
        return f"TensorRT {here} (a version-compatible plan built with {built} runs on {allowed})"
    return None


def plan_compat_problems(info: dict, env: dict) -> list[str]:
    """Why a plan (its manifest ``info``) cannot run in ``env`` (this machine); empty when it can.

    TensorRT: the exact version, or for a --version-compat plan what ``version_compat_problem`` allows (a later
    version of the same major, or the next major where TensorRT documents it: 8.x -> 9.x / 10.x, 9.x -> 10.x,
    10.x -> 11.x). CUDA: the same major version (TensorRT's wheel CUDA when recorded on both sides, else torch's).
    GPU: the same model and compute capability; with ampere+ any GPU of compute capability >= 8.0; with same-cc any
    GPU of the same compute capability.
    """
    problems = []
    built_trt, here_trt = info.get("tensorrt"), env.get("tensorrt")
    if info.get("version_compat"):
        problem = version_compat_problem(built_trt, here_trt)
        if problem:
            problems.append(problem)
    elif built_trt != here_trt:
        problems.append(f"TensorRT {here_trt} (built with {built_trt})")
    # CUDA: TensorRT's own (from its wheel) when both sides know it, else torch's runtime.
    key = "tensorrt_cuda" if info.get("tensorrt_cuda") and env.get("tensorrt_cuda") else "cuda"
    if _major(info.get(key)) != _major(env.get(key)):
        problems.append(f"CUDA {env.get(key)} (built with CUDA {info.get(key)})")
    level = HardwareCompat.parse(info.get("hardware_compat") or "none")
    cc_built, cc_here = str(info.get("compute_capability")), str(env.get("compute_capability"))
    if level is HardwareCompat.AMPERE_PLUS:
        if _vtuple(cc_here) < (8, 0):
            problems.append(f"GPU {env.get('gpu')} (compute capability {cc_here}; an ampere+ plan needs >= 8.0)")
    elif level is HardwareCompat.SAME_CC:
        if cc_here != cc_built:
            problems.append(f"GPU compute capability {cc_here} (built for {cc_built})")
    elif cc_here != cc_built or env.get("gpu") != info.get("gpu"):
        problems.append(f"GPU {env.get('gpu')} sm {cc_here} (built on {info.get('gpu')} sm {cc_built})")
    return problems


def check_plan_compat(info: dict | None, env: dict, plan: str) -> None:
    """Refuse, before deserializing, a plan built for another GPU / TensorRT / CUDA version."""
    if info is None:
        log.warning("%s has no build record (manifest or sidecar): cannot check it matches this machine", plan)
        return
    problems = plan_compat_problems(info, env)
    if problems:
        raise UserError(f"{plan} does not fit this machine: {'; '.join(problems)}: {REBUILD}")


def sidecar_path(plan: "str | Path") -> Path:
    plan = Path(plan)
    return plan.with_name(plan.name + ".json")


def layers_name(plan_name: str) -> str:
    return plan_name[: -len(".plan")] + ".layers.json" if plan_name.endswith(".plan") else plan_name + ".layers.json"


def plan_info(plan: "str | Path") -> dict | None:
    """The build record of a plan: from its bundle's manifest (``engines.plans``), else its ``.plan.json`` sidecar."""
    plan = Path(plan)
    manifest_path = plan.parent / MANIFEST
    if manifest_path.is_file():
        try:
            info = json.loads(manifest_path.read_text()).get("engines", {}).get("plans", {}).get(plan.name)
        except (json.JSONDecodeError, AttributeError):
            info = None
        if info:
            return info
    side = sidecar_path(plan)
    if side.is_file():
        try:
            return json.loads(side.read_text())
        except json.JSONDecodeError:
            raise UserError(f"{str(side)!r} is not valid JSON: {REBUILD}") from None
    return None


# ---------------------------------------------------------------- the stage

def accuracy_inputs(shape: list, n: int, images=None, pre=None, seed: int = 0) -> tuple[np.ndarray, str]:
    """``n`` inputs: real images (cycled to n) when given, else seeded standard-normal data."""
    if images is not None and pre is not None:
        from .preprocess import load_images

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
    from .backends import tensorrt as trt_backend

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
    from .backends import tensorrt as trt_backend
    from .backends.torch_eager import TorchRunner
    from .onnx_export import load_exported_program
    from .preprocess import Preprocessing

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
    from .backends import tensorrt as trt_backend
    from .backends.onnxruntime import OnnxRuntimeRunner

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
    from .backends import tensorrt as trt_backend

    try:
        trt_backend.require()
    except UserError as e:
        return str(e)
    return None


def export_engines(bundle, mode, options: BuildOptions | None = None, images=None, seed: int = 0) -> EngineBuildResult:
    """The ``export --engine auto|always|never`` step: build plans, or record plainly why they were skipped."""
    from .types import EngineMode

    mode = EngineMode.parse(mode, "--engine")
    if mode is EngineMode.NEVER:
        return skip_engines(bundle.manifest, "--engine never")
    if mode is EngineMode.AUTO:
        reason = engines_unavailable()
        if reason:
            log.info("TensorRT plans skipped: %s", reason)
            return skip_engines(bundle.manifest, reason)
    return build_engines(bundle, options or BuildOptions(), images=images, seed=seed)
