"""The precision stage: FP16 / BF16 (mixed precision) and calibrated INT8 graphs added to a bundle (inside
``export`` or afterwards)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import layout, validate
from ..bundle import find_artifacts, locate
from ..errors import CheckFailed, PrecisionFailed, UserError
from ..files import write_json_atomic
from ..layout import Kind
from ..progress import step
from ..reference import Reference
from ..types import CalibMethod, Target
from ..validate import run_graph
from . import int8_budget, quantize_ort, quantize_trt, reduced_precision
from . import calibrate as cal
from .calibration_data import DataSet, check_path, load_calibration, load_dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Int8Writer:
    """How the INT8 graph of one target is written: which tensors to calibrate, the Q/DQ placement, and whether
    activations are symmetric int8 (TensorRT) or asymmetric uint8 (ONNX Runtime on x86)."""

    tensors_to_calibrate: Callable
    quantize: Callable
    symmetric: bool

    @property
    def activations(self) -> str:
        return "int8 symmetric" if self.symmetric else "uint8 asymmetric"


INT8_WRITERS = {
    Target.TENSORRT: Int8Writer(quantize_trt.tensors_to_calibrate, quantize_trt.quantize, symmetric=True),
    Target.ONNXRUNTIME: Int8Writer(quantize_ort.tensors_to_calibrate, quantize_ort.quantize, symmetric=False),
}
INT8_TARGETS = tuple(INT8_WRITERS)


TARGETS = (*INT8_TARGETS, Target.OPENVINO)  # openvino: IR of the fp32 and INT8 graphs (openvino_stage)


def parse_targets(value) -> tuple:
    """Targets from ``a,b`` or a sequence; the error names the precision stage's targets only."""
    parts = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else list(value)
    names = ", ".join(map(str, TARGETS))
    out = []
    for p in parts:
        t = next((t for t in TARGETS if t.value == str(p).strip().lower()), None)
        if t is None:
            raise UserError(f"unknown --target {str(p)!r}: choose from {names}")
        if t not in out:
            out.append(t)
    if not out:
        raise UserError(f"empty --target: choose from {names}")
    return tuple(out)


@dataclass
class PrecisionOptions:
    """What the user asked for; ``check()`` validates it before any work starts."""

    fp16: bool = False
    fp16_io: bool = False
    bf16: bool = False
    keep_fp32: tuple = ()  # node names of model.onnx kept in fp32 in the fp16/bf16 graphs
    int8: bool = False
    calib: "str | Path | None" = None
    calib_size: int = 512
    calib_method: CalibMethod = CalibMethod.MSE
    percentile: float = 99.99
    calib_cache: "str | Path | None" = None
    targets: tuple = INT8_TARGETS
    val: "str | Path | None" = None
    max_drop: float = 1.0
    images: "str | Path | None" = None  # real images for the reference (fp16 / int8 parity checks)

    @property
    def wanted(self) -> bool:
        return self.fp16 or self.bf16 or self.int8 or self.openvino

    @property
    def openvino(self) -> bool:
        """OpenVINO IR asked for (``--target ...,openvino``)."""
        return Target.OPENVINO in parse_targets(self.targets)

    @property
    def int8_targets(self) -> tuple:
        """The INT8 graphs to write; the OpenVINO IR is converted from the onnxruntime-shaped one."""
        targets = [t for t in parse_targets(self.targets) if t in INT8_WRITERS]
        if self.openvino and Target.ONNXRUNTIME not in targets:
            targets.append(Target.ONNXRUNTIME)
        return tuple(targets)

    def check(self) -> "PrecisionOptions":
        if isinstance(self.keep_fp32, str):
            self.keep_fp32 = tuple(n.strip() for n in self.keep_fp32.split(",") if n.strip())
        self.keep_fp32 = tuple(dict.fromkeys(self.keep_fp32))
        reduced_precision.check_formats(self.fp16, self.bf16, self.fp16_io, self.keep_fp32)
        if self.int8 and self.calib is None:
            raise UserError("--int8 needs --calib PATH (an image folder, or a .npy/.npz of preprocessed NCHW float32)")
        if not self.int8 and (self.calib is not None or self.val is not None):
            raise UserError("--calib / --val only apply with --int8")
        self.calib_method = CalibMethod.parse(self.calib_method, "--calib-method")
        self.percentile = cal.check_percentile(self.percentile)
        self.max_drop = int8_budget.check_max_drop(self.max_drop)
        self.targets = parse_targets(self.targets)
        if self.openvino:
            from ..backends.openvino import import_openvino

            import_openvino()  # a missing extra is one line (exit 2) before any work
        if int(self.calib_size) < 1:
            raise UserError(f"--calib-size {self.calib_size} must be >= 1")
        if self.int8:
            check_path(self.calib, "--calib")
            if self.val is not None:
                check_path(self.val, "--val")
        if self.calib_cache is not None and Path(self.calib_cache).is_dir():
            raise UserError(f"--calib-cache {str(self.calib_cache)!r} is a folder: give a file name")
        return self


