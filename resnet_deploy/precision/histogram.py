"""A histogram of |x| built in one pass over a stream of batches, and the threshold searches that run on it.

Range: ``BINS`` equal bins over ``[0, R)``, ``R`` the smallest power of two strictly above every |x| seen so far.
When a batch holds a larger |x|, ``R`` grows by a power of two ``f`` and each run of ``f`` old bins adds up into one
new bin: every new edge is an old edge, so the merge is exact and the counts equal
``np.histogram(all values, BINS, (0, R))`` whatever the order and size of the batches. A bin index is
``|x| * (BINS / R)`` truncated: a multiplication by a power of two, exact in floating point, so no value ever
lands in a neighbouring bin by rounding. As ``R < 2 max|x|``, more than ``BINS / 2`` bins lie below ``max|x|``:
4096 bins give at least the 2048 of the former two-pass histogram over ``[0, max|x|]``.

The searches (mse, entropy) try every candidate threshold at once, vectorised: about ``CANDIDATES`` thresholds
from ``max|x| / 16`` to ``max|x|``, the same grid as the former loop (every 4 of 2048 bins).
"""

from __future__ import annotations

import math

import numpy as np

BINS = 4096
QUANT_LEVELS = 128  # int8 magnitudes 0..127
CANDIDATES = 512  # candidate thresholds every max|x| / 512
MIN_CANDIDATE = 16  # the smallest candidate is max|x| / 16
_CHUNK = 32  # candidate rows per block in the mse search (a block of errors stays in cache)


def range_for(amax: float) -> float:
    """The smallest power of two strictly above ``amax`` (0.0 for 0)."""
    if amax <= 0.0:
        return 0.0
    return math.ldexp(1.0, math.frexp(amax)[1])  # amax = m * 2**e with 0.5 <= m < 1, so 2**e > amax


