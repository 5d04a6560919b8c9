"""What every subcommand shares: the console, the progress display, error handling and small formatters."""

from __future__ import annotations

import contextlib
import logging
import time

import click

from .. import progress

_console = None


def console():
    """A rich console on stderr for progress and summaries (stdout stays clean for piping)."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True, highlight=False)
    return _console


@contextlib.contextmanager
def _rich_step(label: str):
    con = console()
    start = time.perf_counter()
    if con.is_terminal:
        with con.status(f"{label}..."):
            yield
    else:
        yield
    con.print(f"[green]done[/] {label} ({time.perf_counter() - start:.1f} s)")


def setup(verbose: int) -> None:
    """Logging to stderr (warnings by default, -v info, -vv debug) and the live step display."""
    from rich.logging import RichHandler

    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = RichHandler(console=console(), show_time=False, show_path=False, markup=False)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    for noisy in ("torch", "onnxscript", "onnx_ir", "torch.onnx", "torch._dynamo", "torch.export"):
        logging.getLogger(noisy).setLevel(max(level, logging.ERROR))
    progress.set_reporter(_rich_step)


verbose_option = click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
force_option = click.option("--force", is_flag=True, help="Replace existing output files or folders.")


def fmt_parity(p: dict) -> str:
    return (f"max abs diff {p['max_abs_diff']:.3g}, max rel diff {p['max_rel_diff']:.3g}, "
            f"cosine {p['cosine']:.7f}, top-1 agreement {p['top1_agreement']:.1%}")


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def split_names(values) -> list[str]:
    """A repeatable option's values, each possibly comma-separated (``--skip a,b --skip c``), as one list."""
    return [v.strip() for item in values for v in item.split(",") if v.strip()]
