"""Helpers for latency and accuracy regression tests in a user's own CI (pytest or any test runner).

>>> from resnet_deploy import testing                                                  # doctest: +SKIP
>>> def test_no_regression():
...     report = testing.benchmark("models/r50-bundle", backends="onnxruntime", batches=[1, 8], iters=50,
...                                quiet_threads=True)  # a shared CI runner
...     testing.assert_no_regression(report, "tests/baselines/r50.json", max_regression="15%")
...     testing.assert_accuracy(report, "onnxruntime", "int8", min_top1_agreement=0.98)

A failing check raises ``AssertionError`` with the table of regressions, so pytest shows it as a test failure.
Set ``RESNET_DEPLOY_UPDATE_BASELINE=1`` to (re)write the baselines instead of comparing.
"""

from __future__ import annotations

import os
from pathlib import Path

UPDATE_ENV = "RESNET_DEPLOY_UPDATE_BASELINE"


def benchmark(bundle: "str | Path", backends=None, precisions=None, batches=(1,), warmup: int = 5,
              iters: int | None = 50, duration_s: float | None = None, threads: int | None = None,
              images: "str | Path | None" = None, samples: int | None = None, seed: int = 0,
              mode: str = "latency", quiet_threads: bool = False) -> dict:
    """Run the benchmark harness (each backend in its own process) and return the report dict (schema 2).

    ``backends`` / ``precisions``: lists or comma-separated strings (``"eager,onnxruntime"``); None: all.
    ``mode``: latency, throughput or both. ``quiet_threads=True`` turns thread spin-waiting off, for shared CI
    runners (by default each runtime runs as it ships).
    """
    from .bench.harness import parse_modes
    from .bench import BenchConfig, run_bench
    from .backends import table
    from .types import Precision

    def _parse(parse_list, v, what):
        if v is None:
            return None
        return parse_list(v if isinstance(v, str) else ",".join(map(str, v)), what)

    cfg = BenchConfig(backends=_parse(table.parse_list, backends, "backend"),
                      precisions=_parse(Precision.parse_list, precisions, "precision"), batches=[int(b) for b in batches],
                      warmup=warmup, iters=iters, duration_s=duration_s, threads=threads,
                      images=str(images) if images else None, samples=samples, seed=seed,
                      quiet_threads=quiet_threads, modes=parse_modes(mode))
    return run_bench(bundle, cfg)


def row(report: dict, backend: str, precision: str = "fp32", batch: int | None = None,
        mode: str = "latency") -> dict:
    """The result row for (backend, precision, batch, mode); the smallest batch when ``batch`` is None."""
    rows = [r for r in report["results"] if r["backend"] == str(backend) and r["precision"] == str(precision)
            and (batch is None or r["batch"] == int(batch)) and r.get("mode", "latency") == mode]
    if not rows:
        have = ", ".join(f"{r['backend']}/{r['precision']}/{r['batch']}" for r in report["results"])
        raise AssertionError(f"no result for {backend}/{precision}/{batch or 'any'} in the report (has {have})")
    return min(rows, key=lambda r: r["batch"])


def assert_latency(report: dict, backend: str, precision: str = "fp32", batch: int | None = None, *,
                   max_p50_ms: float | None = None, max_p99_ms: float | None = None,
                   min_throughput_ips: float | None = None) -> None:
    """Absolute latency / throughput budgets for one row (use generous budgets on shared CI machines)."""
    r = row(report, backend, precision, batch)
    lat, fails = r["latency_ms"], []
    if max_p50_ms is not None and lat["p50"] > max_p50_ms:
        fails.append(f"p50 {lat['p50']:.2f} ms > {max_p50_ms} ms")
    if max_p99_ms is not None and lat["p99"] > max_p99_ms:
        fails.append(f"p99 {lat['p99']:.2f} ms > {max_p99_ms} ms")
    if min_throughput_ips is not None and r["throughput_ips"] < min_throughput_ips:
        fails.append(f"throughput {r['throughput_ips']:.1f} img/s < {min_throughput_ips}")
    assert not fails, f"{backend}/{precision}/batch {r['batch']}: " + "; ".join(fails)


def assert_accuracy(report: dict, backend: str, precision: str = "fp32", batch: int | None = None, *,
                    min_top1: float | None = None, min_top5: float | None = None,
                    min_top1_agreement: float | None = None, min_cosine: float | None = None) -> None:
    """Accuracy floors for one row (vs labels with ``images``, vs eager fp32 always)."""
    r = row(report, backend, precision, batch)
    acc, fails = r.get("accuracy") or {}, []
    if acc.get("nonfinite"):
        fails.append(f"outputs are not finite: {acc['nonfinite']}")
    for name, floor in (("top1", min_top1), ("top5", min_top5), ("top1_agreement", min_top1_agreement),
                        ("cosine", min_cosine)):
        if floor is None:
            continue
        if acc.get(name) is None:
            fails.append(f"{name} was not measured (top1/top5 need images in an ImageFolder layout)")
        elif acc[name] < floor:
            fails.append(f"{name} {acc[name]:.6g} < {floor}")
    assert not fails, f"{backend}/{precision}/batch {r['batch']}: " + "; ".join(fails)


def assert_no_regression(report: dict, baseline: "str | Path", max_regression="20%", reference: str | None = "eager",
                         accuracy_tolerance="1%", remeasure: bool = True, retries: int = 2,
                         max_abs_regression="30%", statistic: str = "p50") -> dict:
    """Gate ``report`` against the baseline file as ``resnet-deploy bench --baseline`` does (ratios to the
    reference backend, re-measurement of suspects; ``statistic``: p50, p10 or min, as ``--statistic``). Writes the
    baseline when it does not exist yet or when ``RESNET_DEPLOY_UPDATE_BASELINE=1``. Returns the final report."""
    from .bench import parse_percent
    from .bench.harness import gate_against_baseline
    from .bench.report import load_report, write_json

    baseline = Path(baseline)
    if os.environ.get(UPDATE_ENV) == "1" or not baseline.exists():
        baseline.parent.mkdir(parents=True, exist_ok=True)
        write_json(report, baseline)
        return report
    base = load_report(baseline, what="baseline")
    result, final = gate_against_baseline(
        report, base, parse_percent(max_regression), reference, retries=retries, remeasure_suspects=remeasure,
        max_abs_regression=parse_percent(max_abs_regression, "max_abs_regression"),
        accuracy_tolerance=parse_percent(accuracy_tolerance, "accuracy_tolerance"), statistic=statistic)
    assert result.passed, (f"{len(result.failed)} regression(s) against {baseline} (threshold "
                           f"{parse_percent(max_regression):.0%}):\n" + result.table(only_failed=True))
    return final
