"""``resnet-deploy triton BUNDLE --repo DIR``: a Triton Inference Server model repository from a bundle."""

from __future__ import annotations

import click

from ..backends import table
from .common import force_option, out, verbose_option


def _sizes(ctx, param, value):
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} must be comma-separated integers, e.g. 4,8") from None


@click.command()
@click.argument("bundle", type=click.Path(file_okay=False, path_type=str))
@click.option("--repo", required=True, type=click.Path(path_type=str), help="Model repository folder to write.")
@click.option("--name", default=None, help="Model name prefix [default: the bundle's arch]; models are "
              f"<name>_<suffix>: {', '.join(f'_{s.triton.suffix} ({s.name})' for s in table.triton_backends())}.")
@click.option("--backend", "backends", default=None, metavar="LIST",
              help=f"Comma-separated models to write: {', '.join(s.name for s in table.triton_backends())} [default: "
                   "what bench recorded as recommended for --device, else onnxruntime plus tensorrt when the bundle "
                   "has plans].")
@click.option("--precision", default=None, help="Artifact precision: fp32, fp16, int8 [default: the recommended one, "
              "else fp32].")
@click.option("--max-batch-size", type=int, default=8, show_default=True,
              help="Triton's max_batch_size (0: the model takes a fixed batch).")
@click.option("--dynamic-batching", is_flag=True, help="Let Triton batch concurrent requests.")
@click.option("--preferred-batch-sizes", callback=_sizes, default=None, metavar="4,8",
              help="Batch sizes the dynamic batcher aims for (each <= --max-batch-size).")
@click.option("--max-queue-delay-us", type=click.IntRange(min=0), default=100, show_default=True,
              help="How long the dynamic batcher may hold a request to fill a batch.")
@click.option("--instances", type=int, default=1, show_default=True, help="Model instances per GPU (or CPU).")
@click.option("--device", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True,
              help="Where the ONNX Runtime model runs (TensorRT models always run on GPUs).")
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
    con = out()
    con.print(f"[bold]Triton repository[/] {res.repo}")
    for m in res.models:
        ccs = f", compute capabilities {', '.join(m.compute_capabilities)}" if m.compute_capabilities else ""
        con.print(f"  {m.name}  {m.platform}  from {', '.join(m.files)}{ccs}")
    if res.note:
        con.print(f"chosen: {res.note}")
    con.print(f"serve: tritonserver --model-repository {res.repo}")
