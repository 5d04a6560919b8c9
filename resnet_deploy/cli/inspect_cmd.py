"""``resnet-deploy inspect PLAN``: the layers of a TensorRT plan and the ONNX nodes each fused layer holds."""

from __future__ import annotations

import json
from pathlib import Path

import click


def find_layer_json(path: Path) -> Path | None:
    """The layer JSON recorded for a plan (manifest or sidecar), else ``model.X.layers.json`` beside it."""
    from ..layout import PLAN_LAYERS_SUFFIX, plan_layers
    from ..trt.plan import plan_info

    if path.name.endswith(PLAN_LAYERS_SUFFIX):
        return path
    info = plan_info(path) or {}
    candidate = path.parent / (info.get("layers_file") or plan_layers(path.name))
    return candidate if candidate.is_file() else None


@click.command()
@click.argument("plan", type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the parsed layers as JSON.")
def inspect(plan: str, as_json: bool) -> None:
    """Print a plan's layers (from its engine-inspector JSON; TensorRT only when that file is missing)."""
    from ..trt.layers import format_layers, load_layer_info, parse_layer_info
    from ..errors import UserError

    path = Path(plan)
    if not path.is_file():
        raise UserError(f"PLAN {plan!r} does not exist")
    layer_json = find_layer_json(path)
    if layer_json is not None:
        report = load_layer_info(layer_json)
    else:
        from ..backends.tensorrt import plan_layer_json

        report = parse_layer_info(plan_layer_json(path))
    if as_json:
        click.echo(json.dumps({"summary": report.summary(), "io_tensors": report.io_tensors,
                               "layers": [vars(layer) for layer in report.layers]}, indent=2))
        return
    click.echo(f"plan        {path}")
    click.echo(f"io tensors  {', '.join(report.io_tensors) or '(not recorded)'}")
    for line in format_layers(report):
        click.echo(line)
