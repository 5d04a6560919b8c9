"""The export pipeline: one checked request, one ``Reference``, then the stage list (export, fuse, precision,
OpenVINO, TensorRT) on one bundle through one loop.

Each stage is ``run(bundle, reference, options) -> Result`` in its own package; ``export`` runs them in order and
returns every result. See docs/architecture.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .. import validate
from ..bundle import BundleWriter, load_eager
from ..engines import stage as engines_stage
from ..exporter import stage as exporter_stage
from ..exporter.onnx_export import INPUT_NAME, OUTPUT_NAME
from ..fuse import stage as fuse_stage
from ..models import LoadedModel, check_finite_weights, load_model, model_info, preprocessing_for
from ..models.classes import KEY as CLASSES_KEY, ClassNames, arch_classes
from ..openvino_ir import stage as openvino_stage
from ..precision import stage as precision_stage
from ..preprocess import Preprocessing, make_preprocessing
from ..progress import step
from ..version import __version__
from ..stages.base import give_memory_back
from .request import ExportRequest

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
    export: object = None  # exporter.stage.ExportStageResult
    fusion: object = None  # fuse.stage.FuseStageResult
    precision: object = None  # precision.stage.PrecisionResult
    openvino: object = None  # openvino_ir.stage.OpenVinoStageResult
    engines: object = None  # engines.stage.EngineBuildResult
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


# The stages of ``export``, in order: (result field, stage module). Each is ``run(bundle, reference, options)``.
STAGES = (("export", exporter_stage), ("fusion", fuse_stage), ("precision", precision_stage),
          ("openvino", openvino_stage), ("engines", engines_stage))
# The last stage that reads a graph in memory: after it, the bundle lets the graphs go (the later stages hand
# files to their runtimes).
LAST_GRAPH_READER = "precision"


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
           source: dict | None = None, classes: ClassNames | None = None, request: ExportRequest | None = None,
           **options) -> BundleResult:
    """Export any residual network (``nn.Module`` returning (N, C) logits) to a validated deploy bundle.

    ``options`` are ``ExportRequest.create``'s (``opset``, ``external_data``, ``images``, ``force``, ``seed``,
    ``inputs``, ``fuse``, ``fuse_skip``, ``fold_bn``, ``precision`` (a ``precision.PrecisionOptions``),
    ``engine`` auto|always|never, ``engine_options`` a ``engines.stage.BuildOptions``), checked once; or pass a
    ``request`` already made. The stages run in order on one ``Reference`` (the inputs, from ``images`` or seeded,
    and the eager logits): export (``model.onnx`` + ``model.pt2``, fp32 parity), fusion, precision, OpenVINO and
    TensorRT plans, each handing the next the graphs it wrote in memory. The bundle is written atomically: a failed
    check raises ``CheckFailed`` and leaves nothing, except an optional precision (fp16, bf16, an INT8 target) that
    misses its bar or budget even after falling back: it is left out, the rest is written, and ``failures`` (``ok``
    False) and the manifest say what failed. ``source`` (where the model came from: a timm name, a ``--model`` spec
    and its file's sha256) goes into the manifest as ``model``. The class names (the request's ``class_names``,
    else ``classes``, the arch's own) go into the manifest as ``classes``; a count that is not the model's is a
    ``UserError`` before anything is exported.
    """
    import torch

    from ..stages.reference import build_reference

    pre = preprocessing or (request.preprocessing if request else make_preprocessing(input_size))
    request = request or ExportRequest.create(out_dir, pre, **options)
    weights = weights or {"source": "user-module", "sha256": None}
    model = model.eval()
    check_finite_weights(model.state_dict(), f"model {arch!r}")
    if num_classes is None:
        with torch.no_grad():
            num_classes = int(model(torch.zeros(1, 3, *pre.input_size)).shape[-1])
    names = request.class_names or classes
    if names is not None:
        names.check_count(num_classes)
    images, fallback = request.reference_data()
    reference = build_reference(model, pre, images, request.seed, fallback=fallback, inputs=request.inputs)
    del model  # the Reference holds it for as long as a stage needs eager outputs
    warnings = [RANDOM_WEIGHTS] if weights.get("source") == "random" else []
    with BundleWriter(request.out, force=request.force) as bundle:
        bundle.manifest.update({
            "arch": arch, "weights": weights, "num_classes": num_classes,
            "input": {"name": INPUT_NAME, "shape": [-1, 3, *pre.input_size], "dtype": "float32", "layout": "NCHW",
                      "dynamic_axes": {"0": "batch"}},
            "outputs": [{"name": OUTPUT_NAME, "shape": [-1, num_classes], "dtype": "float32"}],
            **({CLASSES_KEY: names.to_manifest()} if names is not None else {}),
            "preprocessing": pre.to_dict(), "warnings": warnings, **({"model": source} if source else {})})
        result = BundleResult(bundle.out, bundle.manifest, None, warnings)
        for field_name, stage in STAGES:
            options = _stage_options(field_name, request, result, model_metadata(arch, weights, pre, num_classes))
            if options is not None:
                setattr(result, field_name, stage.run(bundle, reference, options))
                warnings.extend(getattr(getattr(result, field_name), "warnings", []))
                result.failures.extend(getattr(getattr(result, field_name), "failures", []))
            if field_name == "export" and request.precision is not None:
                # what the precision and OpenVINO stages compare with, while the module is here; then let it go
                reference.logits()
                reference.let_go_of_model(lambda: load_eager(bundle))
            if field_name == LAST_GRAPH_READER:
                bundle.drop_graphs()
            give_memory_back()
        result.parity = result.export.parity
        bundle.manifest["warnings"] = result.warnings = list(dict.fromkeys(warnings))
    return result


def _stage_options(name: str, request: ExportRequest, result: BundleResult, metadata: dict):
    """Each stage's options from the request (None: it does not run); fusion keeps what the export folded."""
    if name == "export":
        return request.export_options(metadata)
    if name == "fusion":
        return request.fuse_options(result.export.torch_fold)
    if name == "precision":
        return request.precision
    if name == "openvino":
        return request.openvino
    return request.engines


def export_arch(arch: str, out_dir: "str | Path", *, weights: str = "random", num_classes: int = 1000,
                input_size=None, resize: int | None = None, mean=None, std=None, interpolation: str | None = None,
                seed: int = 0, **kwargs) -> BundleResult:
    """Export a ResNet-family model by name to a validated bundle: a torchvision name (``registry.ARCHS``) or
    ``timm/<name>`` (``timm_models.names()``, with timm's pretrained-config preprocessing as the default). The
    bundle's class names: ``class_names`` (a file, one name per line, or a list) when given, else the arch's own
    (``models.classes.arch_classes``: torchvision's ImageNet categories, timm's ImageNet subsets), else none."""
    # Everything that can be checked cheaply is checked (and the data loaded) before the model is loaded.
    pre = preprocessing_for(arch, weights, input_size, resize, mean, std, interpolation)
    # bad input fails before the model loads
    request = ExportRequest.create(out_dir, pre, seed=seed, num_classes=num_classes, **kwargs)
    with step(f"Loading {arch} ({weights} weights)"):
        loaded: LoadedModel = load_model(arch, weights, num_classes, seed)
    classes = None if request.class_names else arch_classes(arch, loaded.weights, loaded.num_classes)
    weights_info, count = loaded.weights, loaded.num_classes
    handed = [loaded.model]  # handed over, not kept here: export() lets the model go once no stage needs it
    del loaded
    return export(handed.pop(), out_dir, arch=arch, weights=weights_info, num_classes=count,
                  source=model_info(arch), classes=classes, request=request)


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
    # bad input fails before the model is built
    request = ExportRequest.create(out_dir, pre, seed=seed, num_classes=num_classes, **kwargs)
    with step(f"Building {spec} ({weights} weights)"):
        model, classes, passed = model_spec.build(ms, num_classes, pre.input_size, seed, reinit=weights == RANDOM)
        if request.class_names is not None:  # the class count is known now: a mismatch fails before any weights
            request.class_names.check_count(classes)
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
    handed = [model.eval()]  # handed over, not kept here: export() lets the model go once no stage needs it
    del model
    return export(handed.pop(), out_dir, arch=spec, weights=info, num_classes=classes, source=source,
                  request=request)
