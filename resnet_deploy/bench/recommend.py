"""The bundle's recommended artifact per device and mode, from a benchmark run on this machine.

``bench`` records, in ``manifest["recommended"][device][mode]``, the fastest artifact of the run whose outputs
were finite and agreed with eager as its precision's bar requires: in latency mode the lowest p50 at the smallest
batch measured, in throughput mode the highest img/s. Each entry also keeps the best row per backend
(``by_backend``), and the best row per runtime of the C++ loader (``cpp``: the backend table says which runtime
runs each backend's artifacts), so a runtime that can only use its own artifacts finds its pick. Which backends
compete for which device is the backend table's ``device``. The CPU model and ISA flags go with it: the
recommendation holds for that kind of machine.
"""

from __future__ import annotations

import datetime as _dt

from ..backends import table
from ..layout import inference_validation
from ..validate import BARS


def _usable(row: dict, manifest: dict) -> bool:
    """Finite outputs that meet the precision's bar (agreement, and spread error where the row has it), from an
    artifact the bundle kept as validated."""
    acc = row.get("accuracy") or {}
    if acc.get("nonfinite") or acc.get("top1_agreement") is None:
        return False
    records = manifest.get("validation", {})
    # an artifact run at another inference precision (OpenVINO's bf16 on the fp32 IR) has its own record
    record = records.get(inference_validation(row["artifact"], row["precision"])) or records.get(row["artifact"], {})
    bar = BARS.get(row["precision"])
    if bar is None or not record.get("passed", True) or acc["top1_agreement"] < bar.min_top1_agreement:
        return False
    return acc.get("spread_error") is None or acc["spread_error"] <= bar.max_spread_error


def _pick(row: dict) -> dict:
    return {"backend": row["backend"], "precision": row["precision"], "artifact": row["artifact"],
            "batch": row["batch"], "mode": row.get("mode", "latency"), "p50_ms": round(row["latency_ms"]["p50"], 3),
            "throughput_ips": round(row["throughput_ips"], 2)}


def _best(rows: list[dict], mode: str) -> dict:
    """The best row overall, per backend and per C++ runtime: lowest p50 (latency) or highest img/s (throughput)."""
    rank = (lambda r: r["latency_ms"]["p50"]) if mode == "latency" else (lambda r: -r["throughput_ips"])
    by_backend: dict[str, dict] = {}
    cpp: dict[str, dict] = {}
    for r in sorted(rows, key=rank):
        by_backend.setdefault(r["backend"], _pick(r))
        runtime = table.get(r["backend"]).cpp
        if runtime is not None:
            cpp.setdefault(runtime, _pick(r))
    return {**_pick(min(rows, key=rank)), "by_backend": by_backend, "cpp": cpp}


def recommend(report: dict, manifest: dict) -> dict:
    """``{device: {"latency": ..., "throughput": ..., "cpu": ..., "isa": [...]}}`` for the devices the run covered
    (an accuracy run: rows without accuracy cannot be recommended)."""
    out = {}
    for device in table.DEVICES:
        backends = {s.name for s in table.on_device(device)}
        rows = [r for r in report["results"] if r["backend"] in backends and _usable(r, manifest)]
        if not rows:
            continue
        entry = {"cpu": report["machine"].get("cpu"), "isa": report["machine"].get("isa", []),
                 "measured": _dt.date.today().isoformat(), "threads": report["config"].get("threads"),
                 "quiet_threads": report["config"].get("quiet_threads", False)}
        latency = [r for r in rows if r.get("mode", "latency") == "latency"]
        if latency:
            smallest = min(r["batch"] for r in latency)
            entry["latency"] = _best([r for r in latency if r["batch"] == smallest], "latency")
        throughput = [r for r in rows if r.get("mode") == "throughput"]
        if not throughput and latency:  # no throughput run: the largest latency batch stands in for it
            throughput = [r for r in latency if r["batch"] == max(x["batch"] for x in latency)]
        if throughput:
            entry["throughput"] = _best(throughput, "throughput")
        out[device] = entry
    return out


def describe(recommended: dict) -> list[str]:
    """One line per device and mode, for the summary."""
    lines = []
    for device, entry in recommended.items():
        for mode in ("latency", "throughput"):
            if mode in entry:
                e = entry[mode]
                lines.append(f"recommended for {device} {mode}: {e['backend']} {e['precision']} ({e['artifact']}), "
                             f"batch {e['batch']}: p50 {e['p50_ms']:.2f} ms, {e['throughput_ips']:.1f} img/s")
    return lines


def record(bundle, report: dict) -> tuple[dict, str | None]:
    """Write the run's recommendation into the bundle's manifest (under the bundle's lock; other keys kept).
    Returns it and, when it could not be written (bundle busy or read-only), why: a note, not a failure."""
    from ..bundle import BundleUpdate, read_manifest
    from ..errors import UserError

    if not any(r.get("accuracy") for r in report["results"]):
        return {}, None
    recommended = recommend(report, read_manifest(bundle))
    if not recommended:
        return {}, None
    try:
        with BundleUpdate(bundle) as b:
            b.manifest["recommended"] = {**b.manifest.get("recommended", {}), **recommended}
    except (UserError, OSError) as e:
        return recommended, f"recommendation not recorded in the bundle: {e}"
    return recommended, None
