"""``resnet-deploy quantize BUNDLE``: add FP16 / calibrated INT8 graphs to an existing bundle."""

from __future__ import annotations

import click

from .common import bundle_json, emit_json, force_option, json_option, out, verbose_option, warn
from .precision_options import precision_options


@click.command()
@click.argument("bundle", type=click.Path(path_type=str))
@precision_options
@click.option("--images", type=click.Path(path_type=str), default=None, metavar="DIR",
              help="Real images for the parity check vs eager [default: --val, else --calib samples].")
@force_option
@json_option
@verbose_option
def quantize(bundle, images, force, as_json, verbose, **precision) -> None:
    """Add model.fp16.onnx / model.bf16.onnx (mixed precision) and/or model.int8.<target>.onnx to BUNDLE (validated
    against its eager reference)."""
    from ..errors import CheckFailed
    from ..pipeline.update import quantize_bundle
    from ..stages.base import return_large_blocks
    from .common import setup
    from .precision_options import added, build, print_summary

    setup(verbose, as_json)
    return_large_blocks()  # this process builds a bundle and exits: big transient buffers go back at once
    options = build(**precision, images=images)
    try:
        manifest, warnings = quantize_bundle(bundle, options, force=force)
    except CheckFailed as e:
        for w in e.warnings:  # a failed run's warnings may explain the failure
            warn(w)
        raise
    for w in warnings:
        warn(w)
    if as_json:
        emit_json(bundle_json(manifest, bundle, warnings))
    else:
        print_summary(out(), manifest, only=added(options))  # what this run added, not the whole bundle
