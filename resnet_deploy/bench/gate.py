"""The CI gate: compare a report with a baseline per (backend, precision, batch).

Method (docs/benchmark.md has the reasoning and the measured false-alarm rate):
- Latency statistic: p50 by default (the median resists the outliers of a shared machine), or (``--statistic``)
  p10 or min: other jobs on a shared runner only ever add time to a call, so the fastest calls of a row move
  least between runs (benchmarks/results/gate_example*.md). A row whose reports lack the statistic (a baseline
  written before p10 and min were recorded) is judged on p50, with a note.
- ``abs`` change: p50 now / p50 in the baseline. ``rel`` change: the same ratio after dividing each p50 by the
  p50 of the reference backend (``--reference``, default eager fp32) at the same batch *in the same run*; a
  machine that is 20% slower today slows the reference as much, so ``rel`` cancels it.
- A row is *suspect* when abs > 1 + threshold and rel > 1 + threshold (slower in absolute time and against
  the reference), or when abs > 1 + ``max_abs_regression`` (default 30%, beyond a shared machine's noise:
  this catches a model that got slower everywhere, which the ratio cancels, and judges the reference row
  itself). Without a reference (``None``, or not measured in the run) abs > 1 + threshold alone is suspect.
  Suspects are re-measured together with their reference rows (up to ``retries`` rounds); a row fails only
  when it is suspect in the first run and in every re-measurement.
- Accuracy (deterministic inputs, not re-measured) fails when top1 / top5 / top1_agreement fall more than
  ``accuracy_tolerance`` (absolute, default 1 point) or cosine falls more than ``cosine_tolerance``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import UserError

DEFAULT_MAX_REGRESSION = 0.20
DEFAULT_ACCURACY_TOLERANCE = 0.01
DEFAULT_COSINE_TOLERANCE = 1e-3
DEFAULT_MAX_ABS_REGRESSION = 0.30
Key = tuple[str, str, int, str]  # backend, precision, batch, mode
# The documented CI gate for a CPU runner (docs/benchmark.md, ``bench --help``; benchmarks/gate_example.py measures
# it): one batch size; each row timed for a fixed time, not a fixed count, so a 1 ms row gets hundreds of samples;
# one thread per runtime, no spin-waiting (a shared runner's load stalls a spinning or multi-threaded runtime far
# more); judged on the fastest call, which other jobs on the runner make slower far less than the median, at 30%:
# the fastest call of an unchanged model still moved by 20-45% between runs on this project's busy 2-core machine.
# Without the eager ratio a re-measurement runs the suspect rows only (eager's worker is the slowest to start), and
# ``--device cpu`` spares the wait for torch to look for a GPU.
CI_OPTIONS = ("--batch", "1", "--duration", "0.5", "--threads", "1", "--quiet-threads", "--statistic", "min",
              "--reference", "none", "--max-regression", "30%", "--device", "cpu")


def parse_percent(text: "str | float", what: str = "--max-regression") -> float:
    """``10%`` or ``10`` -> 0.10; must be > 0."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*%?\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise UserError(f"{what} {text!r} is invalid: give a percentage > 0, e.g. 10%")
    return float(m.group(1)) / 100.0


def key(row: dict) -> Key:
    """A row's identity across runs; schema-1 rows (no mode) are latency rows."""
    return (row["backend"], row["precision"], int(row["batch"]), row.get("mode", "latency"))


STATISTICS = ("p50", "p10", "min")


def _has(row: dict | None, statistic: str) -> bool:
    return bool(row) and isinstance(row["latency_ms"].get(statistic), (int, float))


@dataclass
class RowCheck:
    key: Key
    base_p50: float | None  # the gate's statistic (p50 unless --statistic says otherwise), ms
    now_p50: float | None
    abs_change: float | None = None  # now / base - 1
    rel_change: float | None = None  # same, relative to the reference backend of the same run
    latency_suspect: bool = False
    accuracy_drops: list[str] = field(default_factory=list)
    remeasured: bool = False
    verdict: str = "ok"  # ok | slower | accuracy | new | missing


