"""``resnet-deploy info DIR``: summarise a bundle and re-check every checksum."""

from __future__ import annotations

import click

from .common import emit_json, fmt_parity, human_size, json_option, setup, warn


@click.command()
@click.argument("bundle", type=click.Path(file_okay=False, path_type=str))
@json_option
def info(bundle: str, as_json: bool) -> None:
    """Print a bundle's summary and verify the checksum of every file (exit 1 on a mismatch)."""
    from ..bundle import read_manifest, verify
    from ..errors import CheckFailed
    from ..models.classes import from_manifest

    setup(0, as_json)
    m = read_manifest(bundle)
    problems = verify(bundle)
    names = from_manifest(m)
    for warning in m.get("warnings", []):
        warn(warning)
    if as_json:
        bad = {p.split(": ", 1)[0]: p.split(": ", 1)[1] for p in problems}
        emit_json({"ok": not problems, "bundle": bundle, "arch": m.get("arch"), "num_classes": m.get("num_classes"),
                   "weights": m.get("weights"),
                   "classes": {"count": len(names.names), "source": names.source} if names else None,
                   "input": m.get("input"), "preprocessing": m.get("preprocessing"),
                   "validation": m.get("validation", {}), "warnings": m.get("warnings", []), "problems": problems,
                   "precision": m.get("precision", {}), "failures": _failures(m),
                   "recommended": m.get("recommended", {}),
                   "artifacts": {n: {**e, "status": bad.get(n, "ok")} for n, e in m.get("files", {}).items()}})
        if problems:
            raise CheckFailed(f"{len(problems)} file(s) failed verification: {'; '.join(problems)}")
        return
    w = m.get("weights", {})
    inp = m.get("input", {})
    pre = m.get("preprocessing", {})
    click.echo(f"bundle      {bundle}")
    click.echo(f"arch        {m.get('arch')}  ({m.get('num_classes')} classes)")
    click.echo(f"weights     {w.get('source')} {w.get('name') or w.get('path') or ''} "
               f"{('sha256 ' + w['sha256'][:12]) if w.get('sha256') else ''}".rstrip())
    click.echo(f"classes     {len(names.names)} names from {names.source}" if names
               else "classes     no names (readers show the class index)")
    click.echo(f"input       {inp.get('name')} {inp.get('shape')} {inp.get('dtype')}")
    if pre:
        click.echo(f"preprocess  resize {pre['resize']} -> crop {pre['input_size']}, mean {pre['mean']}, std {pre['std']}")
    for prec, v in m.get("validation", {}).items():
        if isinstance(v, dict) and "cosine" in v:
            click.echo(f"valid {prec:<5} {fmt_parity(v)}")
    _precisions_and_recommendation(m)
    click.echo("files")
    bad = {p.split(": ", 1)[0]: p.split(": ", 1)[1] for p in problems}
    for name, e in m.get("files", {}).items():
        status = "MISMATCH " + bad[name] if name in bad else "ok"
        tags = " ".join(str(e[k]) for k in ("kind", "precision", "target") if e.get(k))
        click.echo(f"  {name:<28} {human_size(e.get('size', 0)):>10}  {tags:<26} {status}")
    if problems:
        raise CheckFailed(f"{len(problems)} file(s) failed verification: {'; '.join(problems)}")
    click.echo("checksums   all ok")


class _Echo:
    """``print`` as ``click.echo``: the precision summary's lines, without rich markup (reasons may hold brackets)."""

    print = staticmethod(click.echo)


def _failures(manifest: dict) -> dict:
    """``{precision: one-line reason}`` for each precision the precision stage left out of the bundle."""
    return {p: f["failed"] for p, f in manifest.get("precision", {}).items() if isinstance(f, dict) and f.get("failed")}


def _precisions_and_recommendation(manifest: dict) -> None:
    """Each precision's result, failures first, then what bench recommended, where and when it measured it."""
    from ..bench.recommend import describe
    from .precision_options import print_precisions

    print_precisions(_Echo, manifest)
    recommended = manifest.get("recommended", {})
    for line in describe(recommended, where=True):
        click.echo(line)
    for device, entry in recommended.items():
        for mode in ("latency", "throughput"):
            note = entry.get(mode, {}).get("serving_note")
            if note:
                click.echo(f"  {device} {mode}: {note}")
    if not recommended:
        click.echo("recommended none yet (resnet-deploy bench records it)")
