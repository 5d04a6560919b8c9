"""``resnet-deploy bench BUNDLE``: benchmark every artifact of a bundle, report, and gate against a baseline."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click

from ..backends import table
from ..bench.gate import CI_OPTIONS, DEFAULT_MAX_REGRESSION, STATISTICS
from .common import console, emit_json, force_option, json_option, verbose_option


def _int_list(text: str, what: str) -> list[int]:
    from ..errors import UserError

    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} {text!r} is invalid: give comma-separated integers, e.g. 1,8,32") from None
    if not values or min(values) < 1:
        raise UserError(f"{what} {text!r} is invalid: batch sizes must be integers >= 1")
    return values


@contextlib.contextmanager
def _progress_display():
    """A live progress bar fed by the workers' events (plain lines when stderr is not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    con = console()
    state = {"label": "", "task": None}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=con, disable=not con.is_terminal) as prog:
        def on_event(e: dict) -> None:
            kind = e.get("event")
            if kind == "remeasure":
                con.print(f"re-measuring {e['rows']} suspect/reference row(s)")
            elif kind == "case":
                state["label"] = e.get("label", "")
                con.print(f"benchmarking {state['label']}")
            elif kind == "batch":
                if state["task"] is not None:
                    prog.remove_task(state["task"])
                total = e.get("iters") if not e.get("duration_s") else None
                state["task"] = prog.add_task(f"{state['label']} batch {e['batch']}", total=total)
            elif kind == "iter" and state["task"] is not None:
                prog.update(state["task"], completed=e["done"])

        yield on_event


HELP = f"""Benchmark a bundle's artifacts (latency, throughput, memory, accuracy vs eager) and gate regressions.

\b
CI gate on a CPU runner (record the baseline once, then gate each change):
  resnet-deploy bench BUNDLE --baseline ci/base.json {' '.join(CI_OPTIONS)} --update-baseline
  resnet-deploy bench BUNDLE --baseline ci/base.json {' '.join(CI_OPTIONS)}
"""


@click.command(help=HELP)
@click.argument("bundle", type=click.Path(path_type=str))
@click.option("--backend", "backends", default=None, metavar="LIST",
              help=f"Comma-separated: {', '.join(table.names())} [default: "
                   f"{', '.join(s.name for s in table.all_backends() if s.default)}, each where it can run here "
                   "(GPU ones with a GPU)].")
@click.option("--precision", "precisions", default=None, metavar="LIST", help="fp32,fp16,bf16,int8 [default: all].")
@click.option("--batch", "batches", default="1,8,32", show_default=True, metavar="N,N", help="Batch sizes.")
@click.option("--warmup", type=int, default=10, show_default=True, metavar="N", help="Untimed iterations first.")
@click.option("--iters", type=int, default=100, show_default=True, metavar="N", help="Timed iterations per batch size.")
@click.option("--duration", type=float, default=None, metavar="S", help="Time each batch size for S seconds instead.")
@click.option("--threads", type=int, default=None, metavar="N",
              help="Intra-op threads for every backend [default: each runtime's].")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
              help="Device of the torch backends.")
@click.option("--images", default=None, type=click.Path(path_type=str), metavar="DIR",
              help="ImageFolder (class sub-folders) for top-1/top-5 [default: seeded random inputs].")
@click.option("--samples", type=int, default=None, metavar="N",
              help="Accuracy inputs: how many random ones [default: 64, or the largest batch] / cap on images.")
@click.option("--seed", type=int, default=0, show_default=True, metavar="N",
              help="Seed of the timing and random accuracy inputs.")
@click.option("--out", default=None, type=click.Path(path_type=str), metavar="DIR",
              help="Folder for report.json/.md/.png (one that holds files needs --force) [default: a fresh "
                   "./bench-<bundle name>-<n> each run, the first free n].")
@click.option("--baseline", default=None, type=click.Path(path_type=str), metavar="FILE",
              help="Report to compare with (CI gate).")
@click.option("--max-regression", default=f"{DEFAULT_MAX_REGRESSION:.0%}", show_default=True, metavar="PCT",
              help="Allowed slowdown per row, of --statistic (small shared runners swing by 10-20% between runs).")
@click.option("--statistic", default="p50", show_default=True, type=click.Choice(STATISTICS),
              metavar="|".join(STATISTICS),
              help="Which latency the gate compares per row: the median, or the fastest tenth or fastest call (other "
                   "jobs on a shared runner only add time, so these move least between runs).")
