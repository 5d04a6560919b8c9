"""The one-pass histogram of |x| (exact merges as its range grows) and the vectorised threshold searches, checked
against np.histogram and against the former two-pass implementation, kept here as the reference."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_deploy.precision import histogram as hg

# --- the former implementation (2048 bins over [0, max|x|], a Python loop over candidates), as the reference ----

OLD_BINS, OLD_STRIDE, LEVELS = 2048, 4, 128


def old_hist(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    amax = float(np.abs(x).max())
    return np.histogram(np.abs(x), bins=OLD_BINS, range=(0.0, amax))[0], np.linspace(0.0, amax, OLD_BINS + 1), amax


def old_percentile(x: np.ndarray, p: float) -> float:
    hist, edges, _ = old_hist(x)
    cdf = np.cumsum(hist) / hist.sum()
    return float(edges[min(int(np.searchsorted(cdf, p / 100.0)) + 1, OLD_BINS)])


def old_entropy(x: np.ndarray) -> float:
    hist, edges, _ = old_hist(x)
    hist = hist.astype(np.float64)
    hist[0] = hist[1]
    best_kl, best_i = np.inf, OLD_BINS
    for i in range(LEVELS, OLD_BINS + 1, OLD_STRIDE):
        ref = hist[:i].copy()
        ref[-1] += hist[i:].sum()
        nonzero = hist[:i] > 0
        group = (np.arange(i) * LEVELS) // i
        sums = np.bincount(group, weights=hist[:i], minlength=LEVELS)
        counts = np.bincount(group, weights=nonzero, minlength=LEVELS)
        q = np.where(nonzero, sums[group] / np.maximum(counts[group], 1), 0.0)
        q[(ref > 0) & (q == 0)] = 1e-12 * ref.sum()
        p, q = ref / ref.sum(), q / q.sum()
        m = p > 0
        kl = float(np.sum(p[m] * np.log(p[m] / q[m])))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(edges[best_i])


def old_mse(x: np.ndarray) -> float:
    hist, edges, amax = old_hist(x)
    centers = (edges[:-1] + edges[1:]) / 2
    best_err, best_t = np.inf, amax
    for i in range(LEVELS, OLD_BINS + 1, OLD_STRIDE):
        s = edges[i] / (LEVELS - 1)
        err = float(np.sum(hist * (centers - np.minimum(np.round(centers / s), LEVELS - 1) * s) ** 2))
        if err < best_err:
            best_err, best_t = err, edges[i]
    return float(best_t)


def one_pass(x: np.ndarray, batches: int = 7) -> hg.MagnitudeHistogram:
    h = hg.MagnitudeHistogram()
    for part in np.array_split(x.reshape(-1), batches):
        h.add(part.copy())
    return h


# --- the histogram ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("amax,want", [(1.0, 2.0), (0.75, 1.0), (0.5, 1.0), (3.0, 4.0), (2.0 ** -20, 2.0 ** -19),
                                       (1000.0, 1024.0), (0.0, 0.0)])
def test_range_is_the_next_power_of_two_strictly_above(amax, want):
    assert hg.range_for(amax) == want


def test_growing_range_merges_exactly():
    """Batches of growing magnitude (by 2x, by more than BINS x, onto exact bin edges): the counts equal
    np.histogram of all values over the final range, and do not depend on the order of the batches."""
    rng = np.random.default_rng(3)
    batches = [np.zeros(50, np.float32),
               rng.uniform(-1e-4, 1e-4, 1000).astype(np.float32),
               rng.standard_normal(5000).astype(np.float32),
               np.array([0.5, 1.0, 2.0, -4.0, 3.999], np.float32),  # powers of two: exactly on edges
               (rng.lognormal(0, 2, 5000) * rng.choice([-1, 1], 5000)).astype(np.float32),
               rng.uniform(0, 37.0, 3000).astype(np.float32)]
    everything = np.abs(np.concatenate(batches))
    h = hg.MagnitudeHistogram()
    ranges = []
    for b in batches:
        h.add(b.copy(), overwrite=True)
        ranges.append(h.range)
    assert ranges[0] == 0.0 and ranges[1] < ranges[2] < ranges[-1]  # it grew, several times
    assert h.range == hg.range_for(float(everything.max()))
    want = np.histogram(everything, bins=hg.BINS, range=(0.0, h.range))[0]
    np.testing.assert_array_equal(h.counts, want)
    assert h.counts.sum() == everything.size
    backwards = hg.MagnitudeHistogram()
    for b in reversed(batches):
        backwards.add(b)
    np.testing.assert_array_equal(backwards.counts, want)


def test_growing_range_merges_exactly_in_float64_and_in_place():
    x = np.random.default_rng(4).standard_normal(20_000) * np.geomspace(1e-3, 1e3, 20_000)
    h = one_pass(x, batches=13)
    np.testing.assert_array_equal(h.counts, np.histogram(np.abs(x), hg.BINS, (0.0, h.range))[0])
    y = np.array([-3.0, 1.0], np.float32)
    hg.MagnitudeHistogram().add(y)
    assert y.tolist() == [-3.0, 1.0]  # not overwritten unless asked


def test_grow_to_an_exact_extreme_only_merges():
    h = one_pass(np.linspace(0, 1.5, 1001))
    before = h.counts.copy()
    h.grow(100.0)  # a sampled histogram meets the exact max: bins merge, nothing is counted
    assert h.range == 128.0 and h.counts.sum() == before.sum()
    np.testing.assert_array_equal(h.counts[:64], before.reshape(64, 64).sum(axis=1))


def test_non_finite_values_are_refused():
    with pytest.raises(ValueError, match="non-finite"):
        hg.MagnitudeHistogram().add(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="non-finite"):
        hg.MagnitudeHistogram().add(np.array([1.0, np.inf], np.float32))


# --- the searches ----------------------------------------------------------------------------------------------

def _arrays():
    rng = np.random.default_rng(0)
    tailed = (rng.lognormal(0.0, 1.0, 200_000) * rng.choice([-1.0, 1.0], 200_000)).astype(np.float32)
    relu = np.maximum(rng.standard_normal(200_000) * 2.0 + rng.standard_t(3, 200_000), 0).astype(np.float32)
    return {"lognormal": tailed, "relu-t3": relu, "uniform": rng.uniform(-1, 1, 100_000).astype(np.float32),
            "gauss": rng.standard_normal(100_000).astype(np.float32)}


@pytest.mark.parametrize("name", ["lognormal", "relu-t3", "uniform", "gauss"])
def test_thresholds_match_the_former_implementation(name):
    """Same method, new histogram (4096 bins over [0, 2**k)) and new candidate grid: thresholds within 1.5% of
    max|x| of the former search (its own resolution is max|x| / 512)."""
    x = _arrays()[name]
    amax = float(np.abs(x).max())
    h = one_pass(x)
    got = {"percentile 99.9": hg.threshold_percentile(h, amax, 99.9),
           "percentile 99.99": hg.threshold_percentile(h, amax, 99.99),
           "entropy": hg.threshold_entropy(h, amax), "mse": hg.threshold_mse(h, amax)}
    want = {"percentile 99.9": old_percentile(x, 99.9), "percentile 99.99": old_percentile(x, 99.99),
            "entropy": old_entropy(x), "mse": old_mse(x)}
    for m in got:
        assert got[m] <= amax
        tol = 1.5 / 2048 if m.startswith("percentile") else 0.015  # percentile: one old bin plus one new one
        assert abs(got[m] - want[m]) <= tol * amax, (name, m, got[m], want[m], amax)


def test_searches_differ_and_clip_a_long_tail():
    x = _arrays()["lognormal"]
    amax = float(np.abs(x).max())
    h = one_pass(x)
    t = {"p": hg.threshold_percentile(h, amax, 99.9), "e": hg.threshold_entropy(h, amax), "m": hg.threshold_mse(h, amax)}
    assert all(1.0 < v < 0.8 * amax for v in t.values()), t
    assert len({round(v, 3) for v in t.values()}) == 3, t
    frac = float((np.abs(x) <= t["p"]).mean())
    assert 0.999 <= frac <= 0.9992


def test_degenerate_histograms():
    h = hg.MagnitudeHistogram()
    h.add(np.zeros(10, np.float32))
    assert h.range == 0.0 and h.counts[0] == 10
    one = one_pass(np.array([0.0, 3.0]), batches=2)
    for t in (hg.threshold_percentile(one, 3.0, 99.0), hg.threshold_mse(one, 3.0), hg.threshold_entropy(one, 3.0)):
        assert 0.0 < t <= 3.0


def loop_entropy(h: hg.MagnitudeHistogram, amax: float) -> tuple[float, list[float]]:
    """The KL search written plainly, one candidate at a time, on the new histogram and candidate grid: the
    threshold and every candidate's divergence."""
    n = h.used_bins(amax)
    hist = h.counts[:n].astype(np.float64)
    hist[0] = hist[1]
    best_kl, best_i, kls = np.inf, n, []
    for i in hg.entropy_divergences(h, amax)[0]:  # the candidate thresholds, in bins
        ref = hist[:i].copy()
        ref[-1] += hist[i:].sum()
        nonzero = hist[:i] > 0
        group = (np.arange(i) * LEVELS) // i
        sums = np.bincount(group, weights=hist[:i], minlength=LEVELS)
        counts = np.bincount(group, weights=nonzero, minlength=LEVELS)
        q = np.where(nonzero, sums[group] / np.maximum(counts[group], 1), 0.0)
        q[(ref > 0) & (q == 0)] = 1e-12 * ref.sum()
        p, q = ref / ref.sum(), q / q.sum()
        m = p > 0
        kl = float(np.sum(p[m] * np.log(p[m] / q[m])))
        kls.append(kl)
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(min(best_i * h.width, amax)), kls


@pytest.mark.parametrize("seed", range(4))
def test_entropy_prefix_sums_equal_the_plain_loop(seed):
    """Sparse, gappy histograms (empty bins inside levels, empty last bins with clipped mass beyond them)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.lognormal(0, 1.5, 3000), rng.uniform(0, 0.01, 500), [0.0] * 200]).astype(np.float32)
    h = one_pass(x)
    amax = float(x.max())
    want, kls = loop_entropy(h, amax)
    assert hg.threshold_entropy(h, amax) == want
    np.testing.assert_allclose(hg.entropy_divergences(h, amax)[1], kls, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("p", [50.0, 99.0, 99.9, 99.99])
def test_percentile_is_the_upper_edge_of_the_crossing_bin(p):
    x = np.abs(_arrays()["relu-t3"])
    h = one_pass(x)
    t = hg.threshold_percentile(h, float(x.max()), p)
    assert float((x < t).mean()) >= p / 100 > float((x < t - h.width).mean())
