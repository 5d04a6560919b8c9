"""The precision stage: FP16 and calibrated INT8 graphs added to a bundle (inside ``export`` or afterwards)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import validate
from ..bundle import find_artifacts, load_eager, locate, write_json_atomic
from ..errors import CheckFailed, UserError
from ..preprocess import Preprocessing, load_images
from ..progress import step
from ..types import CalibMethod, Target
from . import calibrate as cal
from . import fp16 as fp16_mod
from . import gate, quantize_ort, quantize_trt
from .data import DataSet, check_path, load_calibration, load_dataset

log = logging.getLogger(__name__)

FP32_ONNX = "model.onnx"
FP16_ONNX = "model.fp16.onnx"
CALIB_CACHE = "calibration.json"
CHECK_SAMPLES = 64
FP16_MIN_COSINE = 0.9999
FP16_MIN_AGREEMENT = 0.99
INT8_TARGETS = (Target.TENSORRT, Target.ONNXRUNTIME)
WRITERS = {Target.TENSORRT: (quantize_trt, True), Target.ONNXRUNTIME: (quantize_ort, False)}


def int8_name(target: Target) -> str:
    return f"model.int8.{target}.onnx"


def parse_targets(value) -> tuple:
    """INT8 targets from ``a,b`` or a sequence; the error names the INT8 targets only."""
    parts = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else list(value)
    names = ", ".join(map(str, INT8_TARGETS))
    out = []
    for p in parts:
        t = next((t for t in INT8_TARGETS if t.value == str(p).strip().lower()), None)
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
    int8: bool = False
    calib: "str | Path | None" = None
    calib_size: int = 512
    calib_method: CalibMethod = CalibMethod.MSE
    percentile: float = 99.99
    calib_cache: "str | Path | None" = None
    targets: tuple = INT8_TARGETS
    val: "str | Path | None" = None
    max_drop: float = 1.0
    images: "str | Path | None" = None  # real images for the fp16 / int8 parity check

    @property
    def wanted(self) -> bool:
        return self.fp16 or self.int8

    def check(self) -> "PrecisionOptions":
        if self.fp16_io and not self.fp16:
            raise UserError("--fp16-io only applies with --fp16")
        if self.int8 and self.calib is None:
            raise UserError("--int8 needs --calib PATH (an image folder, or a .npy/.npz of preprocessed NCHW float32)")
        if not self.int8 and (self.calib is not None or self.val is not None):
            raise UserError("--calib / --val only apply with --int8")
        self.calib_method = CalibMethod.parse(self.calib_method, "--calib-method")
        self.percentile = cal.check_percentile(self.percentile)
        self.max_drop = gate.check_max_drop(self.max_drop)
        self.targets = parse_targets(self.targets)
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
class PreparedData:
    """Everything read from disk, loaded before the export so that bad data fails before any work."""

    calib: DataSet | None = None
    val: DataSet | None = None
    check: np.ndarray | None = None
    check_desc: str = ""
    val_reference: np.ndarray | None = None  # eager logits of ``val``, filled by ``apply_precision``


def prepare(options: PrecisionOptions, pre: Preprocessing) -> PreparedData:
    """Validate the options and load calibration / validation / check data with the bundle's preprocessing."""
    options.check()
    out = PreparedData()
    if options.int8:
        out.calib = load_calibration(options.calib, pre, int(options.calib_size))
        if options.val is not None:
            out.val = load_dataset(options.val, pre, None, "--val")
    if options.images is not None:
        imgs = load_images(options.images, pre, limit=CHECK_SAMPLES, what="--images")
        out.check, out.check_desc = imgs.data, imgs.describe(options.images)
    elif out.val is not None:
        out.check, out.check_desc = out.val.data[:CHECK_SAMPLES], f"--val {out.val.source} (first {CHECK_SAMPLES})"
    elif out.calib is not None:
        out.check, out.check_desc = out.calib.data[:CHECK_SAMPLES], f"--calib {out.calib.source} (first {CHECK_SAMPLES})"
    else:
        rng = np.random.default_rng(0)
        out.check = rng.standard_normal((16, 3, *pre.input_size), dtype=np.float32)
        out.check_desc = "random:16 seed=0 (pass --images for real ones)"
    return out


