"""``resnet-deploy export``: a torchvision or timm ResNet, or your own module (``--model``), to a validated bundle."""

from __future__ import annotations

import click

from .. import layout
from ..exporter.onnx_export import DEFAULT_OPSET
from ..models import registry
from ..preprocess import INTERPOLATIONS
from ..types import EngineMode
from .build_cmd import engine_options, make_options, print_plans
from .fuse_cmd import node_counts
from .common import (bundle_json, emit_json, fmt_parity, force_option, json_option, out, split_names, verbose_option,
                     warn)
from .precision_options import precision_options


def _list_archs(ctx, param, value) -> None:
    if not value or ctx.resilient_parsing:
        return
    for line in registry.list_archs():
        click.echo(line)
    ctx.exit(0)


@click.command()
@click.option("--arch", default=None, metavar="NAME|timm/NAME",
              help=f"Architecture: a torchvision ResNet ({', '.join(registry.arch_names()[:3])}, ...) or timm/NAME "
                   "(timm's ResNet family, with resnet-deploy[timm]); see --list-archs.")
@click.option("--model", "model_spec", default=None, metavar="FILE.py:FUNCTION|module:FUNCTION",
              help="Your own module instead of --arch: FUNCTION returns an nn.Module with (N, C) logits; it gets "
                   "num_classes=N when it takes that argument and --num-classes is given.")
@click.option("--list-archs", is_flag=True, expose_value=False, is_eager=True, callback=_list_archs,
              help="List the torchvision and timm architectures and exit.")
@click.option("--weights", default="DEFAULT", show_default=True, metavar="DEFAULT|NAME|random|PATH",
              help="The published weights (torchvision: torch hub cache, else downloaded; timm: its default or "
                   "NAMEd pretrained tag from the Hugging Face cache, else downloaded; --model: what FUNCTION "
                   "gave), 'random' (seeded, randomised BatchNorm: accuracy means nothing) or a checkpoint PATH "
                   "(state_dict, {'state_dict':...}, {'model':...}, .safetensors; loaded with weights_only=True).")
@click.option("--num-classes", type=click.IntRange(min=1), default=None, metavar="N",
              help="Classifier size [default: 1000; --model: what FUNCTION returns]; replaces the head of "
                   "published weights.")
@click.option("--class-names", default=None, metavar="FILE",
              help="Class names, one per line (UTF-8), one line per class, recorded in the bundle [default: "
                   "torchvision's ImageNet names for 1000 classes; timm's ImageNet names where its class count "
                   "matches one; else none, and readers show the index].")
@click.option("--input-size", default=None, metavar="S|HxW",
              help="Crop size (>= 32) [default: 224; timm: its pretrained config].")
@click.option("--resize", type=click.IntRange(min=1), default=None, metavar="PIXELS", help="Shorter side before the crop "
              "[default: input size / 0.875; timm: input size / its crop fraction].")
@click.option("--mean", default=None, metavar="R,G,B", help="Normalisation mean [default: ImageNet; timm: its config].")
@click.option("--std", default=None, metavar="R,G,B",
              help="Normalisation std, each > 0 [default: ImageNet; timm: its config].")
@click.option("--interpolation", default=None, metavar="|".join(INTERPOLATIONS),
              help="Resize filter (PIL's) [default: bilinear; timm: its config, mostly bicubic].")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True, metavar="N", help="ONNX opset (18..23).")
@click.option("--external-data", is_flag=True, help=f"Store weights in {layout.external_data(layout.FP32_ONNX)} (automatic past 2 GB).")
@click.option("--images", type=click.Path(path_type=str), default=None, metavar="DIR",
              help="Folder of real images to validate on [default: seeded random inputs].")
@click.option("--seed", type=int, default=0, show_default=True, metavar="N", help="Seed for random weights and inputs.")
@click.option("--out", "out_dir", type=click.Path(path_type=str), default=None, metavar="DIR",
              help="Bundle folder [default: ./<arch>-bundle].")