@dataclass
class PrecisionPlan:
    """Checked options (a copy: the caller's object is not changed) and the data they name, loaded before the
    export so that bad data fails before any work."""

    options: PrecisionOptions
    calib: DataSet | None = None
    val: DataSet | None = None

    def fallback_inputs(self):
        """Reference inputs when the run has no ``--images``: the held-out set, else the calibration set."""
        for what, ds in (("--val", self.val), ("--calib", self.calib)):
            if ds is not None:
                return ds.data, ds.labels, f"{what} {ds.source}"
        return None


def prepare(options: "PrecisionOptions | PrecisionPlan", pre) -> PrecisionPlan:
    """Check the options once and load calibration / validation data with the bundle's preprocessing."""
    if isinstance(options, PrecisionPlan):
        return options
    options = dataclasses.replace(options).check()
    plan = PrecisionPlan(options)
    if options.int8:
        plan.calib = load_calibration(options.calib, pre, int(options.calib_size))
        if options.val is not None:
            plan.val = load_dataset(options.val, pre, None, "--val")
    return plan


@dataclass
class PrecisionResult:
    files: list[str] = field(default_factory=list)
    fp16: dict | None = None
    bf16: dict | None = None
    int8: dict = field(default_factory=dict)
    openvino: object = None  # openvino_stage.OpenVinoStageResult
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # one line per precision left out (PrecisionFailed)


def _cache_paths(bundle, options: PrecisionOptions) -> list[Path]:
    paths = []
    if options.calib_cache is not None:
        paths.append(Path(options.calib_cache))
    paths.append(bundle.out / layout.CALIBRATION)
    return paths


def run_calibration(bundle, plan: PrecisionPlan, model) -> cal.Calibration:
    options = plan.options
    tensors: list[str] = []
    for t in options.int8_targets:
        for name in INT8_WRITERS[t].tensors_to_calibrate(model):
            if name not in tensors:
                tensors.append(name)
    label = f"Calibrating ({options.calib_method}, {len(plan.calib.data)} samples, {len(tensors)} tensors)"
    with step(label) as show:
        return cal.calibrate(locate(bundle, layout.FP32_ONNX), tensors, plan.calib.data, plan.calib.sha256(),
                             options.calib_method, options.percentile, caches=_cache_paths(bundle, options),
                             on_batch=lambda done, total: show(f"batch {done}/{total}"))