@dataclass
class PrecisionResult:
    files: list[str] = field(default_factory=list)
    fp16: dict | None = None
    int8: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _eager_logits(eager, data: np.ndarray, batch: int = 16) -> np.ndarray:
    """Eager fp32 logits of ``data``, in chunks of ``batch``."""
    from ..backends.torch_eager import TorchRunner

    with TorchRunner(eager) as runner:
        return validate.run_batches(runner, data, batch)


def add_fp16(bundle, options: PrecisionOptions, data: PreparedData, reference: np.ndarray) -> dict:
    import onnx

    with step("Converting to FP16"):
        g = fp16_mod.convert(onnx.load(str(locate(bundle, FP32_ONNX))), options.fp16_io)
        fp16_mod.save(g, bundle.path / FP16_ONNX)
    with step("Validating FP16 vs eager"):
        parity = validate.compare(reference, gate.run_graph(g.model, data.check))
    passed = parity.passes(FP16_MIN_COSINE, FP16_MIN_AGREEMENT)
    bundle.manifest.setdefault("validation", {})["fp16"] = {
        "backend": "onnxruntime-cpu", "reference": "torch eager fp32", "inputs": data.check_desc,
        **parity.to_dict(), "min_cosine": FP16_MIN_COSINE, "min_agreement": FP16_MIN_AGREEMENT, "passed": passed}
    validate.require_parity("fp16 graph vs eager", parity, FP16_MIN_COSINE, FP16_MIN_AGREEMENT,
                            where=lambda: validate.first_nonfinite_node(g.model, data.check))
    bundle.add_file(FP16_ONNX, kind="onnx", precision="fp16", target="portable",
                    io="fp16" if options.fp16_io else "fp32")
    out = {"file": FP16_ONNX, "io": "fp16" if options.fp16_io else "fp32 (Cast at the edges)",
           "kept_fp32": g.kept_fp32, "cosine": parity.cosine, "top1_agreement": parity.top1_agreement}
    if data.val is not None:  # accuracy on the held-out set, as for INT8 (recorded, not gated)
        ref = data.val_reference
        fp32 = gate.accuracy(ref, ref, data.val.labels)
        acc = gate.accuracy(gate.run_graph(g.model, data.val.data), ref, data.val.labels)
        out.update({"fp32": fp32.to_dict(), "fp16": acc.to_dict(), "drop_points": round(gate.drop(fp32, acc), 3)})
    return out


def _cache_paths(bundle, options: PrecisionOptions) -> list[Path]:
    paths = []
    if options.calib_cache is not None:
        paths.append(Path(options.calib_cache))
    paths.append(bundle.out / CALIB_CACHE)
    return paths


def run_calibration(bundle, options: PrecisionOptions, data: PreparedData, model) -> cal.Calibration:
    tensors: list[str] = []
    for t in options.targets:
        for name in WRITERS[t][0].tensors_to_calibrate(model):
            if name not in tensors:
                tensors.append(name)
    with step(f"Calibrating ({options.calib_method}, {len(data.calib.data)} samples, {len(tensors)} tensors)"):
        return cal.calibrate(locate(bundle, FP32_ONNX), tensors, data.calib.data, data.calib.sha256(),
                             options.calib_method, options.percentile, caches=_cache_paths(bundle, options))


