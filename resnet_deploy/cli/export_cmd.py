"""``resnet-deploy export``: a torchvision ResNet (or checkpoint) to a validated deploy bundle."""

from __future__ import annotations

import click

from .. import layout, registry
from ..onnx_export import DEFAULT_OPSET
from .build_cmd import engine_options, make_options, print_plans
from .common import (bundle_json, emit_json, fmt_parity, force_option, json_option, out, split_names, verbose_option,
                     warn)
from .precision_options import precision_options


@click.command()
@click.option("--arch", required=True, type=click.Choice(registry.arch_names()), help="Architecture.")
@click.option("--weights", default="DEFAULT", show_default=True, metavar="DEFAULT|NAME|random|PATH",
              help="torchvision weights (from the torch hub cache, else downloaded), 'random' (seeded, randomised "
                   "BatchNorm: accuracy means nothing) or a checkpoint PATH (state_dict, {'state_dict':...}, "
                   "{'model':...}; loaded with weights_only=True).")
@click.option("--num-classes", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Classifier size; replaces the head of torchvision weights.")
@click.option("--input-size", default="224", show_default=True, metavar="S|HxW", help="Crop size (>= 32).")
@click.option("--resize", type=click.IntRange(min=1), default=None, help="Shorter side before the crop "
              "[default: input size / 0.875].")
@click.option("--mean", default=None, metavar="R,G,B", help="Normalisation mean [default: ImageNet].")
@click.option("--std", default=None, metavar="R,G,B", help="Normalisation std, each > 0 [default: ImageNet].")
@click.option("--opset", type=int, default=DEFAULT_OPSET, show_default=True, help="ONNX opset (18..23).")
@click.option("--external-data", is_flag=True, help=f"Store weights in {layout.external_data(layout.FP32_ONNX)} (automatic past 2 GB).")
@click.option("--images", type=click.Path(path_type=str), default=None,
              help="Folder of real images to validate on [default: seeded random inputs].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random weights and inputs.")
@click.option("--out", "out_dir", type=click.Path(path_type=str), default=None,
              help="Bundle folder [default: ./<arch>-bundle].")
@click.option("--no-fuse", is_flag=True, help=f"Skip the fusion stage (no {layout.ORT_ONNX}, no fusion report).")
@click.option("--fuse-skip", multiple=True, metavar="NAME[,NAME]",
              help="Fusion pass to skip (repeatable; see resnet-deploy fuse --list).")
@click.option("--engine", default="auto", show_default=True, metavar="auto|always|never",
              help="Build TensorRT plans: when a GPU and TensorRT are present (says so when skipped), always, never.")
@engine_options
@precision_options
@force_option
@json_option
@verbose_option
def export(arch, weights, num_classes, input_size, resize, mean, std, opset, external_data, images, seed, out_dir,
           no_fuse, fuse_skip, engine, batch, workspace, timing_cache, opt_level, hardware_compat, version_compat,
           tf32, force, as_json, verbose, **precision) -> None:
    """Export a ResNet to ONNX, validate it against eager PyTorch, and write a deploy bundle."""
    from ..api import export_arch
    from ..types import EngineMode
    from .common import setup
    from .precision_options import build, print_summary

    setup(verbose, as_json)
    out_dir = out_dir or f"{arch}-bundle"
    EngineMode.parse(engine, "--engine")
    plan_options = make_options(batch, workspace, timing_cache, opt_level, hardware_compat, version_compat, tf32)
    fuse_skip = split_names(fuse_skip)
    if fuse_skip:
        from ..fuse import passes_for

        passes_for("onnxruntime", fuse_skip)
    options = build(**precision)  # every option not named above is a precision option
    res = export_arch(arch, out_dir, weights=weights, num_classes=num_classes, input_size=input_size, resize=resize,
                      mean=mean, std=std, opset=opset, external_data=external_data or None, images=images,
                      seed=seed, force=force, fuse=not no_fuse, fuse_skip=fuse_skip, engine=engine,
                      engine_options=plan_options, precision=options if options.wanted else None)
    for w in res.warnings:
        warn(w)
    if as_json:
        emit_json(bundle_json(res.manifest, res.path, res.warnings))
        return
    con = out()
    v = res.manifest["validation"]["fp32"]
    con.print(f"[bold]bundle[/] {res.path}")
    con.print(f"fp32 parity vs eager ({v['inputs']}, batches {v['batches']}): {fmt_parity(v)}")
    for target, f in res.manifest.get("fusion", {}).get("targets", {}).items():
        con.print(f"fused {target}: {f['nodes_before']} -> {f['nodes_after']} nodes, parity vs eager: "
                  f"{fmt_parity(f['parity'])}")
    print_summary(con, res.manifest)
    print_plans(res.engines)
    for name, e in res.manifest["files"].items():
        con.print(f"  {name}  {e['size'] / 2**20:.1f} MiB  sha256 {e['sha256'][:12]}")