def add_int8(bundle, plan: PrecisionPlan, reference: Reference, held_out: Reference | None) -> dict:
    import onnx

    options = plan.options
    model = onnx.load(str(locate(bundle, layout.FP32_ONNX)))
    calibration = run_calibration(bundle, plan, model)
    write_json_atomic(bundle.path / layout.CALIBRATION, calibration.to_json())
    bundle.add_file(layout.CALIBRATION, kind=Kind.CALIBRATION, precision="int8")
    if options.calib_cache is not None:
        write_json_atomic(Path(options.calib_cache), calibration.to_json())
    gate = held_out or reference  # held-out data (labelled: top-1; else agreement) or the reference inputs
    labels = held_out.labels if held_out is not None else None
    gate_desc = (f"{held_out.description}" + (" (labelled)" if labels is not None else " (agreement with eager)")
                 if held_out is not None else f"{reference.description} (agreement)")
    out = {"calibration": {"method": str(calibration.method), "percentile": calibration.percentile,
                           "num_samples": calibration.num_samples, "source": plan.calib.source,
                           "seconds": round(calibration.seconds, 2), "reused_cache": calibration.reused,
                           "skipped": plan.calib.skipped},
           "max_drop": options.max_drop, "gate_data": gate_desc, "targets": {}}
    failures = []
    for target in options.int8_targets:
        writer = INT8_WRITERS[target]
        with step(f"Quantizing INT8 for {target} and checking accuracy"):
            res = int8_budget.quantize_within_budget(model, calibration.ranges, writer.quantize, writer.symmetric,
                                                gate.inputs(), gate.logits(), labels, options.max_drop)
        name = layout.int8_onnx(target)
        # a gate on the reference inputs has run the final graph on them already
        logits = res.logits if gate is reference else run_graph(res.graph.model, reference.inputs(),
                                                                int8_budget.EVAL_BATCH)
        parity = validate.compare(reference.logits(), logits)
        out["targets"][str(target)] = {
            "file": name, "fp32": res.fp32.to_dict(), "int8": res.int8.to_dict(), "drop_points": round(res.drop, 3),
            "passed": res.passed, "excluded_layers": res.excluded, "kept_higher_precision": res.graph.kept,
            "quantized_convs": len(res.graph.quantized), "attempts": res.attempts,
            "parity_vs_eager": layout.validation_record(parity, reference.bar("int8"), backend="onnxruntime-cpu",
                                                        inputs=reference.describe(), batches=[int8_budget.EVAL_BATCH]),
            "activations": writer.activations, "weights": "int8 symmetric per-channel"}
        if not res.passed:
            why = (f"its logits are not finite ({res.int8.nonfinite})" if res.int8.nonfinite else
                   f"top-1 drop {res.drop:.2f} points > --max-drop {options.max_drop}")
            failures.append(f"{target}: {why} even with {len(res.excluded)} layer(s) kept in fp32")
            continue
        onnx.save(res.graph.model, str(bundle.path / name))
        onnx.checker.check_model(str(bundle.path / name), full_check=True)
        bundle.add_file(name, kind=Kind.ONNX, precision="int8", target=str(target),
                        calibration=str(calibration.method))
    bundle.manifest.setdefault("precision", {})["int8"] = out
    if failures:
        over_budget = any(not t["passed"] and not t["int8"].get("nonfinite") for t in out["targets"].values())
        tiny = int8_budget.too_few_to_judge(len(gate.inputs()), options.max_drop) if over_budget else None
        raise PrecisionFailed("int8", "INT8 accuracy budget not met: " + "; ".join(failures + ([tiny] if tiny else [])),
                              out)
    return out


def record_failure(bundle, result: PrecisionResult, failure: PrecisionFailed) -> None:
    """Note a precision left out: ``manifest["precision"][p]`` keeps its numbers and attempts plus ``failed``
    (the one-line reason); the artifact itself was never added to the bundle."""
    section = bundle.manifest.setdefault("precision", {})
    section[failure.precision] = {**section.get(failure.precision, {}), **failure.record, "failed": str(failure)}
    result.failures.append(str(failure))


