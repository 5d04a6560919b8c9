"""The export pipeline: model -> ONNX -> validation against eager -> bundle. Each step is its own module."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import __version__, validate
from .backends.onnxruntime import OnnxRuntimeRunner
from .backends.torch_eager import TorchRunner
from .bundle import BundleWriter
from .bundle import check_out_dir
from .onnx_export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, check_opset, export_onnx, save_exported_program
from .models import LoadedModel, check_finite_weights, load_model, model_info, preprocessing_for
from .preprocess import Preprocessing, load_images, make_preprocessing
from .progress import step

log = logging.getLogger(__name__)

VALIDATION_SAMPLES = 8
VALIDATION_BATCHES = (1, 4)
FP32_ONNX = "model.onnx"
EAGER_PROGRAM = "model.pt2"


@dataclass
class BundleResult:
    """What ``export`` produced: the bundle folder, its manifest and the fp32 parity with eager."""

    path: Path
    manifest: dict
    parity: validate.Parity
    warnings: list[str] = field(default_factory=list)


def validation_inputs(pre: Preprocessing, images: "str | Path | None", seed: int = 0) -> tuple[np.ndarray, str]:
    """Real images when given (up to ``VALIDATION_SAMPLES``), else seeded standard-normal inputs."""
    if images is not None:
        imgs = load_images(images, pre, limit=VALIDATION_SAMPLES, what="--images")
        return imgs.data, imgs.describe(images)
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((VALIDATION_SAMPLES, 3, *pre.input_size), dtype=np.float32)
    return data, f"random:{VALIDATION_SAMPLES} seed={seed}"


def check_parity(model, onnx_path: Path, data: np.ndarray) -> dict:
    """fp32 parity of the ONNX graph in ONNX Runtime (CPU) against the eager model at batch 1 and 4."""
    with TorchRunner(model) as eager, OnnxRuntimeRunner(onnx_path) as ort:
        res = validate.parity_at_batches(eager, ort, data, VALIDATION_BATCHES)
    return res


def locate_nonfinite(eager, graph, data: np.ndarray) -> str | None:
    """The first module of ``eager`` with a non-finite output, else the first such node of ``graph``."""
    return validate.first_nonfinite_module(eager, data) or validate.first_nonfinite_node(graph, data)


def model_metadata(arch: str, weights: dict, pre: Preprocessing, num_classes: int) -> dict:
    return {
        "resnet_deploy.version": __version__,
        "resnet_deploy.arch": arch,
        "resnet_deploy.weights_source": weights.get("source", "unknown"),
        "resnet_deploy.weights_sha256": weights.get("sha256") or "",
        "resnet_deploy.num_classes": str(num_classes),
        "resnet_deploy.preprocessing": pre.to_dict(),
    }


def export(model, out_dir: "str | Path", *, preprocessing: Preprocessing | None = None, input_size="224",
           arch: str = "custom", weights: dict | None = None, num_classes: int | None = None,
           opset: int = DEFAULT_OPSET, external_data: bool | None = None, images: "str | Path | None" = None,
           force: bool = False, seed: int = 0, validation_data: tuple[np.ndarray, str] | None = None,
           fuse: bool = True, fuse_skip=(), fold_bn: bool = True,
           precision=None, engine: str = "auto", engine_options=None, source: dict | None = None) -> BundleResult:
    """Export any residual network (``nn.Module`` returning (N, C) logits) to a validated deploy bundle.

    Writes ``model.onnx`` and ``manifest.json`` into ``out_dir`` atomically. Raises ``CheckFailed`` (and
    leaves nothing) when the ONNX graph does not match the eager model in fp32. ``fold_bn`` folds Conv+BN in
    PyTorch before export; ``fuse`` runs the fusion stage (``model.onnxruntime.onnx``, ``fusion_report.json``),
    skipping the passes named in ``fuse_skip``. ``engine`` (auto|always|never) controls TensorRT plans
    (``engine.export_engines``; ``engine_options`` an ``engine.BuildOptions``). ``precision`` (a
    ``precision.PrecisionOptions``) adds FP16 / INT8 graphs to the same bundle. ``source`` (where the model
    came from: a timm name, a ``--model`` spec and its file's sha256) goes into the manifest as ``model``.
    """
    import torch

    from .types import EngineMode

    if EngineMode.parse(engine, "--engine") is EngineMode.ALWAYS:
        from .backends import tensorrt as trt_backend

        trt_backend.require()  # the same one-line error build_engines would give, before minutes of export

    pre = preprocessing or make_preprocessing(input_size)
    check_opset(opset)
    check_out_dir(out_dir, force)
    weights = weights or {"source": "user-module", "sha256": None}
    model = model.eval()
    check_finite_weights(model.state_dict(), f"model {arch!r}")
    if num_classes is None:
        with torch.no_grad():
            num_classes = int(model(torch.zeros(1, 3, *pre.input_size)).shape[-1])
    data, data_desc = validation_data or validation_inputs(pre, images, seed)
    prepared = None
    if precision is not None and precision.wanted:
        from .precision import prepare

        precision.images = precision.images or images
        prepared = prepare(precision, pre)  # bad calibration data fails here, before any export work
    warnings = []
    if weights.get("source") == "random":
        warnings.append("weights are RANDOM: outputs and accuracy mean nothing; use for plumbing and timing only")
    folded = None
    if fuse:
        from .fuse import passes_for

        passes_for("onnxruntime", fuse_skip)  # a bad pass name fails before any work
    if fold_bn:
        from .fuse.torch_fold import fold_conv_bn

        with step("Folding Conv+BatchNorm in PyTorch"):
            folded = fold_conv_bn(model)
    with BundleWriter(out_dir, force=force) as bundle:
        onnx_path = bundle.path / FP32_ONNX
        with step("Exporting to ONNX"):
            result = export_onnx(folded.model if folded else model, onnx_path, pre.input_size, opset, external_data,
                                 metadata=model_metadata(arch, weights, pre, num_classes))
        with step("Validating ONNX Runtime vs eager"):
            parity = check_parity(model, onnx_path, data)
        overall = parity["overall"]
        with step("Saving the eager reference (torch.export)"):
            save_exported_program(model, bundle.path / EAGER_PROGRAM, pre.input_size)
        bundle.add_file(FP32_ONNX, kind="onnx", precision="fp32", target="portable", opset=result.opset)
        bundle.add_file(EAGER_PROGRAM, kind="torch-exported-program", precision="fp32")
        if result.external_data:
            bundle.add_file(FP32_ONNX + ".data", kind="onnx-external-data", precision="fp32")
        bundle.manifest.update({
            "arch": arch,
            **({"model": source} if source else {}),
            "weights": weights,
            "num_classes": num_classes,
            "input": {"name": INPUT_NAME, "shape": [-1, 3, *pre.input_size], "dtype": "float32", "layout": "NCHW",
                      "dynamic_axes": {"0": "batch"}},
            "outputs": [{"name": OUTPUT_NAME, "shape": [-1, num_classes], "dtype": "float32"}],
            "preprocessing": pre.to_dict(),
            "export": {"opset": result.opset, "seconds": round(result.seconds, 2), "exporter": "torch.onnx dynamo",
                       "nodes": result.node_count, "op_counts": result.op_counts},
            "validation": {"fp32": {
                "backend": "onnxruntime-cpu", "reference": "torch eager fp32", "inputs": data_desc,
                "batches": list(VALIDATION_BATCHES), **overall.to_dict(),
                "per_batch": {str(b): p.to_dict() for b, p in parity["per_batch"].items()},
                "passed": overall.passes(validate.FP32_MIN_COSINE, validate.FP32_MIN_AGREEMENT),
            }},
            "warnings": warnings,
        })
        validate.require_parity("fp32 ONNX graph vs eager", overall, validate.FP32_MIN_COSINE,
                                validate.FP32_MIN_AGREEMENT, where=lambda: locate_nonfinite(model, onnx_path, data))
        if fuse:
            from .fuse.stage import fuse_bundle

            with step("Fusing (portable, onnxruntime) and validating vs eager"):
                fuse_bundle(bundle, eager=model, data=data, skip=fuse_skip,
                            torch_fold=folded.to_dict() if folded else None)
        if prepared is not None:
            from .precision import apply_precision

            # its warnings go into manifest["warnings"], which is this ``warnings`` list
            apply_precision(bundle, precision, prepared, eager=model)
        from .engine import export_engines

        export_engines(bundle, engine, engine_options, images=images, seed=seed)
        manifest = bundle.manifest
    return BundleResult(bundle.out, manifest, overall, warnings)


def export_arch(arch: str, out_dir: "str | Path", *, weights: str = "random", num_classes: int = 1000,
                input_size=None, resize: int | None = None, mean=None, std=None, interpolation: str | None = None,
                seed: int = 0, **kwargs) -> BundleResult:
    """Export a ResNet-family model by name to a validated bundle: a torchvision name (``registry.ARCHS``) or
    ``timm/<name>`` (``timm_models.names()``, with timm's pretrained-config preprocessing as the default)."""
    # Everything that can be checked cheaply is checked before the model is loaded.
    pre = preprocessing_for(arch, weights, input_size, resize, mean, std, interpolation)
    check_opset(kwargs.get("opset", DEFAULT_OPSET))
    check_out_dir(out_dir, kwargs.get("force", False))
    if kwargs.get("precision") is not None:
        kwargs["precision"].check()  # option errors before loading anything
    kwargs.setdefault("validation_data", validation_inputs(pre, kwargs.get("images"), seed))
    with step(f"Loading {arch} ({weights} weights)"):
        loaded: LoadedModel = load_model(arch, weights, num_classes, seed)
    return export(loaded.model, out_dir, preprocessing=pre, arch=arch, weights=loaded.weights,
                  num_classes=loaded.num_classes, seed=seed, source=model_info(arch), **kwargs)


def export_model(spec: str, out_dir: "str | Path", *, weights: str = "DEFAULT", num_classes: int | None = None,
                 input_size=None, resize: int | None = None, mean=None, std=None, interpolation: str | None = None,
                 seed: int = 0, **kwargs) -> BundleResult:
    """Export the module that ``FILE.py:FUNCTION`` or ``package.module:FUNCTION`` returns (see ``model_spec``).

    ``weights``: ``DEFAULT`` keeps the weights FUNCTION gave the module, ``random`` re-initialises them (seeded,
    randomised BatchNorm), a PATH loads a checkpoint (same formats and key checks as ``--arch``).
    """
    from . import model_spec
    from .models import RANDOM, _read_checkpoint, load_state_dict_checked, randomize_batchnorm
    from .files import sha256_file

    pre = make_preprocessing(input_size, resize, mean, std, interpolation or "bilinear")
    ms = model_spec.parse(spec)
    check_opset(kwargs.get("opset", DEFAULT_OPSET))
    check_out_dir(out_dir, kwargs.get("force", False))
    if kwargs.get("precision") is not None:
        kwargs["precision"].check()
    if num_classes is not None and num_classes < 1:
        from .errors import UserError

        raise UserError(f"--num-classes {num_classes} must be >= 1")
    kwargs.setdefault("validation_data", validation_inputs(pre, kwargs.get("images"), seed))
    with step(f"Building {spec} ({weights} weights)"):
        model, classes, passed = model_spec.build(ms, num_classes, pre.input_size, seed, reinit=weights == RANDOM)
        if weights == RANDOM:
            randomize_batchnorm(model, seed)
            info = {"source": RANDOM, "seed": seed, "sha256": None}
        elif weights == "DEFAULT":
            info = {"source": "user-function", "sha256": None}
        else:
            path = Path(weights).expanduser()
            state = _read_checkpoint(path)
            check_finite_weights(state, f"weights file {str(path)!r}")
            load_state_dict_checked(model, state, repr(str(path)), f"the module {ms.function}() returns")
            info = {"source": "checkpoint", "path": str(path), "sha256": sha256_file(path)}
    source = {**ms.describe(), "num_classes_argument": passed}
    return export(model.eval(), out_dir, preprocessing=pre, arch=spec, weights=info, num_classes=classes,
                  seed=seed, source=source, **kwargs)