@click.option("--reference", default="eager", show_default=True, metavar="BACKEND|none",
              help="Backend whose same-run fp32 time normalises the others ('none' to compare absolute only).")
@click.option("--max-abs-regression", default="30%", show_default=True, metavar="PCT",
              help="A row slower than this in absolute time is suspect even when the reference slowed as much "
                   "(a model slower everywhere); the reference row itself is judged on it.")
@click.option("--accuracy-tolerance", default="1%", show_default=True, metavar="POINTS",
              help="Allowed drop of top-1 / top-5 / top-1 agreement (absolute points).")
@click.option("--retries", type=click.IntRange(min=0), default=2, show_default=True, metavar="N",
              help="Re-measure a suspect row up to this many times; it fails only if slower every time.")
@click.option("--update-baseline", is_flag=True, help="Write this run's report to --baseline (no failing).")
@click.option("--mode", "mode", default="latency", show_default=True, metavar="latency|throughput|both",
              help="latency: one request at a time (p50-p99); throughput: as many requests in flight as each runtime "
                   "wants (ONNX Runtime concurrent runs, OpenVINO's optimal requests, TensorRT several streams), img/s.")
@click.option("--quiet-threads", is_flag=True, help="Turn thread spin-waiting off in ONNX Runtime and OpenMP: steadier "
              "on busy shared CI runners, slower on a quiet machine [default: each runtime as it ships].")
@click.option("--no-plot", is_flag=True, help="Skip the PNG.")
@force_option
@json_option
@verbose_option
def bench(bundle, backends, precisions, batches, warmup, iters, duration, threads, device, images, samples, seed, out,
          baseline, max_regression, statistic, reference, max_abs_regression, accuracy_tolerance, retries,
          update_baseline, mode, quiet_threads, no_plot, force, as_json, verbose) -> None:
    """Benchmark a bundle's artifacts (latency, throughput, memory, accuracy vs eager) and gate regressions."""
    from ..bench import BenchConfig, parse_percent, run_bench
    from ..bench.harness import gate_against_baseline, nonfinite_rows, parse_modes
    from ..bench import recommend
    from ..bench import report as rep
    from ..bundle import check_out_dir, read_manifest
    from ..errors import CheckFailed, UserError
    from ..types import Precision
    from .common import setup

    setup(verbose, as_json)
    read_manifest(bundle)
    cfg = BenchConfig(
        backends=table.parse_list(backends, "backend") if backends else None,
        precisions=Precision.parse_list(precisions, "precision") if precisions else None,
        batches=_int_list(batches, "--batch"), warmup=warmup, iters=iters, duration_s=duration, threads=threads,
        device=device, images=images, samples=samples, seed=seed, quiet_threads=quiet_threads,
        modes=parse_modes(mode))
    cfg.validate()
    threshold = parse_percent(max_regression)
    abs_cap = parse_percent(max_abs_regression, "--max-abs-regression")
    acc_tol = parse_percent(accuracy_tolerance, "--accuracy-tolerance")
    ref = None if reference.lower() == "none" else table.get(reference, "reference backend").name
    if update_baseline and not baseline:
        raise UserError("--update-baseline needs --baseline PATH (where to write the new baseline)")
    base = None
    if baseline and update_baseline and not Path(baseline).exists():
        console().print(f"note: --baseline {baseline!r} does not exist yet: this run writes it")
    elif baseline:
        try:
            base = rep.load_report(baseline)  # fail fast, before any measuring
        except UserError as e:
            if not update_baseline:
                raise
            console().print(f"note: no usable baseline to compare with, writing a new one ({e})")
    # --out: that folder (refused when it holds files, unless --force); none: a fresh bench-<bundle>-<n> each run
    out_dir = check_out_dir(out, force) if out else check_out_dir(next(_fresh_folders(bundle)), False)

    with _progress_display() as on_event:
        report = run_bench(bundle, cfg, on_event=on_event)
        result = None
        if base is not None:
            result, report = gate_against_baseline(report, base, threshold, ref, retries=retries,
                                                   remeasure_suspects=not update_baseline, on_event=on_event,
                                                   max_abs_regression=abs_cap, accuracy_tolerance=acc_tol,
                                                   statistic=statistic)

    written = _write_outputs(report, out_dir if out else None, no_plot, force, as_json, bundle)
    con = console()
    picks = recommend.record(bundle, report)
    lines = recommend.describe(picks.recorded) + recommend.describe(
        {d: e for d, e in picks.best.items() if d not in picks.recorded}, prefix="best of this run for")
    for line in lines + [f"note: {n}" for n in picks.notes]:
        con.print(line)
    if update_baseline:
        Path(baseline).parent.mkdir(parents=True, exist_ok=True)
        rep.write_json(report, baseline)
        con.print(f"baseline written: {baseline}")
    bad = nonfinite_rows(report)
    if as_json:
        emit_json({"ok": not bad and (result is None or result.passed or update_baseline), "report": written,
                   "recommended": picks.recorded, "best": picks.best, "recommendation_notes": picks.notes,
                   "skipped": report.get("skipped", []),
                   "notes": report.get("notes", []) + (result.notes if result else []),
                   "nonfinite": bad, "results": [{k: v for k, v in r.items() if k != "samples_ms"}
                                                 for r in report["results"]],
                   "gate": None if result is None else {
                       "passed": result.passed, "threshold": threshold, "reference": ref, "statistic": statistic,
                       "failed": [{"backend": c.key[0], "precision": c.key[1], "batch": c.key[2],
                                   "verdict": c.verdict, "abs_change": c.abs_change, "rel_change": c.rel_change,
                                   "accuracy_drops": c.accuracy_drops} for c in result.failed]}})
    if bad:
        raise CheckFailed(f"{len(bad)} row(s) produced NaN/Inf (never a pass): {bad[0]}")
    if result is not None:
        for note in result.notes:
            con.print(f"note: {note}")
        if update_baseline:
            if not as_json:
                click.echo(result.table())
        elif not result.passed:
            if not as_json:
                click.echo(f"REGRESSIONS (threshold {threshold:.0%} on {statistic}, reference {ref}):")
                click.echo(result.table(only_failed=True))
            raise CheckFailed(f"{len(result.failed)} row(s) regressed against {baseline}")
        else:
            con.print(f"gate passed: no row slower than {threshold:.0%} ({statistic}, vs {baseline}), no accuracy drop")


