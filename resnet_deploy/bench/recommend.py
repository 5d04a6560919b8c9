"""The bundle's recommended artifact per device and mode, from a benchmark run on this machine.

``bench`` records, in ``manifest["recommended"][device][mode]``, the fastest artifact of the run whose outputs
were finite and agreed with eager as its precision's bar requires: in latency mode the lowest p50 at the smallest
batch measured, in throughput mode the highest img/s. Each entry also keeps the best row per backend
(``by_backend``), and the best row per runtime of the C++ loader (``cpp``: the backend table says which runtime
runs each backend's artifacts), so a runtime that can only use its own artifacts finds its pick. Which backends
compete for which device is the backend table's ``device``. The CPU model and ISA flags go with it: the
recommendation holds for that kind of machine.

``triton`` and the C++ loader deploy what this entry names, so noise must not change it:

- Only a run that measured every case a plain ``bench`` runs on the device (every default backend runnable here,
  at every precision the bundle has for it) writes the device's entry. A narrowed run (``--backend``,
  ``--precision``) reports its best and leaves the entry alone.
- A row is recommendable only when its accuracy passes its precision's bar on at least ``MIN_ACCURACY_SAMPLES``
  inputs, and the bundle's own validation record of the artifact passed.
- A pick already in the entry stays unless this run's winner beats it, measured in the same run, by more than
  the run's noise: the larger relative spread (IQR / p50 of the timing samples) of the two rows.

Each pick names the file it measured (``artifact``), its ``kind``, and the bundle file Triton's model for that
backend would serve (``served_from``; None, with a ``serving_note``, when the bundle holds no such file: e.g.
OpenVINO measured on an ONNX graph where the bundle has no OpenVINO IR).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

from ..backends import table
from ..errors import UserError
from ..layout import inference_validation
from ..types import Precision
from ..validate import BARS

# Enough accuracy inputs to judge a precision's bar: with n inputs one changed prediction moves top-1 agreement by
# 100/n points. On 5 images that is 20 points, and an INT8 graph at 80% agreement passed the 75% bar by a single
# image. At 64 one change is 1.6 points, below every bar's margin but fp32's and fp16's (which then allow none);
# and 64 is a multiple of the usual batch sizes (1, 8, 32, 64), so every batch size runs full batches. bench's
# default random inputs are 64.
MIN_ACCURACY_SAMPLES = 64


@dataclass
class Outcome:
    """What ``record`` did: ``recorded`` (device -> the entry now in the manifest), ``best`` (device -> this run's
    best, recorded or not) and ``notes`` (why an entry was left alone or kept its pick, rows not recommendable)."""

    recorded: dict = field(default_factory=dict)
    best: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def not_recommendable(row: dict, manifest: dict) -> str | None:
    """Why ``row`` cannot be recommended (non-finite outputs, below its precision's bar, an artifact whose
    validation record failed), or None."""
    acc = row.get("accuracy") or {}
    if acc.get("nonfinite"):
        return f"outputs not finite ({acc['nonfinite']})"
    if acc.get("top1_agreement") is None:
        return "no accuracy measured"
    records = manifest.get("validation", {})
    # an artifact run at another inference precision (OpenVINO's bf16 on the fp32 IR) has its own record
    record = records.get(inference_validation(row["artifact"], row["precision"])) or records.get(row["artifact"], {})
    bar = BARS.get(row["precision"])
    if bar is None:
        return f"no accuracy bar for {row['precision']}"
    if not record.get("passed", True):
        return f"the bundle's validation record of {row['artifact']} failed"
    if acc["top1_agreement"] < bar.min_top1_agreement:
        return f"top-1 agreement {acc['top1_agreement']:.1%} < {bar.min_top1_agreement:.0%}"
    if acc.get("spread_error") is not None and acc["spread_error"] > bar.max_spread_error:
        return f"spread error {acc['spread_error']:.3g} > {bar.max_spread_error:g}"
    return None


def _serving(row: dict, manifest: dict) -> dict:
    """The artifact's kind, and the bundle file Triton's model for the backend would serve (or why none)."""
    out = {"kind": manifest.get("files", {}).get(row["artifact"], {}).get("kind")}
    served_by = table.get(row["backend"]).served_by
    if served_by is None:
        return {**out, "served_from": None, "serving_note": f"no Triton model serves {row['backend']}'s artifacts"}
    serving = table.get(served_by).triton
    precision, _ = serving.serve_precision(row["precision"])
    files = serving.artifacts(manifest, Precision.parse(precision))
    if files:
        return {**out, "served_from": files[0]}
    return {**out, "served_from": None,
            "serving_note": f"{row['backend']} measured {row['artifact']} ({out['kind']}); the bundle holds no "
                            f"{precision} file that Triton's {serving.label or served_by} model serves"}


def _pick(row: dict, manifest: dict) -> dict:
    return {"backend": row["backend"], "precision": row["precision"], "artifact": row["artifact"],
            "batch": row["batch"], "mode": row.get("mode", "latency"), "p50_ms": round(row["latency_ms"]["p50"], 3),
            "throughput_ips": round(row["throughput_ips"], 2), **_serving(row, manifest)}


def _same(pick: dict, row: dict) -> bool:
    return (pick.get("backend"), pick.get("precision"), pick.get("artifact")) == \
        (row["backend"], row["precision"], row["artifact"])


def _label(p: dict) -> str:
    return f"{p['backend']} {p['precision']} ({p['artifact']})"


def relative_spread(row: dict) -> float:
    """IQR / p50 of the row's timing samples (0 when they are not in the row)."""
    spread = row.get("spread_ms") or {}
    p50 = row["latency_ms"]["p50"]
    return spread["iqr"] / p50 if spread.get("iqr") is not None and p50 > 0 else 0.0


