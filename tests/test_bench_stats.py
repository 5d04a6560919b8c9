"""Statistics and the timing loop on a backend with known timing: a test Runner advancing an injected clock."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_deploy.backends.base import Runner
from resnet_deploy.bench.stats import WallTimer, latency_stats, measure, percentile, throughput_ips
from resnet_deploy.bench.worker import run_case


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ScriptedRunner(Runner):
    """A real Runner whose every ``infer`` takes a scripted time on the injected clock (no sleeping)."""

    name = "scripted"

    def __init__(self, clock: FakeClock, durations_s, num_classes: int = 10):
        super().__init__()
        self.clock, self.durations, self.num_classes = clock, list(durations_s), num_classes
        self.calls = 0
        self.syncs = 0

    def _activate(self) -> None:
        pass

    def _infer(self, batch):
        self.clock.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1
        return np.zeros((len(batch), self.num_classes), np.float32)

    def synchronize(self) -> None:
        self.syncs += 1


def test_percentiles_exact_on_known_samples():
    ms = [float(v) for v in range(1, 101)]  # 1..100 ms
    s = latency_stats([v / 1000 for v in ms])
    # linear interpolation: position q/100 * (n-1) in the sorted samples
    assert s["p50"] == pytest.approx(50.5)
    assert s["p90"] == pytest.approx(90.1)
    assert s["p95"] == pytest.approx(95.05)
    assert s["p99"] == pytest.approx(99.01)
    assert s["mean"] == pytest.approx(50.5)
    assert s["std"] == pytest.approx(np.std(ms))
    for q in (50, 90, 95, 99):
        assert s[f"p{q}"] == pytest.approx(np.percentile(ms, q))


def test_percentile_single_sample_and_order_independence():
    assert percentile([7.0], 99) == 7.0
    shuffled = [0.004, 0.001, 0.003, 0.002]
    assert latency_stats(shuffled)["p50"] == pytest.approx(2.5)
    with pytest.raises(ValueError):
        latency_stats([])


def test_throughput_is_images_over_timed_time():
    assert throughput_ips([0.1, 0.1, 0.2], batch=8) == pytest.approx(8 * 3 / 0.4)


def test_harness_loop_times_exactly_the_scripted_durations():
    clock = FakeClock()
    # 3 warm-up calls of 1 s that must not count, then 10..19 ms, repeating
    warm = [1.0, 1.0, 1.0]
    timed = [(10 + i) / 1000 for i in range(10)]
    runner = ScriptedRunner(clock, warm + timed)
    with runner:
        rows, logits = run_case(runner, [4], [3, 8, 8], warmup=3, iters=10, duration_s=None,
                                timer=WallTimer(clock=clock, sync=runner.synchronize),
                                accuracy_inputs=np.zeros((8, 3, 8, 8), np.float32))
    (row,) = rows
    assert row["iterations"] == 10 and row["warmup"] == 3
    assert row["samples_s"] == pytest.approx(timed)
    assert row["latency_ms"]["p50"] == pytest.approx(14.5)
    assert row["latency_ms"]["p90"] == pytest.approx(18.1)
    assert row["latency_ms"]["p99"] == pytest.approx(18.91)
    assert row["latency_ms"]["mean"] == pytest.approx(14.5)
    assert row["throughput_ips"] == pytest.approx(4 * 10 / sum(timed))
    assert runner.syncs == 20  # synchronised before and after each timed call
    assert logits[4].shape == (8, 10)  # accuracy inputs ran in chunks of the batch size


def test_duration_mode_stops_once_enough_time_is_timed():
    clock = FakeClock()
    runner = ScriptedRunner(clock, [0.25])
    with runner:
        m = measure(lambda: runner.infer(np.zeros((1, 3, 4, 4), np.float32)), WallTimer(clock=clock),
                    warmup=2, iters=None, duration_s=1.0)
    assert len(m.samples_s) == 4 and runner.calls == 6


def test_measure_needs_a_stop_rule():
    with pytest.raises(ValueError):
        measure(lambda: None, WallTimer(), iters=None, duration_s=None)


def test_peak_memory_of_a_worker_is_its_own_not_its_parents():
    import subprocess
    import sys

    from resnet_deploy.bench.worker import peak_rss_mb

    ballast = np.ones(40_000_000)  # ~300 MiB in this process
    assert peak_rss_mb() > 300
    res = subprocess.run([sys.executable, "-c", "from resnet_deploy.bench.worker import peak_rss_mb; "
                          "print(peak_rss_mb())"], capture_output=True, text=True, timeout=60)
    assert float(res.stdout) < 200, res.stdout + res.stderr
    del ballast


def test_fastest_calls_and_spread_are_recorded():
    from resnet_deploy.bench.stats import spread

    s = latency_stats([v / 1000 for v in range(1, 101)])
    assert s["min"] == pytest.approx(1.0) and s["p10"] == pytest.approx(np.percentile(range(1, 101), 10))
    sp = spread([float(v) for v in range(1, 101)])
    assert sp["iqr"] == pytest.approx(np.percentile(range(1, 101), 75) - np.percentile(range(1, 101), 25))
    lo, hi = sp["p50_ci95"]  # the 40th and 61st of 100 sorted samples: the usual 95% interval of the median
    assert (lo, hi) == (40.0, 61.0)
    assert spread([3.0, 1.0, 2.0])["p50_ci95"] == [1.0, 3.0]  # too few for an interval: their range
