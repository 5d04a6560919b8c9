"""Activation-range calibration, implemented here (not ONNX Runtime's calibrators) and tested per method.

Statistics come from running the fp32 graph in ONNX Runtime with the wanted tensors exposed as outputs: a first
pass records min/max, a second a histogram of ``|x|`` over ``[0, max|x|]`` (``BINS`` bins). Each method picks
a clipping threshold ``t`` from that histogram; the range is ``[max(min, -t), min(max, t)]``:

- ``minmax``: ``t = max|x|`` (no clipping; outliers stretch the scale).
- ``percentile``: the ``p``-th percentile of ``|x|``.
- ``entropy``: TensorRT's KL-divergence method: the ``t`` whose 128-level quantized histogram loses the least
  information (KL(P || Q)) against the clipped reference histogram (bin 0, the ReLU zeros, flattened).
- ``mse``: the ``t`` minimising the expected squared error of symmetric int8 quantization (rounding inside,
  clipping outside), summed over the histogram.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import sha256_file
from ..types import CalibMethod

log = logging.getLogger(__name__)

BINS = 2048
QUANT_LEVELS = 128  # int8 magnitudes 0..127
SEARCH_STRIDE = 4  # candidate thresholds every few bins: ~480 candidates, indistinguishable from stride 1
CACHE_FORMAT = 1
CALIB_BATCH = 8


@dataclass
class TensorStats:
    """What calibration keeps per tensor: extremes and the histogram of magnitudes."""

    min: float = np.inf
    max: float = -np.inf
    hist: np.ndarray | None = None

    @property
    def amax(self) -> float:
        return float(max(abs(self.min), abs(self.max)))

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, self.amax, BINS + 1)


@dataclass
class Calibration:
    """Ranges per tensor, and how they were obtained."""

    ranges: dict[str, tuple[float, float]]
    method: CalibMethod
    percentile: float
    num_samples: int
    model_sha256: str
    data_sha256: str
    seconds: float = 0.0
    reused: bool = False
    stats: dict[str, TensorStats] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        return {"format": CACHE_FORMAT, "method": str(self.method), "percentile": self.percentile,
                "num_samples": self.num_samples, "model_sha256": self.model_sha256, "data_sha256": self.data_sha256,
                "tensors": {k: {"range": [float(lo), float(hi)]} for k, (lo, hi) in self.ranges.items()}}


def check_percentile(p: float) -> float:
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise UserError(f"--percentile {p!r} is not a number: it must be in (0, 100], e.g. 99.99") from None
    if not 0.0 < p <= 100.0:
        raise UserError(f"--percentile {p} is outside (0, 100]: use e.g. 99.99")
    return p


# --- methods ---------------------------------------------------------------------------------------------------

def threshold_percentile(stats: TensorStats, percentile: float) -> float:
    hist, edges = stats.hist.astype(np.float64), stats.edges
    if percentile >= 100.0 or hist.sum() == 0:
        return stats.amax
    cdf = np.cumsum(hist) / hist.sum()
    k = int(np.searchsorted(cdf, percentile / 100.0))
    return float(edges[min(k + 1, BINS)])


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    q = q / q.sum()
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / q[m])))


def threshold_entropy(stats: TensorStats) -> float:
    hist, edges = stats.hist.astype(np.float64), stats.edges
    # As TensorRT / pytorch-quantization do: flatten the spike of exact zeros (ReLU outputs) in bin 0, which
    # would otherwise dominate the divergence and push the threshold far too low.
    hist[0] = hist[1]
    if hist.sum() == 0:
        return stats.amax
    best_kl, best_i = np.inf, BINS
    for i in range(QUANT_LEVELS, BINS + 1, SEARCH_STRIDE):
        ref = hist[:i].copy()
        ref[-1] += hist[i:].sum()  # clipped values land in the last bin
        if ref.sum() == 0:
            continue
        nonzero = hist[:i] > 0
        group = (np.arange(i) * QUANT_LEVELS) // i  # which of the 128 levels each bin merges into
        sums = np.bincount(group, weights=hist[:i], minlength=QUANT_LEVELS)
        counts = np.bincount(group, weights=nonzero, minlength=QUANT_LEVELS)
        q = np.where(nonzero, sums[group] / np.maximum(counts[group], 1), 0.0)
        q[(ref > 0) & (q == 0)] = 1e-12 * ref.sum()  # a level that only outliers reach: heavily penalised
        kl = _kl(ref, q)
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(edges[best_i])


def threshold_mse(stats: TensorStats) -> float:
    hist, edges = stats.hist.astype(np.float64), stats.edges
    if hist.sum() == 0:
        return stats.amax
    centers = (edges[:-1] + edges[1:]) / 2
    best_err, best_t = np.inf, stats.amax
    for i in range(QUANT_LEVELS, BINS + 1, SEARCH_STRIDE):
        t = edges[i]
        s = t / (QUANT_LEVELS - 1)
        deq = np.minimum(np.round(centers / s), QUANT_LEVELS - 1) * s
        err = float(np.sum(hist * (centers - deq) ** 2))
        if err < best_err:
            best_err, best_t = err, t
    return float(best_t)


def threshold(stats: TensorStats, method: CalibMethod, percentile: float = 99.99) -> float:
    """The clipping magnitude ``t`` the method picks for one tensor."""
    if method == CalibMethod.MINMAX or stats.amax == 0:
        return stats.amax
    if method == CalibMethod.PERCENTILE:
        return threshold_percentile(stats, percentile)
    if method == CalibMethod.ENTROPY:
        return threshold_entropy(stats)
    return threshold_mse(stats)


def tensor_range(stats: TensorStats, method: CalibMethod, percentile: float = 99.99) -> tuple[float, float]:
    t = threshold(stats, method, percentile)
    return float(max(stats.min, -t)), float(min(stats.max, t))


# --- statistics ------------------------------------------------------------------------------------------------

def _session_with_outputs(model_path: Path, tensors: list[str]):
    import onnx

    from ..backends.onnxruntime import import_onnxruntime, session_options

    ort = import_onnxruntime()
    model = onnx.load(str(model_path))
    present = {o.name for o in model.graph.output}
    for t in tensors:
        if t not in present:
            model.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    # basic level: constant folding only, so every exposed tensor keeps its meaning
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=session_options("basic"),
                                providers=["CPUExecutionProvider"])
    return sess, sess.get_inputs()[0].name


def collect_stats(model_path: "str | Path", tensors: list[str], data: np.ndarray, histograms: bool = True,
                  batch: int = CALIB_BATCH) -> dict[str, TensorStats]:
    """Run ``data`` through the fp32 graph: min/max of each tensor, then (``histograms``) the |x| histogram."""
    sess, input_name = _session_with_outputs(Path(model_path), tensors)
    stats = {t: TensorStats() for t in tensors}

    def batches():
        for i in range(0, len(data), batch):
            yield dict(zip(tensors, sess.run(tensors, {input_name: data[i:i + batch]})))

    for outs in batches():
        for t, v in outs.items():
            stats[t].min = min(stats[t].min, float(v.min()))
            stats[t].max = max(stats[t].max, float(v.max()))
    if histograms:
        for s in stats.values():
            s.hist = np.zeros(BINS, dtype=np.int64)
        for outs in batches():
            for t, v in outs.items():
                s = stats[t]
                if s.amax > 0:
                    s.hist += np.histogram(np.abs(v), bins=BINS, range=(0.0, s.amax))[0]
    return stats


def ranges_from_stats(stats: dict[str, TensorStats], method: CalibMethod, percentile: float) -> dict:
    return {t: tensor_range(s, method, percentile) for t, s in stats.items()}


# --- cache -----------------------------------------------------------------------------------------------------

def read_cache(path: Path, method: CalibMethod, percentile: float, model_sha: str, data_sha: str,
               tensors: list[str]) -> dict | None:
    """Ranges from a cache file when method, model and data all match; else None (and why, in the log)."""
    try:
        c = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        log.warning("calibration cache %s unreadable (%s): recalibrating", path, e)
        return None
    want = {"format": CACHE_FORMAT, "method": str(method), "model_sha256": model_sha, "data_sha256": data_sha}
    stale = [k for k, v in want.items() if c.get(k) != v]
    if method == CalibMethod.PERCENTILE and c.get("percentile") != percentile:
        stale.append("percentile")
    missing = [t for t in tensors if t not in c.get("tensors", {})]
    if stale or missing:
        log.info("calibration cache %s not reused: %s differ", path, ", ".join(stale) or f"{len(missing)} tensors")
        return None
    return {t: tuple(c["tensors"][t]["range"]) for t in tensors}


def calibrate(model_path: "str | Path", tensors: list[str], data: np.ndarray, data_sha256: str,
              method: CalibMethod, percentile: float = 99.99, caches: "list[Path] | tuple" = ()) -> Calibration:
    """Ranges of ``tensors`` over ``data`` with ``method``; reuses the first of ``caches`` whose method, model
    and data hashes match."""
    method = CalibMethod.parse(method, "--calib-method")
    percentile = check_percentile(percentile)
    model_sha = sha256_file(Path(model_path))
    start = time.perf_counter()
    for cache in caches:
        if Path(cache).is_file():
            ranges = read_cache(Path(cache), method, percentile, model_sha, data_sha256, tensors)
            if ranges is not None:
                log.info("reused calibration cache %s", cache)
                return Calibration(ranges, method, percentile, len(data), model_sha, data_sha256,
                                   time.perf_counter() - start, reused=True)
    stats = collect_stats(model_path, tensors, data, histograms=method != CalibMethod.MINMAX)
    ranges = ranges_from_stats(stats, method, percentile)
    return Calibration(ranges, method, percentile, len(data), model_sha, data_sha256, time.perf_counter() - start,
                       stats=stats)
