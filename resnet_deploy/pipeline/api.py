"""The export pipeline: one ``Reference``, then the stages (export, fuse, precision, TensorRT) on one bundle.

Each stage is ``run(bundle, reference, options) -> Result`` in its own module; ``export`` chains them and
returns every result. See docs/architecture.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .. import validate
from ..bundle import BundleWriter, check_out_dir
from ..models import LoadedModel, check_finite_weights, load_model, model_info, preprocessing_for
from ..exporter.onnx_export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAME, check_opset
from ..preprocess import Preprocessing, make_preprocessing
from ..progress import step
from ..stages.reference import make_inputs
from ..version import __version__

log = logging.getLogger(__name__)

RANDOM_WEIGHTS = "weights are RANDOM: outputs and accuracy mean nothing; use for plumbing and timing only"


@dataclass
class BundleResult:
    """What ``export`` produced: the bundle folder, its manifest, the fp32 parity with eager, the warnings, and
    every stage's result (``None`` for a stage that did not run)."""

    path: Path
    manifest: dict
    parity: validate.Parity
    warnings: list[str] = field(default_factory=list)
    export: object = None  # export_stage.ExportStageResult
    fusion: object = None  # fuse.stage.FuseStageResult
    precision: object = None  # precision.stage.PrecisionResult
    engines: object = None  # trt.stage.EngineBuildResult
    failures: list[str] = field(default_factory=list)  # optional precisions left out (PrecisionFailed), one line each

    @property
    def ok(self) -> bool:
        """Everything asked for was written; False when an optional precision missed its bar or budget (the
        bundle still holds every validated artifact, and the manifest says what failed and why)."""
        return not self.failures

    def failure_line(self) -> str:
        """One line for a run whose bundle was written without some precision."""
        return (f"{'; '.join(self.failures)}: bundle {str(self.path)!r} written without it (everything in it is "
                "validated; the manifest's precision section records the failure)")


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
           force: bool = False, seed: int = 0, inputs: tuple | None = None, fuse: bool = True, fuse_skip=(),
           fold_bn: bool = True, precision=None, engine: str = "auto", engine_options=None,
           source: dict | None = None) -> BundleResult:
    """Export any residual network (``nn.Module`` returning (N, C) logits) to a validated deploy bundle.

    The stages run in order on one ``Reference`` (the inputs, from ``images`` or seeded, and the eager logits):
    export (``model.onnx`` + ``model.pt2``, fp32 parity), fusion (``fuse``; passes in ``fuse_skip`` skipped;
    ``fold_bn`` folds Conv+BN in PyTorch first), precision (``precision``: a ``precision.PrecisionOptions`` or an
    already prepared ``precision.PrecisionPlan``) and TensorRT plans (``engine`` auto|always|never,
    ``engine_options`` a ``trt.stage.BuildOptions``). The bundle is written atomically: a failed check raises
    ``CheckFailed`` and leaves nothing, except an optional precision (fp16, bf16, an INT8 target) that misses its
    bar or budget even after falling back: it is left out, the rest is written, and ``failures`` (``ok`` False)
    and the manifest say what failed. ``inputs`` are reference inputs already loaded (``reference.make_inputs``).
    ``source`` (where the model came from: a timm name, a ``--model`` spec and its file's sha256) goes into the
    manifest as ``model``.
    """
    import torch

    from ..exporter import stage as export_stage
    from ..stages.reference import build_reference
    from ..types import EngineMode

    mode = EngineMode.parse(engine, "--engine")
    if mode is EngineMode.ALWAYS:
        from ..backends import tensorrt as trt_backend

        trt_backend.require()  # the same one-line error the build stage would give, before minutes of export
    pre = preprocessing or make_preprocessing(input_size)
    check_opset(opset)
    check_out_dir(out_dir, force)
    weights = weights or {"source": "user-module", "sha256": None}
    model = model.eval()
    check_finite_weights(model.state_dict(), f"model {arch!r}")
    if num_classes is None:
        with torch.no_grad():
            num_classes = int(model(torch.zeros(1, 3, *pre.input_size)).shape[-1])
    if fuse:
        from ..fuse import passes_for

        passes_for("onnxruntime", fuse_skip)  # a bad pass name fails before any work
    plan = None
    if precision is not None:
        from ..precision.stage import prepare

        plan = prepare(precision, pre)  # bad calibration data fails here, before any export work
    reference = build_reference(model, pre, images if images is not None else (plan.options.images if plan else None),
                                seed, fallback=plan.fallback_inputs() if plan else None, inputs=inputs)
    warnings = [RANDOM_WEIGHTS] if weights.get("source") == "random" else []
    with BundleWriter(out_dir, force=force) as bundle:
        bundle.manifest.update({
            "arch": arch, "weights": weights, "num_classes": num_classes,
            "input": {"name": INPUT_NAME, "shape": [-1, 3, *pre.input_size], "dtype": "float32", "layout": "NCHW",
                      "dynamic_axes": {"0": "batch"}},
            "outputs": [{"name": OUTPUT_NAME, "shape": [-1, num_classes], "dtype": "float32"}],
            "preprocessing": pre.to_dict(), "warnings": warnings, **({"model": source} if source else {})})
        result = BundleResult(bundle.out, bundle.manifest, None, warnings)
        result.export = export_stage.run(bundle, reference, export_stage.ExportOptions(
            pre.input_size, opset, external_data, model_metadata(arch, weights, pre, num_classes), fold_bn))
        result.parity = result.export.parity
        if fuse:
            from ..fuse import stage as fuse_stage

            result.fusion = fuse_stage.run(bundle, reference, fuse_stage.FuseOptions(
                skip=tuple(fuse_skip), torch_fold=result.export.torch_fold))
        if plan is not None:
            from ..precision import stage as precision_stage

            result.precision = precision_stage.run(bundle, reference, plan)
            warnings.extend(result.precision.warnings)
            result.failures = list(result.precision.failures)
        from ..engines import stage as trt_stage

        result.engines = trt_stage.export_engines(bundle, reference, mode, engine_options)
        warnings.extend(result.engines.warnings)
        bundle.manifest["warnings"] = result.warnings = list(dict.fromkeys(warnings))
    return result