@dataclass
class GateResult:
    checks: list[RowCheck]
    threshold: float
    reference: str | None
    notes: list[str] = field(default_factory=list)
    statistic: str = "p50"

    @property
    def failed(self) -> list[RowCheck]:
        return [c for c in self.checks if c.verdict in ("slower", "accuracy")]

    @property
    def suspects(self) -> list[Key]:
        return [c.key for c in self.checks if c.latency_suspect]

    @property
    def passed(self) -> bool:
        return not self.failed

    def table(self, only_failed: bool = False) -> str:
        rows = self.failed if only_failed else self.checks
        stat = f"{self.statistic} ms"
        out = [f"| backend | precision | batch | mode | baseline {stat} | now {stat} | change | vs {self.reference or 'ref'} "
               f"| verdict |", "|---|---|---:|---|---:|---:|---:|---:|---|"]
        for c in rows:
            pct = (lambda v: "n/a" if v is None else f"{v:+.1%}")
            ms = (lambda v: "n/a" if v is None else f"{v:.2f}")
            verdict = c.verdict + (" (re-measured)" if c.remeasured else "")
            if c.accuracy_drops:
                verdict += ": " + "; ".join(c.accuracy_drops)
            out.append(f"| {c.key[0]} | {c.key[1]} | {c.key[2]} | {c.key[3]} | {ms(c.base_p50)} | {ms(c.now_p50)} | "
                       f"{pct(c.abs_change)} | {pct(c.rel_change)} | {verdict} |")
        return "\n".join(out) + "\n"


def _reference_time(rows: dict, reference: str | None, batch: int, mode: str, statistic: str) -> float | None:
    if not reference:
        return None
    r = rows.get((reference, "fp32", batch, mode))
    return r["latency_ms"][statistic if _has(r, statistic) else "p50"] if r else None


def accuracy_drops(base: dict | None, now: dict | None, tol: float, cos_tol: float) -> list[str]:
    drops = []
    if now and now.get("nonfinite"):
        drops.append(f"not finite: {now['nonfinite']}")
    if not base or not now:
        return drops
    for k in ("top1", "top5", "top1_agreement"):
        if base.get(k) is not None and now.get(k) is not None and base[k] - now[k] > tol:
            drops.append(f"{k} {base[k]:.1%} -> {now[k]:.1%}")
    if base.get("cosine") is not None and now.get("cosine") is not None and base["cosine"] - now["cosine"] > cos_tol:
        drops.append(f"cosine {base['cosine']:.6f} -> {now['cosine']:.6f}")
    return drops


