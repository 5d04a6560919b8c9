"""Latency statistics and the timing loop. The clock is injected, so both are testable with known durations.

Percentiles use linear interpolation between order statistics (NumPy's default, the same as
``statistics.quantiles(method="inclusive")``): for sorted samples ``x[0..n-1]``, percentile ``q`` is
``x[k] + (x[k+1] - x[k]) * f`` with ``k + f = q / 100 * (n - 1)``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

PERCENTILES = (10, 50, 90, 95, 99)
LATENCY_KEYS = ("p50", "p90", "p95", "p99", "mean", "std")  # required in a report; p10 and min came later


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted samples, by linear interpolation."""
    if not sorted_samples:
        raise ValueError("no samples")
    pos = q / 100.0 * (len(sorted_samples) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_samples) - 1)
    frac = pos - lo
    return sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * frac


def latency_stats(samples_s: Sequence[float]) -> dict:
    """p10/p50/p90/p95/p99/min/mean/std in milliseconds of per-batch latencies given in seconds.

    ``std`` is the population standard deviation (ddof=0): it describes these samples, not an estimate.
    """
    ms = sorted(float(s) * 1000.0 for s in samples_s)
    n = len(ms)
    if n == 0:
        raise ValueError("no samples")
    mean = sum(ms) / n
    out = {f"p{q}": percentile(ms, q) for q in PERCENTILES}
    out["min"] = ms[0]
    out["mean"] = mean
    out["std"] = math.sqrt(sum((x - mean) ** 2 for x in ms) / n)
    return out


def spread(samples_ms: Sequence[float]) -> dict:
    """How much the samples scatter, in milliseconds: ``iqr`` (p75 - p25) and ``p50_ci95``, a distribution-free 95%
    confidence interval of the median from order statistics (the sorted samples ``n/2 -+ 0.98 sqrt(n)`` places
    around the middle; min and max for fewer than 6 samples). The recommendation compares picks against the IQR:
    the CI of one run's median is narrower than the run-to-run swing of a shared machine."""
    ms = sorted(float(s) for s in samples_ms)
    n = len(ms)
    if n == 0:
        raise ValueError("no samples")
    half = 0.98 * math.sqrt(n)
    lo, hi = max(0, math.floor(n / 2 - half) - 1), min(n - 1, math.ceil(n / 2 + 1 + half) - 1)
    if n < 6:
        lo, hi = 0, n - 1
    return {"iqr": percentile(ms, 75) - percentile(ms, 25), "p50_ci95": [ms[lo], ms[hi]]}


def throughput_ips(samples_s: Sequence[float], batch: int) -> float:
    """Images per second over the whole timed run: images processed / total time spent in the timed calls."""
    total = float(sum(samples_s))
    return batch * len(samples_s) / total if total > 0 else float("inf")


class WallTimer:
    """Times one call with a host clock, synchronising the device before each clock read.

    ``clock`` returns seconds (default ``time.perf_counter``); ``sync`` waits for queued device work.
    """

    kind = "host clock (time.perf_counter) with device synchronisation"

    def __init__(self, clock: Callable[[], float] = time.perf_counter, sync: Callable[[], None] | None = None):
        self.clock, self.sync = clock, sync or (lambda: None)

    def __call__(self, fn: Callable[[], object]) -> float:
        self.sync()
        start = self.clock()
        fn()
        self.sync()
        return self.clock() - start


class CudaEventTimer:
    """Times one call with CUDA events recorded on the current stream (torch), after synchronising.

    ``fn`` must leave its work on the current stream or synchronise itself (runners return host arrays, so
    the copy back is included, as a user of ``infer`` would see it).
    """

    kind = "CUDA events (torch.cuda.Event) with device synchronisation"

    def __init__(self, sync: Callable[[], None] | None = None):
        import torch

        self.torch = torch
        self.sync = sync or (lambda: None)

    def __call__(self, fn: Callable[[], object]) -> float:
        torch = self.torch
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        self.sync()
        torch.cuda.synchronize()
        start.record()
        fn()
        self.sync()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0


@dataclass
class Measurement:
    """Per-call latencies (seconds) of the timed iterations, after ``warmup`` untimed ones."""

    samples_s: list[float]
    warmup: int

    def summary(self, batch: int) -> dict:
        return {"latency_ms": latency_stats(self.samples_s), "throughput_ips": throughput_ips(self.samples_s, batch),
                "iterations": len(self.samples_s), "warmup": self.warmup}


def measure(fn: Callable[[], object], timer: Callable[[Callable[[], object]], float], warmup: int = 10,
            iters: int | None = 100, duration_s: float | None = None,
            on_iter: Callable[[int], None] | None = None, max_iters: int = 1_000_000) -> Measurement:
    """Call ``fn`` ``warmup`` times untimed, then time it ``iters`` times, or until ``duration_s`` of timed
    calls has accumulated (at least one call). ``on_iter(i)`` reports progress."""
    if iters is None and duration_s is None:
        raise ValueError("give iters or duration_s")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    total = 0.0
    while len(samples) < max_iters:
        if iters is not None and duration_s is None and len(samples) >= iters:
            break
        if duration_s is not None and samples and total >= duration_s:
            break
        dt = timer(fn)
        samples.append(dt)
        total += dt
        if on_iter:
            on_iter(len(samples))
    return Measurement(samples, warmup)
