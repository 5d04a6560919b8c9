"""What every subcommand shares: the consoles, the progress display, JSON output and small formatters.

Streams: the result summary (or, with ``--json``, one JSON object) goes to stdout; progress, notes, warnings and
errors go to stderr. Neither is ever hard-wrapped when it is not a terminal (CI logs, pipes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time

import click

from .. import progress

_consoles: dict[bool, object] = {}
_json = {"requested": False, "printed": False}


def _console(stderr: bool):
    if stderr not in _consoles:
        from rich.console import Console

        tty = (sys.stderr if stderr else sys.stdout).isatty()
        # Off a terminal rich would wrap at 80 columns in mid-phrase: soft wrap and a wide canvas instead.
        _consoles[stderr] = Console(stderr=stderr, highlight=False, soft_wrap=not tty, width=None if tty else 4000)
    return _consoles[stderr]


def console():
    """The rich console on stderr: progress, notes and warnings."""
    return _console(True)


def out():
    """The rich console on stdout: the result summary (silent with ``--json``, which prints JSON instead)."""
    if _json["requested"]:
        from rich.console import Console

        return Console(quiet=True)
    return _console(False)


def _finite(obj):
    """``obj`` with NaN/Inf floats as None, so the JSON is strict (NaN is not JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def emit_json(obj: dict) -> None:
    """Print the command's result as one JSON object on stdout (``--json``)."""
    click.echo(json.dumps(_finite(obj), default=str, allow_nan=False))
    _json["printed"] = True


def emit_error_json(message: str, code: int) -> None:
    """With ``--json``, a failed command still prints one JSON object (unless it already printed its result)."""
    if _json["requested"] and not _json["printed"]:
        emit_json({"ok": False, "error": message, "exit_code": code})


@contextlib.contextmanager
def _rich_step(label: str):
    con = console()
    start = time.perf_counter()
    if con.is_terminal:
        with con.status(f"{label}...") as status:
            yield status  # progress.step updates it in place (rich Status.update)
    else:
        yield
    con.print(f"[green]done[/] {label} ({time.perf_counter() - start:.1f} s)")


def setup(verbose: int, as_json: bool = False) -> None:
    """Logging to stderr (warnings by default, -v info, -vv debug), the live step display, ``--json`` mode."""
    _json.update(requested=bool(as_json), printed=False)
    from rich.logging import RichHandler

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if console().is_terminal:
        from rich.logging import RichHandler

        handler = RichHandler(console=console(), show_time=False, show_path=False, markup=False)
        fmt = "%(message)s"
    else:  # logs and pipes: one plain line per record, never padded or wrapped
        handler, fmt = logging.StreamHandler(), "%(levelname)s %(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=[handler], force=True)
    for noisy in ("torch", "onnxscript", "onnx_ir", "torch.onnx", "torch._dynamo", "torch.export"):
        logging.getLogger(noisy).setLevel(max(level, logging.ERROR))
    progress.set_reporter(_rich_step)


verbose_option = click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
force_option = click.option("--force", is_flag=True, help="Replace existing output files or folders.")
json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print the result as one JSON object on stdout (progress and warnings stay on stderr).")


def fmt_parity(p: dict) -> str:
    if p.get("nonfinite"):
        return f"NOT FINITE: {p['nonfinite']}"
    spread = f"spread error {p['spread_error']:.3g}, " if p.get("spread_error") is not None else ""
    return (f"top-1 agreement {p['top1_agreement']:.1%}, {spread}max abs diff {p['max_abs_diff']:.3g}, "
            f"max rel diff {p['max_rel_diff']:.3g}, cosine {p['cosine']:.7f}")


def warn(message: str) -> None:
    """A warning line on stderr (rich markup in ``message`` is not interpreted)."""
    from rich.markup import escape

    console().print(f"[bold red]WARNING[/] {escape(message)}")


def bundle_json(manifest: dict, path, warnings=()) -> dict:
    """The ``--json`` result of a command that wrote or changed a bundle."""
    return {"ok": True, "bundle": str(path), "artifacts": manifest.get("files", {}),
            "validation": manifest.get("validation", {}), "fusion": manifest.get("fusion"),
            "precision": manifest.get("precision"), "engines": manifest.get("engines"),
            "warnings": list(dict.fromkeys([*manifest.get("warnings", []), *warnings]))}


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def split_names(values) -> list[str]:
    """A repeatable option's values, each possibly comma-separated (``--skip a,b --skip c``), as one list."""
    return [v.strip() for item in values for v in item.split(",") if v.strip()]