@click.option("--no-fuse", is_flag=True, help=f"Skip the fusion stage (no {layout.ORT_ONNX}, no fusion report).")
@click.option("--fuse-skip", multiple=True, metavar="NAME[,NAME]",
              help="Fusion pass to skip (repeatable; see resnet-deploy fuse --list).")
@click.option("--engine", default="auto", show_default=True, metavar="|".join(m.value for m in EngineMode),
              help="Build TensorRT plans: when a GPU and TensorRT are present (says so when skipped), always, never.")
@engine_options
@precision_options
@force_option
@json_option
@verbose_option
def export(arch, model_spec, weights, num_classes, class_names, input_size, resize, mean, std, interpolation, opset, external_data,
           images, seed, out_dir, no_fuse, fuse_skip, engine, batch, workspace, timing_cache, opt_level,
           hardware_compat, version_compat, tf32, force, as_json, verbose, **precision) -> None:
    """Export a ResNet (--arch) or your own module (--model) to ONNX, validate it against eager PyTorch, and write a
    deploy bundle."""
    from ..pipeline.api import export_arch, export_model
    from ..errors import CheckFailed, UserError
    from ..stages.base import return_large_blocks
    from .common import setup
    from .precision_options import build, print_summary

    setup(verbose, as_json)
    return_large_blocks()  # this process builds a bundle and exits: big transient buffers go back at once
    if (arch is None) == (model_spec is None):
        raise UserError("pass exactly one of --arch NAME (see --list-archs) or --model FILE.py:FUNCTION" if arch is None
                        else "--arch and --model are mutually exclusive: pass one of them")
    if arch is not None:
        registry.check_arch(arch)  # before anything else is looked at
    name = arch.replace("/", "-") if arch else model_spec.rpartition(":")[2]
    out_dir = out_dir or f"{name}-bundle"
    plan_options = make_options(batch, workspace, timing_cache, opt_level, hardware_compat, version_compat, tf32)
    fuse_skip = split_names(fuse_skip)
    options = build(**precision)  # every option not named above is a precision option
    common = dict(weights=weights, input_size=input_size, resize=resize, mean=mean, std=std,
                  interpolation=interpolation, opset=opset, external_data=external_data or None, images=images,
                  seed=seed, force=force, fuse=not no_fuse, fuse_skip=fuse_skip, engine=engine,
                  engine_options=plan_options, precision=options if options.wanted else None,
                  class_names=class_names)
    if arch is not None:
        res = export_arch(arch, out_dir, num_classes=num_classes or 1000, **common)
    else:
        res = export_model(model_spec, out_dir, num_classes=num_classes, **common)
    for w in res.warnings:
        warn(w)
    if as_json:
        emit_json({**bundle_json(res.manifest, res.path, res.warnings), "ok": res.ok, "failures": res.failures})
        if not res.ok:  # the JSON above is the result; the error line goes to stderr, exit 1
            raise CheckFailed(res.failure_line())
        return
    con = out()
    v = res.manifest["validation"]["fp32"]
    con.print(f"[bold]bundle[/] {res.path}")
    con.print(f"fp32 parity vs eager ({v['inputs']}, batches {v['batches']}): {fmt_parity(v)}")
    fusion = res.manifest.get("fusion", {})
    for target, f in fusion.get("targets", {}).items():
        nodes = node_counts(target, f["nodes_before"], f["nodes_after"], sum(f["rewrites"].values()),
                            fusion.get("torch_fold"))
        con.print(f"fused {target}: {nodes}, parity vs eager: {fmt_parity(f['parity'])}")
    found = res.fusion.report["targets"].get("onnxruntime", {}).get("recognized", []) if res.fusion else []
    if found:
        con.print(f"recognised {len(found)} squeeze-excitation / ECA block(s): listed in {layout.FUSION_REPORT}, kept "
                  "as is (no ONNX Runtime op computes a whole block)")
    print_summary(con, res.manifest)
    print_plans(res.engines)
    for name, e in res.manifest["files"].items():
        con.print(f"  {name}  {e['size'] / 2**20:.1f} MiB  sha256 {e['sha256'][:12]}")
    if not res.ok:
        raise CheckFailed(res.failure_line())