def add_int8(bundle, options: PrecisionOptions, data: PreparedData, reference: np.ndarray, eager) -> dict:
    import onnx

    model = onnx.load(str(locate(bundle, FP32_ONNX)))
    calibration = run_calibration(bundle, options, data, model)
    write_json_atomic(bundle.path / CALIB_CACHE, calibration.to_json())
    bundle.add_file(CALIB_CACHE, kind="calibration-cache", precision="int8")
    if options.calib_cache is not None:
        write_json_atomic(Path(options.calib_cache), calibration.to_json())
    if data.val is not None:
        gate_data, labels, gate_ref = data.val.data, data.val.labels, data.val_reference
        gate_desc = f"--val {data.val.source}" + (" (labelled)" if labels is not None else " (agreement with eager)")
    else:
        gate_data, labels, gate_ref, gate_desc = data.check, None, reference, f"{data.check_desc} (agreement)"
    out = {"calibration": {"method": str(calibration.method), "percentile": calibration.percentile,
                           "num_samples": calibration.num_samples, "source": data.calib.source,
                           "seconds": round(calibration.seconds, 2), "reused_cache": calibration.reused,
                           "skipped": data.calib.skipped},
           "max_drop": options.max_drop, "gate_data": gate_desc, "targets": {}}
    failures = []
    for target in options.targets:
        writer, symmetric = WRITERS[target]
        with step(f"Quantizing INT8 for {target} and checking accuracy"):
            res = gate.gated_quantize(model, calibration.ranges, writer.quantize, symmetric, gate_data, gate_ref,
                                      labels, options.max_drop)
        name = int8_name(target)
        parity = validate.compare(reference, gate.run_graph(res.graph.model, data.check))
        out["targets"][str(target)] = {
            "file": name, "fp32": res.fp32.to_dict(), "int8": res.int8.to_dict(), "drop_points": round(res.drop, 3),
            "passed": res.passed, "excluded_layers": res.excluded, "kept_higher_precision": res.graph.kept,
            "quantized_convs": len(res.graph.quantized), "attempts": res.attempts,
            "parity_vs_eager": {"inputs": data.check_desc, **parity.to_dict()},
            "activations": "int8 symmetric" if symmetric else "uint8 asymmetric",
            "weights": "int8 symmetric per-channel"}
        if not res.passed:
            why = (f"its logits are not finite ({res.int8.nonfinite})" if res.int8.nonfinite else
                   f"top-1 drop {res.drop:.2f} points > --max-drop {options.max_drop}")
            failures.append(f"{target}: {why} even with {len(res.excluded)} layer(s) kept in fp32")
            continue
        onnx.save(res.graph.model, str(bundle.path / name))
        onnx.checker.check_model(str(bundle.path / name), full_check=True)
        bundle.add_file(name, kind="onnx", precision="int8", target=str(target),
                        calibration=str(calibration.method))
    bundle.manifest.setdefault("precision", {})["int8"] = out
    if failures:
        raise CheckFailed("INT8 accuracy budget not met: " + "; ".join(failures))
    return out


def apply_precision(bundle, options: PrecisionOptions, data: PreparedData, eager=None) -> PrecisionResult:
    """Add the FP16 and/or INT8 graphs to ``bundle`` (a ``BundleWriter`` or ``BundleUpdate``).

    ``eager`` is the fp32 reference module (default: the bundle's ``model.pt2``). Raises ``CheckFailed`` when a
    graph misses its bar; the caller's bundle context then discards everything written.
    """
    eager = eager if eager is not None else load_eager(bundle)
    reference = _eager_logits(eager, data.check)
    if data.val is not None:
        data.val_reference = _eager_logits(eager, data.val.data)
    result = PrecisionResult()
    section = bundle.manifest.setdefault("precision", {})
    if options.fp16:
        result.fp16 = section["fp16"] = add_fp16(bundle, options, data, reference)
        result.files.append(FP16_ONNX)
    if options.int8:
        if data.calib.warnings:
            bundle.manifest.setdefault("warnings", []).extend(data.calib.warnings)
            result.warnings.extend(data.calib.warnings)
        result.int8 = add_int8(bundle, options, data, reference, eager)
        result.files += [CALIB_CACHE] + [int8_name(t) for t in options.targets]
    return result


def quantize_bundle(bundle_dir: "str | Path", options: PrecisionOptions, force: bool = False) -> tuple[dict, list]:
    """The ``quantize`` command: validate, load data, and add the graphs to an existing bundle atomically."""
    from ..bundle import BundleUpdate, read_manifest

    options.check()
    if not options.wanted:
        raise UserError("nothing to do: pass --fp16 and/or --int8 --calib PATH")
    manifest = read_manifest(bundle_dir)
    if not find_artifacts(manifest, kind="onnx", precision="fp32", target="portable"):
        raise UserError(f"bundle {str(bundle_dir)!r} has no fp32 portable model.onnx to start from")
    pre = Preprocessing.from_dict(manifest["preprocessing"])
    data = prepare(options, pre)
    names = [FP16_ONNX] if options.fp16 else []
    names += [CALIB_CACHE] + [int8_name(t) for t in options.targets] if options.int8 else []
    existing = [n for n in names if (Path(bundle_dir) / n).exists()]
    if existing and not force:
        raise UserError(f"bundle already has {', '.join(existing)}: pass --force to replace")
    with BundleUpdate(bundle_dir, force=force) as b:
        result = apply_precision(b, options, data)
    return b.manifest, result.warnings
