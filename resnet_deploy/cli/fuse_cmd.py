"""``resnet-deploy fuse``: run the fusion passes on an ONNX file (or a bundle) and print the fusion report."""

from __future__ import annotations

import click

from .common import bundle_json, emit_json, fmt_parity, force_option, json_option, out, split_names, verbose_option


def print_passes() -> None:
    from ..fuse import PASSES

    for name, p in PASSES.items():
        targets = ",".join(sorted(str(t) for t in p.targets))
        click.echo(f"{name:<22} {targets:<22} {p.summary}")


def node_counts(target: str, before: int, after: int, rewrites: int, torch_fold: dict | None = None) -> str:
    """``49 -> 24 nodes``; an unchanged count says why, so it does not read as "fusion did nothing": BatchNorm was
    folded into its Conv in PyTorch before export (``torch_fold``: the export's record, lists or counts)."""
    folded = (torch_fold or {}).get("folded") or 0
    folded = folded if isinstance(folded, int) else len(folded)
    text = f"{before} -> {after} nodes" if before != after else f"{after} nodes"
    here = f"{rewrites} rewrite{'s' if rewrites != 1 else ''} here" if rewrites else f"nothing left to fuse for {target}"
    if target == "portable" and folded:
        return f"{text} ({folded} BatchNorm folded into their Conv in PyTorch before export; {here})"
    return text if before != after else f"{text} ({here})"


def print_report(report: dict, details: bool = True, torch_fold: dict | None = None) -> None:
    """The report of one target as two rich tables: fused nodes per block, and op counts before / after."""
    from rich.table import Table

    from ..fuse.report import block_rows, op_rows

    con = out()
    if details and report["blocks"]:
        t = Table(title=f"fusion ({report['target']}): what became what", title_justify="left")
        for col in ("block", "pass", "nodes", "became"):
            t.add_column(col)
        for row in block_rows(report):
            t.add_row(*row)
        con.print(t)
    rewrites = sum(p["rewrites"] for p in report["passes"])
    t = Table(title=f"node counts ({report['target']}): "
                    f"{node_counts(report['target'], report['nodes_before'], report['nodes_after'], rewrites, torch_fold)}",
              title_justify="left")
    t.add_column("op")
    t.add_column("before", justify="right")
    t.add_column("after", justify="right")
    for op, a, b in op_rows(report):
        t.add_row(op, str(a), str(b))
    con.print(t)
    for d in report["declined"]:
        con.print(f"declined {d['pass_name']} at {', '.join(d['nodes'])}: {d['reason']}")


@click.command()
@click.argument("source", required=False, type=click.Path(path_type=str))
@click.option("-o", "--out", "out_file", default=None, type=click.Path(path_type=str), metavar="FILE.onnx",
              help="Output ONNX file (file mode).")
@click.option("--target", default="onnxruntime", show_default=True, metavar="portable|onnxruntime|tensorrt",
              help="portable: standard ops, BN folded (tensorrt gets this); onnxruntime: com.microsoft FusedConv.")
@click.option("--skip", multiple=True, metavar="NAME[,NAME]", help="Pass to skip (repeatable; see --list).")
@click.option("--list", "list_", is_flag=True, help="List the passes in run order and exit.")
@click.option("--report", default=None, type=click.Path(path_type=str), metavar="FILE.json",
              help="Also write the report as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but warnings and errors (no tables, no progress).")
@force_option
@json_option
@verbose_option
def fuse(source, out_file, target, skip, list_, report, quiet, force, as_json, verbose) -> None:
    """Fuse SOURCE (an .onnx file, written to -o; or a bundle folder, fused in place) for a target.

    \b
    resnet-deploy fuse model.onnx -o model.ort.onnx --target onnxruntime
    resnet-deploy fuse resnet50-bundle --force     # re-run the bundle's fusion stage
    """
    import json
    import os
    from pathlib import Path

    from ..errors import UserError
    from ..files import write_file_no_replace
    from ..stages.base import return_large_blocks
    from .common import setup

    if list_:
        print_passes()
        return
    setup(verbose, as_json)
    return_large_blocks()  # this process builds a bundle and exits: big transient buffers go back at once
    if quiet:
        from .. import progress

        progress.set_reporter(None)  # no "done ..." lines either
    skip = split_names(skip)
    if source is None:
        raise UserError("missing SOURCE: give an .onnx file (with -o) or a bundle folder (or --list)")
    if Path(source).is_dir():
        from ..pipeline.update import fuse_bundle

        if out_file:
            raise UserError("-o is for an .onnx SOURCE; a bundle is fused in place")
        res, manifest = fuse_bundle(source, skip=skip, force=force)
        if as_json:
            emit_json(bundle_json(manifest, Path(source).absolute()))
            return
        if quiet:
            return
        for t, rep in res.report["targets"].items():
            print_report(rep, details=t == "onnxruntime", torch_fold=res.report.get("torch_fold"))
            out().print(f"{t} parity vs eager: {fmt_parity(res.report['parity'][t])}")
        return
    from ..fuse import fuse_file
    from ..fuse.report import target_report

    if not out_file:
        raise UserError("missing -o/--out for the fused .onnx file")
    if report and Path(report).exists() and not force:
        raise UserError(f"--report {report!r} exists: pass --force to replace it")
    res = fuse_file(source, out_file, target, skip, force=force)
    rep = target_report(res)
    if report:
        tmp = Path(report).with_name(f".{Path(report).name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(rep, indent=2) + "\n")
        write_file_no_replace(tmp, report, force, "--report")
    if as_json:
        emit_json({"ok": True, "output": str(out_file), "report": rep})
        return
    if quiet:
        return
    print_report(rep)
    out().print(f"[bold]wrote[/] {out_file} ({rep['target']}, {len(res.rewrites)} rewrites, {res.seconds:.2f} s)")
