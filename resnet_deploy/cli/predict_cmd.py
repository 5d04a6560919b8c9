"""``resnet-deploy predict BUNDLE PATH...``: the top-k classes of images, run by the bundle's own runtime."""

from __future__ import annotations

import time

import click

from ..backends import table
from ..types import Precision
from .common import emit_json, setup, verbose_option


def _note(message: str) -> None:
    click.echo(message, err=True)


@click.command()
@click.argument("bundle", type=click.Path(file_okay=False, path_type=str))
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--top-k", type=click.IntRange(min=1), default=5, metavar="K", show_default=True, help="Classes shown per image.")
@click.option("--backend", type=click.Choice(table.names(), case_sensitive=False), default=None,
              help="Backend that runs the bundle [default: what bench recommended for --device, else fp32 on the "
                   "first default backend that runs here].")
@click.option("--precision", type=click.Choice([p.value for p in Precision], case_sensitive=False), default=None,
              help="Artifact precision [default: the recommended one, else fp32].")
@click.option("--device", type=click.Choice(table.DEVICES), default="cpu", show_default=True,
              help="Which device's recommendation and backends to use.")
@click.option("--batch", type=click.IntRange(min=1), default=None, metavar="N",
              help="Images per runtime call [default: the batch bench measured the pick at, else 8].")
@click.option("--quiet-threads", is_flag=True,
              help="Idle runtime threads sleep instead of spin-waiting (shared or busy machines).")
@click.option("--json", "as_json", is_flag=True,
              help='One JSON object per image on stdout: {"image", "top": [{"index", "label", "score"}], "ms"}.')
@verbose_option
def predict(bundle, paths, top_k, backend, precision, device, batch, quiet_threads, as_json, verbose) -> None:
    """Classify the images in PATH... (files or folders, read recursively) with BUNDLE: top-k per image and the
    milliseconds per image. An unreadable image is one line on stderr and exit 1 at the end; the others are
    still predicted. The pick of artifact and backend is printed on stderr (docs/runtime.md)."""
    from dataclasses import asdict

    from ..deploy.runtime import expand_images, load
    from ..errors import CheckFailed, UserError

    setup(verbose, as_json)
    failed = 0
    with load(bundle, backend, precision, device, batch=batch, spinning=not quiet_threads) as model:
        d = model.describe()
        _note(f"model {d['backend']} {d['precision']} ({d['artifact']}), batch {d['batch']}: {d['why']}")
        items = []
        for path in paths:
            try:
                items += expand_images(path)
            except UserError as e:
                _note(f"error: {e}")
                failed += 1
        began, done = time.perf_counter(), 0
        for r in model.predictions(items, top_k, skip_unreadable=True):
            if r.error:
                _note(f"error: {r.error}")
                failed += 1
                continue
            done += 1
            if as_json:
                emit_json({"image": str(r.image), "top": [asdict(p) for p in r.top], "ms": round(r.ms, 3)})
                continue
            click.echo(f"{r.image}  ({r.ms:.2f} ms)")
            for p in r.top:
                click.echo(f"  {p.score:.4f}  {p.label}" + (f"  ({p.index})" if p.label != str(p.index) else ""))
        seconds = time.perf_counter() - began
    per_image = f": {seconds * 1e3 / done:.2f} ms per image" if done else ""
    _note(f"{done} image(s) predicted in {seconds:.2f} s{per_image}")
    if failed:
        raise CheckFailed(f"{failed} image path(s) could not be read (listed above); the other {done} were predicted")