def export_arch(arch: str, out_dir: "str | Path", *, weights: str = "random", num_classes: int = 1000,
                input_size=None, resize: int | None = None, mean=None, std=None, interpolation: str | None = None,
                seed: int = 0, **kwargs) -> BundleResult:
    """Export a ResNet-family model by name to a validated bundle: a torchvision name (``registry.ARCHS``) or
    ``timm/<name>`` (``timm_models.names()``, with timm's pretrained-config preprocessing as the default)."""
    # Everything that can be checked cheaply is checked (and the data loaded) before the model is loaded.
    pre = preprocessing_for(arch, weights, input_size, resize, mean, std, interpolation)
    _check_early(out_dir, pre, seed, kwargs)
    with step(f"Loading {arch} ({weights} weights)"):
        loaded: LoadedModel = load_model(arch, weights, num_classes, seed)
    return export(loaded.model, out_dir, preprocessing=pre, arch=arch, weights=loaded.weights,
                  num_classes=loaded.num_classes, seed=seed, source=model_info(arch), **kwargs)


def _check_early(out_dir, pre, seed: int, kwargs: dict) -> None:
    """Options, output folder and data, checked and loaded before any model is built (bad input fails fast)."""
    check_opset(kwargs.get("opset", DEFAULT_OPSET))
    check_out_dir(out_dir, kwargs.get("force", False))
    if kwargs.get("precision") is not None:
        from ..precision.stage import prepare

        kwargs["precision"] = prepare(kwargs["precision"], pre)
    if kwargs.get("images") is not None and kwargs.get("inputs") is None:
        kwargs["inputs"] = make_inputs(pre, kwargs["images"], seed=seed)


def export_model(spec: str, out_dir: "str | Path", *, weights: str = "DEFAULT", num_classes: int | None = None,
                 input_size=None, resize: int | None = None, mean=None, std=None, interpolation: str | None = None,
                 seed: int = 0, **kwargs) -> BundleResult:
    """Export the module that ``FILE.py:FUNCTION`` or ``package.module:FUNCTION`` returns (see ``model_spec``).

    ``weights``: ``DEFAULT`` keeps the weights FUNCTION gave the module, ``random`` re-initialises them (seeded,
    randomised BatchNorm), a PATH loads a checkpoint (same formats and key checks as ``--arch``).
    """
    from ..models import model_spec
    from ..files import sha256_file
    from ..models import RANDOM, _read_checkpoint, load_state_dict_checked, randomize_batchnorm

    pre = make_preprocessing(input_size, resize, mean, std, interpolation or "bilinear")
    ms = model_spec.parse(spec)
    if num_classes is not None and num_classes < 1:
        from ..errors import UserError

        raise UserError(f"--num-classes {num_classes} must be >= 1")
    _check_early(out_dir, pre, seed, kwargs)
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
