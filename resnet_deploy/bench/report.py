"""The benchmark report: machine/model info, schema check, markdown table and PNG plot."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from ..errors import MissingDependency, UserError
from .stats import LATENCY_KEYS

SCHEMA_VERSION = 2  # 2: rows carry "mode" (latency | throughput); schema-1 reports are read as latency rows
READABLE_VERSIONS = (1, 2)
ACCURACY_KEYS = ("top1", "top5", "top1_agreement", "max_abs_diff", "cosine")  # required; optional: spread_error,
# nonfinite (reports written before the spread bar lack spread_error and stay valid baselines)
MODES = ("latency", "throughput")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Instruction-set features that decide which CPU kernels a runtime picks (int8 dot products, bf16, AMX tiles).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def cpu_isa_flags() -> dict[str, bool]:
    """Which of ``ISA_FLAGS`` the CPU reports (Linux ``/proc/cpuinfo``; all False where it cannot be read)."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {f: f in flags for f in ISA_FLAGS}


def gpu_info() -> list[dict]:
    """GPUs torch can see (name, memory); empty without CUDA."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
        return [{"name": torch.cuda.get_device_name(i),
                 "memory_gb": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
                 "cuda": torch.version.cuda} for i in range(torch.cuda.device_count())]
    except ImportError:
        return []


def machine_info() -> dict:
    """CPU model, cores, memory, GPUs and library versions: a report is only comparable on the same machine."""
    import psutil

    from ..bundle import toolchain_versions

    return {"hostname": platform.node(), "os": platform.platform(), "cpu": cpu_model(),
            "cores_logical": os.cpu_count(), "cores_physical": psutil.cpu_count(logical=False),
            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "gpus": gpu_info(),
            "isa": [f for f, present in cpu_isa_flags().items() if present],
            "libraries": toolchain_versions()}


def model_info(bundle: Path, manifest: dict) -> dict:
    w = manifest.get("weights", {})
    return {"bundle": str(bundle), "arch": manifest.get("arch"), "num_classes": manifest.get("num_classes"),
            "input_shape": manifest.get("input", {}).get("shape"), "weights": w.get("source"),
            "weights_sha256": w.get("sha256"),
            "artifacts": {n: {k: e.get(k) for k in ("kind", "precision", "target", "sha256")}
                          for n, e in manifest.get("files", {}).items()}}


def _num_or_none(v) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def schema_problems(report) -> list[str]:
    """What makes ``report`` not a readable benchmark report, schema 1 or 2 (empty when valid)."""
    if not isinstance(report, dict):
        return ["not a JSON object"]
    p = []
    version = report.get("schema_version")
    if version not in READABLE_VERSIONS:
        p.append(f"schema_version is {version!r}, expected one of {', '.join(map(str, READABLE_VERSIONS))}")
    for key in ("machine", "model"):
        if not isinstance(report.get(key), dict):
            p.append(f"'{key}' missing or not an object")
    rows = report.get("results")
    if not isinstance(rows, list):
        return p + ["'results' missing or not a list"]
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            p.append(f"results[{i}] is not an object")
            continue
        if not isinstance(r.get("backend"), str) or not isinstance(r.get("precision"), str):
            p.append(f"results[{i}]: backend/precision must be strings")
        if not isinstance(r.get("batch"), int) or r.get("batch") < 1:
            p.append(f"results[{i}]: batch must be an integer >= 1")
        if version != 1 and r.get("mode") not in MODES:
            p.append(f"results[{i}]: mode must be one of {', '.join(MODES)}")
        lat = r.get("latency_ms")
        if not isinstance(lat, dict) or any(not isinstance(lat.get(k), (int, float)) for k in LATENCY_KEYS):
            p.append(f"results[{i}]: latency_ms needs numbers {', '.join(LATENCY_KEYS)}")
        if not isinstance(r.get("throughput_ips"), (int, float)):
            p.append(f"results[{i}]: throughput_ips must be a number")
        acc = r.get("accuracy")
        if acc is not None and (not isinstance(acc, dict) or set(ACCURACY_KEYS) - set(acc)
                                or not all(_num_or_none(acc[k]) for k in ACCURACY_KEYS)):
            p.append(f"results[{i}]: accuracy needs {', '.join(ACCURACY_KEYS)} (numbers or null)")
    return p


def load_report(path: "str | Path", what: str = "--baseline") -> dict:
    """Read a report file; a missing, unreadable or malformed one is a one-line ``UserError``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {str(path)!r} does not exist (create it with --update-baseline)")
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise UserError(f"{what} {str(path)!r} is not valid JSON: {str(e).splitlines()[0]}") from None
    problems = schema_problems(report)
    if problems:
        raise UserError(f"{what} {str(path)!r} is not a benchmark report: {problems[0]}"
                        + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    for r in report["results"]:  # schema 1 measured latency only
        r.setdefault("mode", "latency")
    return report


def _fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _mode(row: dict) -> str:
    """``latency``, or ``throughput (N in flight)``; the latency of a throughput row is per request at full load."""
    mode = row.get("mode", "latency")
    return mode if mode == "latency" else f"{mode} ({row.get('in_flight', '?')} in flight)"


def to_markdown(report: dict) -> str:
    """One table row per (backend, precision, batch), with the machine in a header line."""
    m = report["machine"]
    gpus = ", ".join(g["name"] for g in m.get("gpus", [])) or "no GPU"
    cfg = report.get("config", {})
    lines = [f"Model: {report['model'].get('arch')} input {report['model'].get('input_shape')}; machine: "
             f"{m.get('cpu')} ({m.get('cores_logical')} cores), {gpus}; threads {cfg.get('threads') or 'default'}; "
             f"accuracy inputs: {cfg.get('accuracy_inputs')}", "",
             "| backend | precision | artifact | batch | mode | p50 ms | p90 ms | p99 ms | mean ms | std ms | img/s "
             "| peak MiB | top-1 | top-5 | top-1 agr. | cosine | max abs diff |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["results"]:
        lat, acc = r["latency_ms"], r.get("accuracy") or {}
        lines.append(
            f"| {r['backend']} | {r['precision']} | {r.get('artifact', 'n/a')} | {r['batch']} | {_mode(r)} | "
            f"{lat['p50']:.2f} | {lat['p90']:.2f} | "
            f"{lat['p99']:.2f} | {lat['mean']:.2f} | {lat['std']:.2f} | {r['throughput_ips']:.1f} | "
            f"{_fmt(r.get('peak_host_memory_mb'), '.0f')} | {_fmt(acc.get('top1'), '.1%')} | "
            f"{_fmt(acc.get('top5'), '.1%')} | {_fmt(acc.get('top1_agreement'), '.1%')} | "
            f"{_fmt(acc.get('cosine'), '.6f')} | {_fmt(acc.get('max_abs_diff'), '.3g')} |")
    skipped = report.get("skipped", [])
    if skipped:
        lines += ["", "Artifacts of the bundle not measured here:", ""]
        lines += [f"- {s['artifact']} ({', '.join(str(s[k]) for k in ('kind', 'precision', 'target') if s.get(k))}): "
                  f"skipped: {s['reason']}" for s in skipped]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: "str | Path") -> Path:
    """Latency p50 against batch size per backend/precision (log-log), and throughput bars per batch."""
    fig = figure(report)  # MissingDependency without matplotlib
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def figure(report: dict):
    """The plot's matplotlib figure (``plot`` saves it)."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependency("matplotlib", extra="plot", what="the benchmark plot (or pass --no-plot)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    series: dict[str, list[tuple[int, float, float]]] = {}
    for r in report["results"]:
        mode = "" if r.get("mode", "latency") == "latency" else f" ({r['mode']})"
        series.setdefault(f"{r['backend']} {r['precision']}{mode}", []).append(
            (r["batch"], r["latency_ms"]["p50"], r["throughput_ips"]))
    batches = sorted({r["batch"] for r in report["results"]})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for label, pts in series.items():
        pts.sort()
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax1.set(xscale="log", yscale="log", xlabel="batch size", ylabel="latency p50 (ms)", title="Latency")
    ax1.set_xticks(batches, [str(b) for b in batches])
    ax1.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    # labels at 1, 2 and 5 of each decade only: a label on every minor tick (2..9) overlaps near each decade's top
    ax1.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax1.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax1.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=8)
    width = 0.8 / max(len(series), 1)
    for i, (label, pts) in enumerate(series.items()):
        by_batch = {p[0]: p[2] for p in pts}
        xs = [j + i * width for j, b in enumerate(batches) if b in by_batch]
        ax2.bar(xs, [by_batch[b] for b in batches if b in by_batch], width, label=label)
    ax2.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(batches))], [str(b) for b in batches])
    ax2.set(xlabel="batch size", ylabel="images / s", title="Throughput")
    ax2.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"{report['model'].get('arch')} on {report['machine'].get('cpu')}", fontsize=10)
    fig.tight_layout()
    return fig


def write_json(report: dict, path: "str | Path") -> Path:
    from ..bundle import write_json_atomic

    path = Path(path)
    write_json_atomic(path, report)
    return path