def run(bundle, reference: Reference, plan: PrecisionPlan) -> PrecisionResult:
    """The precision stage on a ``BundleWriter`` or ``BundleUpdate``: FP16 / BF16 (mixed precision) and INT8 graphs
    and OpenVINO's bf16 run, checked against the reference (and, for the INT8 budget, the held-out ``--val`` set).
    A precision that misses its bar or budget even after falling back (``PrecisionFailed``) is left out and recorded
    (``result.failures``, ``manifest["precision"][p]["failed"]``); the other precisions still run,
    and the caller decides (``export`` keeps the validated bundle and exits 1; ``quantize`` changes nothing)."""
    options = plan.options
    held_out = None
    if plan.val is not None:
        held_out = reference.with_inputs(plan.val.data, f"--val {plan.val.source}", plan.val.labels)
    result = PrecisionResult()
    section = bundle.manifest.setdefault("precision", {})
    if options.keep_fp32:  # an unknown node is one line before any conversion
        reduced_precision.check_keep_fp32(locate(bundle, layout.FP32_ONNX), options.keep_fp32)
    formats = ((reduced_precision.FP16, options.fp16), (reduced_precision.BF16, options.bf16))
    for fmt in (f for f, wanted in formats if wanted):
        try:
            out = reduced_precision.add_reduced(bundle, fmt, reference, held_out, options.keep_fp32,
                                                low_io=options.fp16_io and fmt is reduced_precision.FP16)
        except PrecisionFailed as e:
            record_failure(bundle, result, e)
            continue
        section[str(fmt)] = {**section.get(str(fmt), {}), **out}
        setattr(result, str(fmt), section[str(fmt)])
        result.files.append(layout.reduced_onnx(fmt))
    if options.int8:
        result.warnings.extend(plan.calib.warnings)
        try:
            result.int8 = add_int8(bundle, plan, reference, held_out)
        except PrecisionFailed as e:
            result.int8 = e.record
            record_failure(bundle, result, e)
        result.files += [n for n in [layout.CALIBRATION] + [layout.int8_onnx(t) for t in options.int8_targets]
                         if n in bundle.manifest["files"]]
    if options.openvino:
        from .. import openvino_stage

        result.openvino = openvino_stage.run(bundle, reference, openvino_stage.OpenVinoOptions())
        result.files += result.openvino.files
    if options.bf16 or options.openvino:
        try:
            ov = openvino_bf16(bundle, reference, required=options.bf16)
        except PrecisionFailed as e:
            record_failure(bundle, result, e)
            ov = e.record["openvino"]
        section.setdefault("bf16", {})["openvino"] = ov
        if ov.get("passed") is False:
            result.warnings.append(f"OpenVINO's bf16 run of {ov['artifact']} misses the bf16 bar (top-1 agreement "
                                   f"{ov['top1_agreement']:.1%}, spread error {ov['spread_error']}): run it with "
                                   "f32 inference precision")
    return result


def openvino_bf16(bundle, reference: Reference, required: bool) -> dict:
    """OpenVINO's bf16 run of the fp32 graph (``reduced_precision.add_openvino_bf16``), or why it was not checked."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return {"skipped": "openvino is not installed (pip install 'resnet-deploy[openvino]')"}
    return reduced_precision.add_openvino_bf16(bundle, reference, required)


def quantize_bundle(bundle_dir: "str | Path", options: PrecisionOptions, force: bool = False) -> tuple[dict, list]:
    """The ``quantize`` command: check, load data, and add the graphs to an existing bundle atomically, against
    the bundle's own eager reference. Returns the new manifest and the warnings."""
    from ..bundle import BundleUpdate, load_eager, read_manifest
    from ..preprocess import Preprocessing
    from ..reference import build_reference

    manifest = read_manifest(bundle_dir)
    pre = Preprocessing.from_dict(manifest["preprocessing"])
    plan = prepare(options, pre)
    options = plan.options
    if not options.wanted:
        raise UserError("nothing to do: pass --fp16, --bf16, --int8 --calib PATH and/or --target openvino")
    if not find_artifacts(manifest, kind=Kind.ONNX, precision="fp32", target="portable"):
        raise UserError(f"bundle {str(bundle_dir)!r} has no fp32 portable {layout.FP32_ONNX} to start from")
    if options.keep_fp32:
        from ..bundle import verified

        reduced_precision.check_keep_fp32(verified(bundle_dir, manifest, layout.FP32_ONNX), options.keep_fp32)
    names = [layout.reduced_onnx(f) for f, wanted in (("fp16", options.fp16), ("bf16", options.bf16)) if wanted]
    names += [layout.CALIBRATION] + [layout.int8_onnx(t) for t in options.int8_targets] if options.int8 else []
    names += [layout.openvino_ir(p) for p in ("fp32", "int8")] if options.openvino else []
    existing = [n for n in names if (Path(bundle_dir) / n).exists()]
    if existing and not force:
        raise UserError(f"bundle already has {', '.join(existing)}: pass --force to replace")
    with BundleUpdate(bundle_dir, force=force) as b:
        reference = build_reference(load_eager(b), pre, options.images, fallback=plan.fallback_inputs())
        result = run(b, reference, plan)
        if result.failures:  # all or nothing on an existing bundle: leave it exactly as it was
            failed = CheckFailed("; ".join(result.failures) + f"; bundle {str(bundle_dir)!r} left unchanged")
            failed.warnings = tuple(result.warnings)
            raise failed
        b.manifest["warnings"] = list(dict.fromkeys([*b.manifest.get("warnings", []), *result.warnings]))
    return b.manifest, result.warnings