def _gain(new: dict, old: dict, mode: str) -> float:
    """How much faster ``new`` is than ``old`` (relative): lower p50 in latency mode, higher img/s in throughput."""
    if mode == "latency":
        return 1 - new["latency_ms"]["p50"] / old["latency_ms"]["p50"]
    return new["throughput_ips"] / old["throughput_ips"] - 1


def _choose(old: dict | None, rows: list[dict], mode: str, what: str, notes: list[str]) -> dict:
    """The row to recommend among ``rows``: the fastest, unless the ``old`` pick (measured in this run too) is
    within the run's noise of it; a note says which and why."""
    rank = (lambda r: r["latency_ms"]["p50"]) if mode == "latency" else (lambda r: -r["throughput_ips"])
    best = min(rows, key=rank)
    if not old or _same(old, best):
        return best
    kept = next((r for r in rows if _same(old, r)), None)
    if kept is None:
        notes.append(f"{what}: {_label(best)} replaces {_label(old)}, which this run did not measure as "
                     f"recommendable at batch {best['batch']}")
        return best
    gain, noise = _gain(best, kept, mode), max(relative_spread(best), relative_spread(kept))
    if gain > noise:
        notes.append(f"{what}: {_label(best)} replaces {_label(old)}: {gain:.1%} faster, more than this run's "
                     f"noise (IQR/p50 {noise:.1%})")
        return best
    notes.append(f"{what}: kept {_label(old)}; {_label(best)} was {gain:.1%} faster, within this run's noise "
                 f"(IQR/p50 {noise:.1%})")
    return kept


def _best(rows: list[dict], mode: str, old: dict, manifest: dict, what: str, notes: list[str]) -> dict:
    """The pick overall, per backend and per C++ runtime, each kept from ``old`` unless beaten beyond the noise."""
    by_backend = {b: _pick(_choose(old.get("by_backend", {}).get(b), [r for r in rows if r["backend"] == b], mode,
                                   f"{what} {b}", notes), manifest)
                  for b in dict.fromkeys(r["backend"] for r in rows)}
    runtimes = {r["backend"]: table.get(r["backend"]).cpp for r in rows}
    cpp = {rt: _pick(_choose(old.get("cpp", {}).get(rt), [r for r in rows if runtimes[r["backend"]] == rt], mode,
                             f"{what} C++ {rt}", notes), manifest)
           for rt in dict.fromkeys(v for v in runtimes.values() if v is not None)}
    top = old if old.get("backend") else None
    return {**_pick(_choose(top, rows, mode, what, notes), manifest), "by_backend": by_backend, "cpp": cpp}


def missing_cases(report: dict, manifest: dict, device: str) -> list[str]:
    """``backend precision`` cases a plain ``bench`` runs on ``device`` here that this run did not measure."""
    from .runners import select_cases

    try:
        cases, _ = select_cases(manifest)
    except UserError:
        return []
    measured = {(r["backend"], r["precision"]) for r in report["results"]}
    return [c.label for c in cases
            if table.get(c.backend).device == device and (c.backend, str(c.precision)) not in measured]