class MagnitudeHistogram:
    """Counts of |x| in ``BINS`` bins over ``[0, range)``; ``range`` grows by powers of two as values arrive."""

    def __init__(self) -> None:
        self.counts = np.zeros(BINS, dtype=np.int64)
        self.range = 0.0

    @property
    def width(self) -> float:
        return self.range / BINS

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, self.range, BINS + 1)

    def grow(self, amax: float) -> None:
        """Make room for values up to ``amax``, merging the old bins exactly."""
        if not math.isfinite(amax):
            raise ValueError(f"non-finite value ({amax}) in the histogram's input")
        new = range_for(amax)
        if new <= self.range:
            return
        if self.range > 0.0:
            f = int(new / self.range)  # a power of two
            merged = np.zeros(BINS, dtype=np.int64)
            if f < BINS:
                merged[:BINS // f] = self.counts.reshape(-1, f).sum(axis=1)
            else:  # every old value is below the first new edge
                merged[0] = self.counts.sum()
            self.counts = merged
        self.range = new

    def add(self, values: np.ndarray, overwrite: bool = False) -> None:
        """Count ``values`` (any shape). With ``overwrite`` the caller's array is used as scratch space."""
        a = np.abs(values.reshape(-1), out=values.reshape(-1) if overwrite and values.flags.writeable else None)
        if a.size == 0:
            return
        self.grow(float(a.max()))
        if self.range == 0.0:  # all zeros
            self.counts[0] += a.size
            return
        scale = BINS / self.range
        dtype = np.float32 if a.dtype == np.float32 and 2.0 ** -100 < scale < 2.0 ** 100 else np.float64
        idx = np.multiply(a, scale, dtype=dtype, out=a if dtype == a.dtype and overwrite else None)
        self.counts += np.bincount(idx.astype(np.intp), minlength=BINS)

    def used_bins(self, amax: float) -> int:
        """How many bins lie at or below ``amax`` (``amax < range``)."""
        return min(int(amax / self.width) + 1, BINS)


def _candidates(n: int) -> np.ndarray:
    """Candidate thresholds as numbers of bins: every ~n/CANDIDATES bins from n/16 on, and all n bins."""
    stride = max(1, round(n / CANDIDATES))
    start = max(QUANT_LEVELS, n // MIN_CANDIDATE)
    return np.unique(np.append(np.arange(start, n, stride), n)) if start < n else np.array([n])


def threshold_percentile(hist: MagnitudeHistogram, amax: float, percentile: float) -> float:
    """The upper edge of the bin holding the ``percentile``-th percentile of |x| (at most ``amax``)."""
    total = hist.counts.sum()
    if percentile >= 100.0 or total == 0:
        return amax
    cdf = np.cumsum(hist.counts) / total
    k = int(np.searchsorted(cdf, percentile / 100.0))
    return float(min((k + 1) * hist.width, amax))


def threshold_mse(hist: MagnitudeHistogram, amax: float) -> float:
    """The candidate ``t`` minimising the histogram-weighted squared error of symmetric 127-level quantization
    (rounding inside ``t``, clipping outside), with each bin's values at its centre."""
    n = hist.used_bins(amax)
    h = hist.counts[:n].astype(np.float64)
    if h.sum() == 0:
        return amax
    keep = h > 0  # empty bins add nothing to any candidate's error
    centers, h = ((np.arange(n) + 0.5) * hist.width)[keep], h[keep]
    t = np.minimum(_candidates(n) * hist.width, amax)
    step = t / (QUANT_LEVELS - 1)
    err = np.empty(len(t))
    for i in range(0, len(t), _CHUNK):
        s = step[i:i + _CHUNK, None]
        deq = np.minimum(np.rint(centers / s), QUANT_LEVELS - 1) * s
        err[i:i + _CHUNK] = np.square(centers - deq) @ h
    return float(t[int(np.argmin(err))])


def _xlogx(v: np.ndarray) -> np.ndarray:
    return np.where(v > 0, v * np.log(np.where(v > 0, v, 1.0)), 0.0)


def threshold_entropy(hist: MagnitudeHistogram, amax: float) -> float:
    """TensorRT's KL-divergence method: the candidate whose 128-level quantized histogram loses the least
    information (KL(P || Q)) against the clipped reference histogram.

    For candidate ``i`` (its first ``i`` bins): P is the histogram with every clipped value added to bin ``i-1``;
    Q gives each nonzero bin of a level (bins ``j`` with ``j * 128 // i`` equal) the level's mean over its nonzero
    bins, and a bin only outliers reach (bin ``i-1`` when it is empty but values are clipped) ``1e-12`` of the
    total. Then ``KL = sum(P log P)/T - log T - sum(P log Q)/T + log sum(Q)``, and every term is a sum over whole
    levels: with prefix sums each candidate costs 128 steps instead of ``i``, all candidates at once."""
    cand, kl = entropy_divergences(hist, amax)
    if kl is None:
        return amax
    return float(min(cand[int(np.argmin(kl))] * hist.width, amax))


def entropy_divergences(hist: MagnitudeHistogram, amax: float) -> tuple[np.ndarray, np.ndarray | None]:
    """The candidates (numbers of bins) and KL(P || Q) of each (None for an empty histogram)."""
    n = hist.used_bins(amax)
    h = hist.counts[:n].astype(np.float64)
    if n > 1:
        # As TensorRT / pytorch-quantization do: flatten the spike of exact zeros (ReLU outputs) in bin 0, which
        # would otherwise dominate the divergence and push the threshold far too low.
        h[0] = h[1]
    total = h.sum()
    cand = _candidates(n)
    if total == 0:
        return cand, None
    mass = np.concatenate([[0.0], np.cumsum(h)])  # prefix sums: values, nonzero bins, h log h
    nonzero = np.concatenate([[0], np.cumsum(h > 0)])
    plogp = np.concatenate([[0.0], np.cumsum(_xlogx(h))])
    g = np.arange(QUANT_LEVELS + 1)
    bounds = (g[None, :] * cand[:, None] + QUANT_LEVELS - 1) // QUANT_LEVELS  # level g: bins bounds[g]..bounds[g+1]-1
    level_mass = np.diff(mass[bounds], axis=1)
    level_nonzero = np.diff(nonzero[bounds], axis=1)
    used = level_nonzero > 0
    level_q = np.where(used, level_mass / np.where(used, level_nonzero, 1), 1.0)
    plogq = np.sum(np.where(used, level_mass * np.log(level_q), 0.0), axis=1)
    tail = total - mass[cand]  # clipped values, all in bin i-1 of P
    last = h[cand - 1]
    penalty = 1e-12 * total
    clipped_into_empty = (last == 0) & (tail > 0)
    plogq += np.where(clipped_into_empty, tail * np.log(penalty), tail * np.log(level_q[:, -1]))
    q_sum = mass[cand] + np.where(clipped_into_empty, penalty, 0.0)
    p_logp = plogp[cand - 1] + _xlogx(last + tail)
    return cand, p_logp / total - np.log(total) - plogq / total + np.log(q_sum)
