"""The commands that change an existing bundle: ``fuse BUNDLE``, ``quantize BUNDLE`` and ``build BUNDLE``. Each
is a stage list run by ``stages.base.update_bundle`` (open, update, verify, commit: all or nothing) after the
checks that need no model."""

from __future__ import annotations

from pathlib import Path

from .. import layout
from ..bundle import find_artifacts, read_manifest
from ..engines import stage as engines_stage
from ..errors import UserError
from ..fuse import stage as fuse_stage
from ..layout import Kind
from ..openvino_ir import stage as openvino_stage
from ..precision import stage as precision_stage
from ..preprocess import Preprocessing
from ..stages.base import update_bundle
from ..types import EngineMode


def fuse_bundle(bundle_dir: "str | Path", skip=(), force: bool = False) -> tuple[fuse_stage.FuseStageResult, dict]:
    """``resnet-deploy fuse BUNDLE``: re-run the fusion stage on an existing bundle against its own eager reference
    on seeded inputs. Returns the stage result and the new manifest."""
    options = fuse_stage.FuseOptions(skip=tuple(skip), force=force)
    (result,), manifest = update_bundle(bundle_dir, [(fuse_stage, options)], force=force)
    return result, manifest


def openvino_options(options: precision_stage.PrecisionOptions) -> "openvino_stage.OpenVinoOptions | None":
    """What the OpenVINO stage does after the precision stage: IRs for ``--target openvino``, OpenVINO's bf16 run
    for ``--bf16`` (required) or ``--target openvino`` (recorded); None when neither was asked for."""
    if not (options.openvino or options.bf16):
        return None
    return openvino_stage.OpenVinoOptions(write_ir=options.openvino, check_bf16=True, bf16_required=options.bf16)


def quantize_bundle(bundle_dir: "str | Path", options: precision_stage.PrecisionOptions,
                    force: bool = False) -> tuple[dict, list]:
    """``resnet-deploy quantize BUNDLE``: check, load data, and add the graphs (and the OpenVINO IRs) to an existing
    bundle, against the bundle's own eager reference. Returns the new manifest and the warnings."""
    manifest = read_manifest(bundle_dir)
    plan = precision_stage.prepare(options, Preprocessing.from_dict(manifest["preprocessing"]))
    options = plan.options
    if not options.wanted:
        raise UserError("nothing to do: pass --fp16, --bf16, --int8 --calib PATH and/or --target openvino")
    if not find_artifacts(manifest, kind=Kind.ONNX, precision="fp32", target="portable"):
        raise UserError(f"bundle {str(bundle_dir)!r} has no fp32 portable {layout.FP32_ONNX} to start from")
    if options.keep_fp32:  # an unknown --keep-fp32 node is one line before anything is loaded or locked
        import onnx

        from ..bundle import verified
        from ..precision.reduced_precision import check_keep_fp32

        check_keep_fp32(onnx.load(str(verified(bundle_dir, manifest, layout.FP32_ONNX))), options.keep_fp32)
    names = [layout.reduced_onnx(f) for f, wanted in (("fp16", options.fp16), ("bf16", options.bf16)) if wanted]
    names += [layout.CALIBRATION] + [layout.int8_onnx(t) for t in options.int8_targets] if options.int8 else []
    names += [layout.openvino_ir(p) for p in ("fp32", "int8")] if options.openvino else []
    existing = [n for n in names if (Path(bundle_dir) / n).exists()]
    if existing and not force:
        raise UserError(f"bundle already has {', '.join(existing)}: pass --force to replace")
    stages = [(precision_stage, plan)]
    if openvino_options(options) is not None:
        stages.append((openvino_stage, openvino_options(options)))
    results, manifest = update_bundle(bundle_dir, stages, force=force, images=options.images,
                                      fallback=plan.fallback_inputs())
    return manifest, [w for r in results for w in r.warnings]


def build_bundle(bundle_dir: "str | Path", options: engines_stage.BuildOptions, images=None, force: bool = False,
                 seed: int = 0) -> engines_stage.EngineBuildResult:
    """``resnet-deploy build BUNDLE``: add plans to an existing bundle, checked against the bundle's eager reference
    on ``images`` (else seeded inputs)."""
    read_manifest(bundle_dir)
    (result,), _ = update_bundle(
        bundle_dir, [(engines_stage, engines_stage.EngineOptions(EngineMode.ALWAYS, options))], force=force,
        images=images, seed=seed,
        before=lambda b: engines_stage.graphs_to_build(b.manifest, options.precisions))  # bad --precision first
    return result