def recommend(report: dict, manifest: dict, previous: dict | None = None) -> tuple[dict, list[str]]:
    """``{device: {"latency": ..., "throughput": ..., "cpu": ..., "isa": [...]}}`` for the devices the run covered
    (an accuracy run: rows without accuracy cannot be recommended), and notes: rows not recommendable and why,
    picks kept or replaced. ``previous``: entries whose picks stay unless beaten beyond the run's noise (on the same
    CPU model)."""
    previous = previous or {}
    out, notes = {}, []
    for device in table.DEVICES:
        backends = {s.name for s in table.on_device(device)}
        rows, refused = [], {}
        for r in report["results"]:
            if r["backend"] not in backends:
                continue
            why = not_recommendable(r, manifest)
            if why is None:
                rows.append(r)
            else:
                refused.setdefault(f"{r['backend']} {r['precision']} ({r['artifact']})", why)
        notes.extend(f"{label} not recommendable: {why}" for label, why in refused.items())
        if not rows:
            continue
        old = previous.get(device, {})
        if old.get("cpu") != report["machine"].get("cpu"):
            old = {}  # measured on another kind of machine: this run decides afresh
        entry = {"cpu": report["machine"].get("cpu"), "isa": report["machine"].get("isa", []),
                 "measured": _dt.date.today().isoformat(), "threads": report["config"].get("threads"),
                 "quiet_threads": report["config"].get("quiet_threads", False),
                 "accuracy_samples": report["config"].get("accuracy_samples")}
        latency = [r for r in rows if r.get("mode", "latency") == "latency"]
        if latency:
            smallest = min(r["batch"] for r in latency)
            entry["latency"] = _best([r for r in latency if r["batch"] == smallest], "latency",
                                     old.get("latency", {}), manifest, f"{device} latency", notes)
        throughput = [r for r in rows if r.get("mode") == "throughput"]
        if not throughput and latency:  # no throughput run: the largest latency batch stands in for it
            throughput = [r for r in latency if r["batch"] == max(x["batch"] for x in latency)]
        if throughput:
            entry["throughput"] = _best(throughput, "throughput", old.get("throughput", {}), manifest,
                                        f"{device} throughput", notes)
        out[device] = entry
    return out, notes


def describe(recommended: dict, prefix: str = "recommended for", where: bool = False) -> list[str]:
    """One line per device and mode, for the summary; ``where``: with the CPU and date it was measured on."""
    lines = []
    for device, entry in recommended.items():
        for mode in ("latency", "throughput"):
            if mode in entry:
                e = entry[mode]
                lines.append(f"{prefix} {device} {mode}: {e['backend']} {e['precision']} ({e['artifact']}), "
                             f"batch {e['batch']}: p50 {e['p50_ms']:.2f} ms, {e['throughput_ips']:.1f} img/s"
                             + (f"; measured {entry.get('measured')} on {entry.get('cpu')}" if where else ""))
    return lines


def record(bundle, report: dict) -> Outcome:
    """Write the run's recommendation into the bundle's manifest (under the bundle's lock; other keys kept) for the
    devices this run measured completely, on enough accuracy inputs. Notes say what was left alone and why; a
    bundle that is busy or read-only is a note, not a failure."""
    from ..bundle import BundleUpdate, read_manifest

    if not any(r.get("accuracy") for r in report["results"]):
        return Outcome()
    manifest = read_manifest(bundle)
    best, notes = recommend(report, manifest)
    outcome = Outcome(best=best)
    left_alone = []
    samples = report["config"].get("accuracy_samples")
    if best and samples is not None and samples < MIN_ACCURACY_SAMPLES:
        outcome.notes = notes + [
            f"recommendation left alone: {samples} accuracy input(s) are too few to judge the precision bars (one "
            f"changed prediction is {100 / samples:.1f} points of agreement; needs >= {MIN_ACCURACY_SAMPLES}: "
            f"--samples {MIN_ACCURACY_SAMPLES}, or --images with that many)"]
        return outcome
    complete = []
    for device in best:
        missing = missing_cases(report, manifest, device)
        if missing:
            left_alone.append(f"recommendation for {device} left alone: this run did not measure "
                              f"{', '.join(missing)} (a run with every default backend and precision updates it)")
        else:
            complete.append(device)
    if complete:
        try:
            with BundleUpdate(bundle) as b:
                previous = b.manifest.get("recommended", {})
                outcome.best, notes = recommend(report, b.manifest, {d: previous[d] for d in complete if d in previous})
                for device in complete:
                    modes = {m: outcome.best[device][m] for m in ("latency", "throughput") if m in outcome.best[device]}
                    outcome.recorded[device] = {**previous.get(device, {}), **outcome.best[device], **modes}
                b.manifest["recommended"] = {**previous, **outcome.recorded}
        except (UserError, OSError) as e:
            outcome.recorded = {}
            left_alone.append(f"recommendation not recorded in the bundle: {e}")
    outcome.notes = notes + left_alone
    return outcome
