"""One typed, immutable export request: every option of ``export`` checked once, with its one-line error, and the
data it names loaded, before any model is built. The CLI and the Python API both build it; no stage parses a
string option again."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..engines.stage import BuildOptions, EngineOptions
from ..exporter.onnx_export import DEFAULT_OPSET, check_opset
from ..exporter.stage import ExportOptions
from ..fuse.stage import FuseOptions
from ..models.classes import ClassNames, given
from ..openvino_ir.stage import OpenVinoOptions
from ..precision.stage import PrecisionOptions, PrecisionPlan, prepare
from ..preprocess import Preprocessing
from ..types import EngineMode
from .update import openvino_options


@dataclass(frozen=True)
class ExportRequest:
    """What one ``export`` does, checked: where (``out``, ``force``), how the model is fed (``preprocessing``),
    the reference inputs (``inputs``: loaded ``--images`` or None for seeded ones, ``seed``), and each stage's
    options (None: the stage does not run)."""

    out: Path
    force: bool
    preprocessing: Preprocessing
    opset: int
    external_data: bool | None
    fold_bn: bool
    seed: int
    images: "str | Path | None"
    inputs: tuple | None
    fuse: FuseOptions | None
    precision: PrecisionPlan | None
    engines: EngineOptions = field(default_factory=EngineOptions)
    class_names: ClassNames | None = None  # the user's (--class-names): they override the arch's own

    @classmethod
    def create(cls, out_dir: "str | Path", preprocessing: Preprocessing, *, opset: int = DEFAULT_OPSET,
               external_data: bool | None = None, images: "str | Path | None" = None, force: bool = False,
               seed: int = 0, inputs: tuple | None = None, fuse: bool = True, fuse_skip=(), fold_bn: bool = True,
               precision: "PrecisionOptions | PrecisionPlan | None" = None, engine: "str | EngineMode" = "auto",
               engine_options: BuildOptions | None = None, class_names=None,
               num_classes: int | None = None) -> "ExportRequest":
        """Check every option once (today's messages and exit codes) and load the data they name: bad input fails
        here, before any model is built or anything written. ``class_names`` (a ``--class-names`` file or a list)
        is read here, and its count checked against ``num_classes`` when the caller knows it already (``export``
        checks it again once the model is built)."""
        from ..bundle import check_out_dir
        from ..stages.reference import make_inputs

        mode = EngineMode.parse(engine, "--engine")
        if mode is EngineMode.ALWAYS:
            from ..backends import tensorrt as trt_backend

            trt_backend.require()  # the same one-line error the build stage would give, before minutes of export
        opset = check_opset(opset)
        out = check_out_dir(out_dir, force)
        names = given(class_names)
        if names is not None and num_classes is not None:
            names.check_count(num_classes)
        fuse_options = FuseOptions(skip=tuple(fuse_skip)) if fuse else None
        plan = prepare(precision, preprocessing) if precision is not None else None
        if images is not None and inputs is None:
            inputs = make_inputs(preprocessing, images, seed=seed)
        return cls(out, force, preprocessing, opset, external_data, fold_bn, seed, images, inputs, fuse_options, plan,
                   EngineOptions(mode, engine_options or BuildOptions()), names)

    def export_options(self, metadata: dict) -> ExportOptions:
        return ExportOptions(self.preprocessing.input_size, self.opset, self.external_data, metadata, self.fold_bn)

    def fuse_options(self, torch_fold: dict | None) -> FuseOptions | None:
        if self.fuse is None:
            return None
        return FuseOptions(skip=self.fuse.skip, torch_fold=torch_fold)

    @property
    def openvino(self) -> OpenVinoOptions | None:
        return openvino_options(self.precision.options) if self.precision is not None else None

    def reference_data(self):
        """(images, fallback) for the Reference: ``--images`` when given, else the precision run's held-out or
        calibration data."""
        images = self.images if self.images is not None else (self.precision.options.images if self.precision else None)
        return images, self.precision.fallback_inputs() if self.precision else None