def _fresh_folders(bundle: str):
    """``./bench-<bundle name>-<n>`` for n = 1, 2, ... that do not exist (yet)."""
    import itertools
    import os

    base = Path(f"bench-{Path(bundle).absolute().name}").absolute()
    for n in itertools.count(1):
        candidate = base.with_name(f"{base.name}-{n}")
        if not os.path.lexists(candidate):
            yield candidate


def _write_outputs(report: dict, out_dir: Path | None, no_plot: bool, force: bool, as_json: bool,
                   bundle: str) -> dict:
    """report.json, report.md (also printed, unless ``as_json``) and report.png, written into a staged folder that
    replaces ``out_dir`` only with ``force``, or (``out_dir`` None) becomes the first free ``bench-<bundle>-<n>``;
    returns the paths written."""
    from ..bench import report as rep
    from ..errors import MissingDependency, UserError
    from ..files import StagedDir

    con = console()
    md = rep.to_markdown(report)
    for candidate in [out_dir] if out_dir is not None else _fresh_folders(bundle):
        try:
            with StagedDir(candidate, force, "--out") as staged:
                rep.write_json(report, staged.path / "report.json")
                (staged.path / "report.md").write_text(md)
                if not no_plot:
                    try:
                        rep.plot(report, staged.path / "report.png")
                    except MissingDependency as e:  # the measurements are worth keeping without the picture
                        con.print(f"note: no PNG: {e}")
                        no_plot = True
        except UserError:
            if out_dir is not None or not candidate.exists():
                raise
            continue  # another run took this number meanwhile: the next one
        out_dir = candidate
        break
    if not as_json:
        click.echo(md)
    for note in report.get("notes", []):
        con.print(f"note: {note}")
    con.print(f"isolation: {report['config']['isolation']}; {report['config']['threading']}")
    con.print(f"report: {out_dir / 'report.json'} (+ .md{'' if no_plot else ', .png'})")
    names = ["report.json", "report.md"] + ([] if no_plot else ["report.png"])
    return {n.split(".")[1]: str(out_dir / n) for n in names}
