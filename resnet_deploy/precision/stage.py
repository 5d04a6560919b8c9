"""The precision stage: FP16 / BF16 (mixed precision) and calibrated INT8 graphs added to a bundle (inside
``export`` or afterwards, ``quantize``). OpenVINO's IR and bf16 run are the next stage's (``openvino_ir``)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import layout, validate
from ..errors import PrecisionFailed, UserError
from ..files import write_json_atomic
from ..layout import Kind
from ..progress import step
from ..stages.base import give_memory_back, record_failure
from ..stages.reference import Reference
from ..types import CalibMethod, Target
from ..backends.onnxruntime import run_graph
from . import int8_budget, quantize_ort, quantize_trt, reduced_precision
from . import calibrate as cal
from .reduced_convert import check_written
from .calibration_data import DataSet, check_path, load_calibration, load_dataset

log = logging.getLogger(__name__)

NAME = "precision"


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


TARGETS = (*INT8_TARGETS, Target.OPENVINO)  # openvino: IR of the fp32 and INT8 graphs (the openvino_ir stage)


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


@dataclass(frozen=True)
class PrecisionOptions:
    """What the user asked for, as given; ``checked()`` returns the parsed, checked copy the stage runs with."""

    fp16: bool = False
    fp16_io: bool = False
    bf16: bool = False
    keep_fp32: "tuple | str" = ()  # node names of model.onnx kept in fp32 in the fp16/bf16 graphs
    int8: bool = False
    calib: "str | Path | None" = None
    calib_size: int = 512
    calib_method: "CalibMethod | str" = CalibMethod.MSE
    percentile: "float | str" = 99.99
    calib_cache: "str | Path | None" = None
    targets: "tuple | str" = INT8_TARGETS
    val: "str | Path | None" = None
    max_drop: "float | str" = 1.0
    images: "str | Path | None" = None  # real images for the reference (fp16 / int8 parity checks)

    @property
    def wanted(self) -> bool:
        return self.fp16 or self.bf16 or self.int8 or self.openvino

    @property
    def openvino(self) -> bool:
        """OpenVINO IR asked for (``--target ...,openvino``): the openvino_ir stage runs after this one."""
        return Target.OPENVINO in self.targets

    @property
    def int8_targets(self) -> tuple:
        """The INT8 graphs to write; the OpenVINO IR is converted from the onnxruntime-shaped one."""
        targets = [t for t in self.targets if t in INT8_WRITERS]
        if self.openvino and Target.ONNXRUNTIME not in targets:
            targets.append(Target.ONNXRUNTIME)
        return tuple(targets)

    def checked(self) -> "PrecisionOptions":
        """The one check of every value (one-line errors naming the bad value and the choices), before any work;
        returns a copy with parsed values (enums, tuples, numbers)."""
        keep = self.keep_fp32
        if isinstance(keep, str):
            keep = tuple(n.strip() for n in keep.split(",") if n.strip())
        keep = tuple(dict.fromkeys(keep))
        reduced_precision.check_formats(self.fp16, self.bf16, self.fp16_io, keep)
        if self.int8 and self.calib is None:
            raise UserError("--int8 needs --calib PATH (an image folder, or a .npy/.npz of preprocessed NCHW float32)")
        if not self.int8 and (self.calib is not None or self.val is not None):
            raise UserError("--calib / --val only apply with --int8")
        out = dataclasses.replace(self, keep_fp32=keep,
                                  calib_method=CalibMethod.parse(self.calib_method, "--calib-method"),
                                  percentile=cal.check_percentile(self.percentile),
                                  max_drop=int8_budget.check_max_drop(self.max_drop),
                                  targets=parse_targets(self.targets))
        if out.openvino:
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
        return out


@dataclass(frozen=True)
class PrecisionPlan:
    """Checked options (a copy: the caller's object is not changed) and the data they name, loaded before the
    export so that bad data fails before any work: the precision stage's options."""

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
    options = options.checked()
    if not options.int8:
        return PrecisionPlan(options)
    calib = load_calibration(options.calib, pre, int(options.calib_size))
    val = load_dataset(options.val, pre, None, "--val") if options.val is not None else None
    return PrecisionPlan(options, calib, val)


@dataclass
class PrecisionResult:
    files: list[str] = field(default_factory=list)
    fp16: dict | None = None
    bf16: dict | None = None
    int8: dict = field(default_factory=dict)
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
        return cal.calibrate(model, tensors, plan.calib.data, plan.calib.sha256(), options.calib_method,
                             options.percentile, caches=_cache_paths(bundle, options),
                             on_batch=lambda done, total: show(f"batch {done}/{total}"),
                             model_sha256=bundle.manifest["files"][layout.FP32_ONNX]["sha256"])


def add_int8(bundle, plan: PrecisionPlan, reference: Reference, held_out: Reference | None) -> dict:
    options = plan.options
    model = bundle.graph(layout.FP32_ONNX)  # the fused graph the fusion stage handed over (read, never changed)
    calibration = run_calibration(bundle, plan, model)
    give_memory_back()  # the statistics session is gone
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
        give_memory_back()
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
        bundle.add_graph(name, res.graph.model, external=False, kind=Kind.ONNX, precision="int8",
                         target=str(target), calibration=str(calibration.method))
        check_written(bundle.path / name)
    bundle.manifest.setdefault("precision", {})["int8"] = out
    if failures:
        over_budget = any(not t["passed"] and not t["int8"].get("nonfinite") for t in out["targets"].values())
        tiny = int8_budget.too_few_to_judge(len(gate.inputs()), options.max_drop) if over_budget else None
        raise PrecisionFailed("int8", "INT8 accuracy budget not met: " + "; ".join(failures + ([tiny] if tiny else [])),
                              out)
    return out


def run(bundle, reference: Reference, plan: PrecisionPlan) -> PrecisionResult:
    """The precision stage on a ``BundleWriter`` or ``BundleUpdate``: FP16 / BF16 (mixed precision) and INT8 graphs,
    checked against the reference (and, for the INT8 budget, the held-out ``--val`` set).
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
        reduced_precision.check_keep_fp32(bundle.graph(layout.FP32_ONNX), options.keep_fp32)
    formats = ((reduced_precision.FP16, options.fp16), (reduced_precision.BF16, options.bf16))
    for fmt in (f for f, wanted in formats if wanted):
        try:
            out = reduced_precision.add_reduced(bundle, fmt, reference, held_out, options.keep_fp32,
                                                low_io=options.fp16_io and fmt is reduced_precision.FP16)
        except PrecisionFailed as e:
            result.failures.append(record_failure(bundle.manifest, e))
            continue
        give_memory_back()
        section[str(fmt)] = {**section.get(str(fmt), {}), **out}
        setattr(result, str(fmt), section[str(fmt)])
        result.files.append(layout.reduced_onnx(fmt))
    if options.int8:
        result.warnings.extend(plan.calib.warnings)
        try:
            result.int8 = add_int8(bundle, plan, reference, held_out)
        except PrecisionFailed as e:
            result.int8 = e.record
            result.failures.append(record_failure(bundle.manifest, e))
        result.files += [n for n in [layout.CALIBRATION] + [layout.int8_onnx(t) for t in options.int8_targets]
                         if n in bundle.manifest["files"]]
    return result
