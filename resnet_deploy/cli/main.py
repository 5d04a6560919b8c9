"""Entry point: builds the command group and turns user errors into one line and an exit code."""

from __future__ import annotations

import signal
import sys

import click

from ..version import __version__
from ..errors import ResnetDeployError
from . import (bench_cmd, build_cmd, export_cmd, fuse_cmd, info_cmd, inspect_cmd, predict_cmd, quantize_cmd,
               triton_cmd)
from .common import emit_error_json

COMMANDS = [export_cmd.export, info_cmd.info, fuse_cmd.fuse, quantize_cmd.quantize, build_cmd.build,
            inspect_cmd.inspect, bench_cmd.bench, triton_cmd.triton, predict_cmd.predict]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="resnet-deploy")
def cli() -> None:
    """Export PyTorch ResNets to validated ONNX / TensorRT deploy bundles."""


for _cmd in COMMANDS:
    cli.add_command(_cmd)


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and exits with) 0 on success, 1 on a failed check, 2 on bad input, 130 on Ctrl-C."""
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        cli.main(args=argv, prog_name="resnet-deploy", standalone_mode=False)
        code = 0
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.UsageError as e:
        ctx = f"{e.ctx.command_path}: " if e.ctx else ""
        click.echo(f"error: {ctx}{e.format_message()} (see --help)", err=True)
        code = 2
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        code = e.exit_code
    except ResnetDeployError as e:
        click.echo(f"error: {e}", err=True)
        code = e.exit_code
        emit_error_json(str(e), code)
    except click.Abort:
        click.echo("aborted", err=True)
        code = 130
    except KeyboardInterrupt:
        click.echo("interrupted: nothing was written", err=True)
        code = 130
    if argv is None:
        sys.exit(code)
    return code
