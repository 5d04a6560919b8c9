"""``resnet-deploy build BUNDLE_OR_ONNX``: TensorRT plans from a bundle's ONNX graphs (or one ONNX file)."""

from __future__ import annotations

from pathlib import Path

import click

from ..trt.profile import DEFAULT_BATCH
from ..types import HardwareCompat, Precision
from .common import console, emit_json, fmt_parity, force_option, json_option, out, verbose_option, warn



def engine_options(f):
    """Builder options shared by ``build`` and ``export`` (``export`` adds --engine)."""
    opts = [
        click.option("--batch", default=DEFAULT_BATCH, show_default=True, metavar="MIN:OPT:MAX",
                     help="Optimization profile batch sizes (the plan refuses batches outside MIN..MAX)."),
        click.option("--workspace", type=int, default=None, metavar="MiB",
                     help="Builder workspace limit in MiB [default: TensorRT's, the GPU's memory]."),
        click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=str), default=None, metavar="FILE",
                     help="Timing cache: read when it exists, created or updated after the build."),
        click.option("--opt-level", type=int, default=3, show_default=True, metavar="0-5",
                     help="Builder optimization level 0-5."),
        click.option("--hardware-compat", default="none", show_default=True,
                     metavar="|".join(h.value for h in HardwareCompat),
                     help="GPUs the plan may run on: the build GPU model, any Ampere+, or the same compute capability."),
        click.option("--version-compat", is_flag=True,
                     help="Plan also runs on later TensorRT: a later release of its major version, or the next "
                          "major where TensorRT documents it (a 10.x plan on 11.x)."),
        click.option("--tf32", is_flag=True, help="Allow TF32 for fp32 layers (faster, ~1e-3 less accurate)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def make_options(batch, workspace, timing_cache, opt_level, hardware_compat, version_compat, tf32, precision=None):
    from ..engines.stage import BuildOptions

    return BuildOptions(batch=batch, workspace_mib=workspace, timing_cache=Path(timing_cache) if timing_cache else None,
                        opt_level=opt_level, hardware_compat=hardware_compat, version_compat=version_compat, tf32=tf32,
                        precisions=precision)


def print_plans(result) -> None:
    from rich.markup import escape  # reasons hold "[gpu]", which rich would read as markup

    if result.skipped:  # a note, so stderr
        console().print(f"[bold yellow]TensorRT plans skipped[/]: {escape(result.skipped)}")
        return
    con = out()
    for p in result.plans:
        i = p.info
        con.print(f"[bold]{escape(p.plan)}[/] {i['precision']}: {i['layer_count']} layers from {i['onnx_nodes']} ONNX nodes, "
                  f"built in {i['build_seconds']} s on {i['gpu']} (sm {i['compute_capability']}), TensorRT "
                  f"{i['tensorrt']}, CUDA {i['cuda']}, driver {i['driver']}, batch {i['profile']['batch']}")
        if p.accuracy:
            con.print(f"  vs {p.accuracy['reference']} at batches {p.accuracy['batches']}: {fmt_parity(p.accuracy)}")
    for note in result.notes:
        console().print(f"note: {escape(note)}")
    for w in result.warnings:
        warn(w)


def plans_json(result) -> dict:
    """The ``--json`` result of the build stage."""
    return {"ok": True, "skipped": result.skipped, "warnings": result.warnings, "notes": result.notes,
            "plans": [{"plan": p.plan, "precision": p.precision, "info": p.info, "accuracy": p.accuracy}
                      for p in result.plans]}


@click.command()
@click.argument("source", type=click.Path(path_type=str))
@click.option("--precision", default=None, metavar="PRECISION[,PRECISION]",
              help=f"Which graphs to build: {', '.join(p.value for p in Precision)}, e.g. fp32,int8 [default: every "
                   "graph TensorRT can use].")
@engine_options
@click.option("--images", type=click.Path(path_type=str), default=None, metavar="DIR",
              help="Real images for the accuracy check vs eager [default: seeded random inputs].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=str), default=None, metavar="DIR",
              help="Folder for the plan when SOURCE is an .onnx file [default: beside it].")
@force_option
@json_option
@verbose_option
def build(source, precision, batch, workspace, timing_cache, opt_level, hardware_compat, version_compat, tf32,
          images, out_dir, force, as_json, verbose) -> None:
    """Build TensorRT plans (strongly typed, from each graph's own precision), check them vs eager, record them."""
    from ..engines.stage import build_onnx_file
    from ..pipeline.update import build_bundle
    from ..errors import UserError
    from ..stages.base import return_large_blocks
    from .common import setup

    setup(verbose, as_json)
    return_large_blocks()  # this process builds a bundle and exits: big transient buffers go back at once
    options = make_options(batch, workspace, timing_cache, opt_level, hardware_compat, version_compat, tf32, precision)
    src = Path(source)
    if src.is_dir():
        if out_dir:
            raise UserError("--out applies to an .onnx SOURCE; plans go into the bundle itself")
        result = build_bundle(src, options, images=images, force=force)
    elif src.is_file() and src.suffix == ".onnx":
        result = build_onnx_file(src, out_dir, options, force=force)
    else:
        raise UserError(f"SOURCE {source!r} is neither a bundle folder nor an .onnx file")
    if as_json:
        emit_json(plans_json(result))
    else:
        print_plans(result)