def compare(baseline: dict, current: dict, max_regression: float = DEFAULT_MAX_REGRESSION,
            reference: str | None = "eager", max_abs_regression: float = DEFAULT_MAX_ABS_REGRESSION,
            accuracy_tolerance: float = DEFAULT_ACCURACY_TOLERANCE, cosine_tolerance: float = DEFAULT_COSINE_TOLERANCE,
            statistic: str = "p50") -> GateResult:
    """Compare two reports (schema 1 or 2) row by row (no re-measurement; see ``gate``) on ``statistic`` (p50, p10
    or min of the latency; rows without it in both reports fall back to p50)."""
    if statistic not in STATISTICS:
        raise UserError(f"--statistic {statistic!r} is invalid: choose {', '.join(STATISTICS)}")
    base_rows = {key(r): r for r in baseline["results"]}
    now_rows = {key(r): r for r in current["results"]}
    notes = []
    if baseline.get("machine", {}).get("cpu") != current.get("machine", {}).get("cpu"):
        notes.append(f"baseline was measured on {baseline.get('machine', {}).get('cpu')!r}, this run on "
                     f"{current.get('machine', {}).get('cpu')!r}: absolute times are not comparable")
    if reference and not any(k[:2] == (reference, "fp32") for k in now_rows):
        notes.append(f"reference {reference} fp32 was not measured in this run: rows are judged on absolute time only")
    checks, on_p50 = [], []
    for k, now in now_rows.items():
        base = base_rows.get(k)
        if base is None:
            checks.append(RowCheck(k, None, now["latency_ms"]["p50"], verdict="new"))
            continue
        stat = statistic if _has(base, statistic) and _has(now, statistic) else "p50"
        if stat != statistic:
            on_p50.append(f"{k[0]} {k[1]} b{k[2]}")
        b50, n50 = base["latency_ms"][stat], now["latency_ms"][stat]
        c = RowCheck(k, b50, n50, abs_change=n50 / b50 - 1)
        bref, nref = (_reference_time(rows, reference, *k[2:], stat) for rows in (base_rows, now_rows))
        is_ref = reference is not None and k[:2] == (reference, "fp32")
        if bref and nref and not is_ref:
            c.rel_change = (n50 / nref) / (b50 / bref) - 1
        if c.rel_change is not None:
            c.latency_suspect = (c.abs_change > max_regression and c.rel_change > max_regression) \
                or c.abs_change > max(max_abs_regression, max_regression)
        elif is_ref and nref:
            c.latency_suspect = c.abs_change > max(max_abs_regression, max_regression)
        else:
            c.latency_suspect = c.abs_change > max_regression
        c.accuracy_drops = accuracy_drops(base.get("accuracy"), now.get("accuracy"), accuracy_tolerance,
                                          cosine_tolerance)
        c.verdict = "accuracy" if c.accuracy_drops else "slower" if c.latency_suspect else "ok"
        checks.append(c)
    for k in base_rows.keys() - now_rows.keys():
        checks.append(RowCheck(k, base_rows[k]["latency_ms"]["p50"], None, verdict="missing"))
    checks.sort(key=lambda c: c.key)
    if on_p50:
        notes.append(f"no {statistic} in both reports for {', '.join(on_p50)} (a baseline written before bench "
                     "recorded it): judged on p50")
    return GateResult(checks, max_regression, reference, notes, statistic)


def merge_remeasured(current: dict, remeasured: dict) -> dict:
    """``current`` with the re-measured rows swapped in (accuracy kept from the first run: it is deterministic)."""
    fresh = {key(r): r for r in remeasured["results"]}
    rows = []
    for r in current["results"]:
        new = fresh.get(key(r))
        if new is not None:
            new = {**new, "accuracy": r.get("accuracy"), "remeasured": True,
                   "first_latency_ms": r.get("first_latency_ms", r["latency_ms"])}
        rows.append(new or r)
    return {**current, "results": rows}


def gate(baseline: dict, current: dict, remeasure: Callable[[set], dict] | None,
         max_regression: float = DEFAULT_MAX_REGRESSION,
         reference: str | None = "eager", retries: int = 2, **tolerances) -> tuple[GateResult, dict]:
    """Compare, then re-measure the latency suspects (with their reference rows) up to ``retries`` times.

    A suspect clears as soon as one re-measurement is within the threshold; it fails only when it was slower
    in the first run and in every re-measurement. ``remeasure(keys)`` returns a report holding those rows.
    Returns the verdict and the final report (re-measured rows swapped in).
    """
    result = compare(baseline, current, max_regression, reference, **tolerances)
    suspects, tried, report, rounds = set(result.suspects), set(), current, 0
    measured = {key(r) for r in current["results"]}
    while suspects and remeasure is not None and rounds < retries:
        rounds += 1
        keys = suspects | ({(reference, "fp32", *k[2:]) for k in suspects} & measured if reference else set())
        report = merge_remeasured(report, remeasure(keys))
        result = compare(baseline, report, max_regression, reference, **tolerances)
        tried |= suspects
        suspects = {c.key for c in result.checks if c.latency_suspect} & suspects
        for c in result.checks:
            c.remeasured = c.key in tried
            if c.verdict == "slower" and c.key not in suspects:
                c.verdict, c.latency_suspect = "ok", False  # cleared by an earlier re-measurement
    if rounds:
        result.notes.append(f"re-measured {len(tried)} suspect row(s) in {rounds} round(s); a row fails only "
                            f"when slower in the first run and in every re-measurement")
    return result, report
