"""``resnet-deploy triton BUNDLE --repo DIR``: a Triton Inference Server model repository from a bundle."""

from __future__ import annotations

import os
import re

import click

from ..backends import table
from ..types import Precision
from .common import console, force_option, out, verbose_option


class _TritonCommand(click.Command):
    """``--dynamic-batching 4,8`` (sizes after the flag) gets a usage error that names --preferred-batch-sizes,
    not click's "unexpected extra argument (4,8)"."""

    def parse_args(self, ctx, args):
        for i, arg in enumerate(args):
            value = arg.partition("=")[2] if arg.startswith("--dynamic-batching=") else (
                args[i + 1] if arg == "--dynamic-batching" and i + 1 < len(args) else None)
            if value is not None and re.fullmatch(r"\d+(,\d+)*,?", value) and not os.path.isdir(value):
                raise click.UsageError(f"--dynamic-batching is a flag and takes no sizes: give them with "
                                       f"--preferred-batch-sizes (--dynamic-batching --preferred-batch-sizes {value})",
                                       ctx)
        return super().parse_args(ctx, args)


def _sizes(ctx, param, value):
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} must be comma-separated integers, e.g. 4,8") from None


@click.command(cls=_TritonCommand)
@click.argument("bundle", type=click.Path(file_okay=False, path_type=str))
@click.option("--repo", required=True, type=click.Path(path_type=str), metavar="DIR",
              help="Model repository folder to write.")
@click.option("--name", default=None, metavar="NAME", help="Model name prefix [default: the bundle's arch]; models are "
              f"<name>_<suffix>: {', '.join(f'_{s.triton.suffix} ({s.name})' for s in table.triton_backends())}.")
@click.option("--backend", "backends", default=None, metavar="BACKEND[,BACKEND]",
              help=f"Comma-separated models to write: {', '.join(s.name for s in table.triton_backends())} [default: "
                   "what bench recorded as recommended for --device, else onnxruntime plus tensorrt when the bundle "
                   "has plans].")
@click.option("--precision", default=None, metavar="|".join(p.value for p in Precision),
              help="Artifact precision [default: the recommended one, else fp32].")
@click.option("--max-batch-size", type=int, default=8, show_default=True, metavar="N",
              help="Triton's max_batch_size (0: the model takes a fixed batch).")
@click.option("--dynamic-batching", is_flag=True, help="Let Triton batch concurrent requests.")
@click.option("--preferred-batch-sizes", callback=_sizes, default=None, metavar="N,N",
              help="Batch sizes the dynamic batcher aims for (each <= --max-batch-size).")
@click.option("--max-queue-delay-us", type=click.IntRange(min=0), default=100, show_default=True, metavar="MICROSECONDS",
              help="How long the dynamic batcher may hold a request to fill a batch.")
@click.option("--instances", type=int, default=1, show_default=True, metavar="N",
              help="Model instances per GPU (or CPU).")
@click.option("--device", type=click.Choice(["gpu", "cpu"]), default=None,
              help="Where the ONNX Runtime model runs (TensorRT models always run on GPUs, OpenVINO ones on CPUs) "
                   "[default: gpu when a GPU is visible here or a requested model needs one, else cpu].")
@force_option
@verbose_option
def triton(bundle, repo, name, backends, precision, max_batch_size, dynamic_batching, preferred_batch_sizes,
           max_queue_delay_us, instances, device, force, verbose) -> None:
    """Write a Triton model repository (ONNX Runtime, TensorRT and/or OpenVINO models) for a bundle."""
    from ..deploy.triton import write_triton_repo
    from .common import setup

    setup(verbose)
    res = write_triton_repo(
        bundle, repo, name=name, backends=[b.strip() for b in backends.split(",") if b.strip()] if backends else None,
        precision=precision, max_batch_size=max_batch_size, dynamic_batching=dynamic_batching,
        preferred_batch_sizes=preferred_batch_sizes, max_queue_delay_us=max_queue_delay_us, instances=instances,
        device=device, force=force)
    if res.device_note:  # a note, so stderr
        console().print(f"note: --device {res.device} ({res.device_note})")
    con = out()
    con.print(f"[bold]Triton repository[/] {res.repo}")
    for m in res.models:
        ccs = f", compute capabilities {', '.join(m.compute_capabilities)}" if m.compute_capabilities else ""
        con.print(f"  {m.name}  {m.platform}  from {', '.join(m.files)}{ccs}")
    if res.note:
        con.print(f"chosen: {res.note}")
    con.print(f"serve: tritonserver --model-repository {res.repo}")
