"""Activation-range calibration, implemented here (not ONNX Runtime's calibrators) and tested per method.

Statistics come from ONE batched pass of the calibration set through the fp32 graph in ONNX Runtime. For the
histogram methods the graph gets, per calibrated tensor, an output of its values: a fixed, seeded random sample of
positions per image (the same positions in every image), as many as give ``HIST_VALUES`` values per tensor over
the whole set, or every value when the tensor has fewer (or with ``hist_values=None``). In a (C, H, W) tensor many
times larger than its sample, the positions are drawn from a strided grid: every channel at rows and columns 0, s,
2s, ..., with ``s`` the largest stride that leaves ``GRID_OVERSAMPLE`` times the sample (an AveragePool of one
value, which copies it exactly). The tensor's min and max are those of the values read (min 0 for a tensor that
cannot be negative, e.g. a Relu's output): exact when every value is read, else the sample's. ``minmax``, which uses
nothing but the extremes, reads no values: a ReduceMax (of each channel's max, GlobalMaxPool, for a nonnegative
(C, H, W) tensor) and, unless the tensor cannot be negative, a ReduceMin give the exact extremes over every value.
The values update a histogram of ``|x|`` per tensor as each batch arrives (``histogram.MagnitudeHistogram``: bins
over ``[0, R)``, ``R`` a power of two that grows with exact merges). Each method picks a clipping threshold ``t``
from that histogram; the range is ``[max(min, -t), min(max, t)]``:

- ``minmax``: ``t = max|x|`` (no clipping; outliers stretch the scale).
- ``percentile``: the ``p``-th percentile of ``|x|``.
- ``entropy``: TensorRT's KL-divergence method: the ``t`` whose 128-level quantized histogram loses the least
  information (KL(P || Q)) against the clipped reference histogram (bin 0, the ReLU zeros, flattened).
- ``mse``: the ``t`` minimising the expected squared error of symmetric int8 quantization (rounding inside,
  clipping outside), summed over the histogram.

Why a sample: histogramming every value of resnet50's 72 tensors (~7 M values per image) costs more on two
cores than the network itself; the sample keeps the histogram's cost at a few percent of the pass. A simple
random sample of positions is unbiased for the distribution of |x|. Why the grid and the pools: ONNX Runtime runs
convolutions in a blocked channel layout (NCHWc) and copies a whole tensor back to NCHW before any op that lacks a
blocked kernel (GatherElements, Reduce*); the pools have one, so only their small outputs are copied (the cost of
each statistics graph over a plain pass: ``benchmarks/results/calib_graph_overhead.md``).
Why the sample's extremes: a ReduceMax and ReduceMin over every value of every tensor cost a sizeable share of the
pass, and the histogram methods mostly clip inside the extremes anyway; where one picks ``t`` at the largest |x| (a
light tail) the sample's max is a little lower. The difference to histogramming every value with exact extremes, per
tensor and in INT8 accuracy, is measured in ``benchmarks/results/calib_sampling.md`` and
``benchmarks/results/precision_calibration.md`` (speed too). A non-finite value is reported when the extremes or
the values read hold one; ONNX Runtime's ReduceMin/ReduceMax skip a NaN, so minmax also reads the logits, which a
NaN almost always reaches.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..files import sha256_file
from ..onnx_graph import FLOAT, expose_outputs, weightless_copy
from ..types import CalibMethod
from . import histogram as hg

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # the cache holds ranges only; their meaning did not change with the one-pass statistics
CALIB_BATCH = 8
HIST_VALUES = 2 ** 23  # values per tensor in its histogram (512 images: 16384 per image, 2% of resnet50's largest)
GRID_OVERSAMPLE = 4  # the positions are drawn from a strided grid of at least this many times as many values
SAMPLE_SEED = 0


@dataclass
class CalibrationStats:
    """What calibration keeps per tensor: its extremes and the histogram of magnitudes."""

    min: float = np.inf
    max: float = -np.inf
    hist: hg.MagnitudeHistogram | None = None
    sampled: int = 0  # values per image in the histogram (0: every value)

    @property
    def amax(self) -> float:
        return float(max(abs(self.min), abs(self.max)))


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
    stats: dict[str, CalibrationStats] = field(default_factory=dict, repr=False)

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

def threshold(stats: CalibrationStats, method: CalibMethod, percentile: float = 99.99) -> float:
    """The clipping magnitude ``t`` the method picks for one tensor."""
    if method == CalibMethod.MINMAX or stats.amax == 0:
        return stats.amax
    stats.hist.grow(stats.amax)  # no-op when the extremes come from the histogram's own values
    if method == CalibMethod.PERCENTILE:
        return hg.threshold_percentile(stats.hist, stats.amax, percentile)
    if method == CalibMethod.ENTROPY:
        return hg.threshold_entropy(stats.hist, stats.amax)
    return hg.threshold_mse(stats.hist, stats.amax)


def tensor_range(stats: CalibrationStats, method: CalibMethod, percentile: float = 99.99) -> tuple[float, float]:
    t = threshold(stats, method, percentile)
    return float(max(stats.min, -t)), float(min(stats.max, t))


# --- statistics ------------------------------------------------------------------------------------------------

@dataclass
class _Probe:
    """The outputs the statistics graph adds for one tensor."""

    tensor: str
    nonnegative: bool  # the tensor cannot be negative: its min is taken as 0
    min: str | None  # ReduceMin output (None: min from the values, or 0 when nonnegative)
    max: str | None  # ReduceMax output (None: max from the values)
    values: str | None  # the values read (None: extremes only)
    per_image: int | None  # values per image in what is sampled from (None: unknown until run)
    positions: np.ndarray | None = None  # sampled positions per image (None: every value)
    stride: int = 1  # spatial stride of the grid the positions are drawn from (1: the whole tensor)

    def outputs(self) -> list[str]:
        """The graph outputs read for this tensor."""
        return [n for n in (self.min, self.max, self.values) if n]

    def extremes(self, outs: dict) -> tuple[float, float]:
        """(min, max) of this batch: the Reduce outputs, else those of the values read (before they are used as
        scratch space)."""
        if self.max is not None:
            return (float(outs[self.min]) if self.min is not None else 0.0), float(outs[self.max])
        v = outs[self.values]
        if v.size == 0:
            return 0.0, 0.0
        return (0.0 if self.nonnegative else float(v.min())), float(v.max())


def per_image_shapes(model, tensors: list[str], input_shape: tuple) -> dict[str, tuple | None]:
    """The shape of one image's slice of each tensor (all dims but the batch) from the graph's shapes, inferred for
    this input shape where missing; None where unknown."""
    import onnx

    def known(infos) -> dict:
        out = {}
        for vi in infos:
            dims = vi.type.tensor_type.shape.dim
            if len(dims) >= 1 and all(d.HasField("dim_value") for d in dims[1:]):
                out[vi.name] = tuple(int(d.dim_value) for d in dims[1:])
        return out

    g = model.graph
    shapes = known([*g.input, *g.value_info, *g.output])
    if any(t not in shapes for t in tensors):
        probe = weightless_copy(model)  # only its shapes are read
        dims = probe.graph.input[0].type.tensor_type.shape.dim
        for d, v in zip(dims[1:], input_shape[1:]):
            d.dim_value = int(v)
        try:
            probe = onnx.shape_inference.infer_shapes(probe)
            shapes.update(known([*probe.graph.value_info, *probe.graph.output]))
        except Exception as e:  # shapes are an optimisation: without them the values are sampled in numpy
            log.debug("shape inference failed (%s): sampling in numpy", e)
    return {t: shapes.get(t) for t in tensors}


def grid_values(shape: tuple, stride: int) -> int:
    """Values per image on the grid of stride ``stride`` (rows and columns 0, s, 2s, ...) of a (C, H, W) tensor."""
    c, h, w = shape
    return c * -(-h // stride) * -(-w // stride)


def grid_stride(shape: tuple | None, per_image: int | None, oversample: int | None) -> int:
    """The largest spatial stride ``s`` whose grid (``grid_values``) still holds ``oversample * per_image`` values
    per image; 1 (no grid) for shapes other than (C, H, W), for every value (``per_image`` None) or with
    ``oversample`` None."""
    if oversample is None or per_image is None or shape is None or len(shape) != 3:
        return 1
    s = 1
    while grid_values(shape, s + 1) >= oversample * per_image and s + 1 <= max(shape[1:]):
        s += 1
    return s


def _positions(n: int, k: int | None, index: int) -> np.ndarray | None:
    """A fixed, seeded simple random sample of ``k`` of ``n`` positions, sorted (None: take all)."""
    if k is None or n <= k:
        return None
    return np.sort(np.random.default_rng([SAMPLE_SEED, index]).choice(n, size=k, replace=False))


# Ops whose output is >= 0 (Relu), or >= 0 whenever their input is (the pools ResNets put after a Relu).
_NONNEGATIVE = {"Relu"}
_KEEPS_SIGN = {"MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "Flatten", "Reshape", "Identity"}


def nonnegative_tensors(model) -> set[str]:
    """Tensors that cannot hold a negative value: outputs of Relu, and of pools/reshapes of such a tensor."""
    out: set[str] = set()
    for n in model.graph.node:  # topological order (ONNX requires it)
        if n.op_type in _NONNEGATIVE or (n.op_type in _KEEPS_SIGN and n.input and n.input[0] in out):
            out.update(o for o in n.output[:1] if o)
    return out


def stats_graph(model, tensors: list[str], input_shape: tuple, per_image: int | None, values: bool = True,
                copy: bool = True, oversample: int | None = GRID_OVERSAMPLE):
    """``model`` (a copy unless ``copy=False``) with only these outputs per tensor: with ``values``, ``per_image``
    sampled values per image (None: all; from a strided grid in a large (C, H, W) tensor, ``grid_stride`` with
    ``oversample``, None: no grid), shaped (batch, values), whose extremes stand for the tensor's; without, its exact
    min and max (ReduceMin, ReduceMax). A tensor that cannot be negative (a Relu's output) gets no min: it is taken
    as 0, which every quantized range includes anyway, so the ReduceMin over it is saved."""
    import onnx
    from onnx import helper, numpy_helper

    shapes = per_image_shapes(model, tensors, input_shape)
    sizes = {t: None if sh is None else int(np.prod(sh, dtype=np.int64)) for t, sh in shapes.items()}
    spatial = {t for t, sh in shapes.items() if sh is not None and len(sh) == 3}
    nonnegative = nonnegative_tensors(model)
    m = model
    if copy:
        m = onnx.ModelProto()
        m.CopyFrom(model)
    g = m.graph
    # With values, only the statistics are read: ORT then skips what only fed the logits (the head). Without, the
    # logits stay: ReduceMin/ReduceMax skip a NaN in ONNX Runtime, and a NaN almost always reaches the logits.
    logits = [] if values else [o.name for o in g.output]
    del g.output[:]
    g.initializer.append(numpy_helper.from_array(np.array([0, -1], np.int64), "calib__flat_shape"))
    # the batch size, for the positions' (batch, k) index tensors: GatherElements copies several times faster
    # than Gather on this CPU
    g.initializer.extend(numpy_helper.from_array(np.array([v], np.int64), n)
                         for v, n in ((0, "calib__zero"), (1, "calib__one")))
    g.node.extend([helper.make_node("Shape", [g.input[0].name], ["calib__input_shape"], name="calib__input_shape"),
                   helper.make_node("Slice", ["calib__input_shape", "calib__zero", "calib__one"], ["calib__batch"],
                                    name="calib__batch")])
    probes = []
    for k, t in enumerate(tensors):
        if not values:
            p = _Probe(t, t in nonnegative, None if t in nonnegative else f"calib__{k}_min", f"calib__{k}_max",
                       None, sizes[t])
            src = t
            if p.min is not None:
                g.node.append(helper.make_node("ReduceMin", [t], [p.min], keepdims=0, name=p.min))
            elif t in spatial:  # the max per channel first: stays in ORT's blocked layout (see the module doc)
                src = f"calib__{k}_channel_max"
                g.node.append(helper.make_node("GlobalMaxPool", [t], [src], name=src))
            g.node.append(helper.make_node("ReduceMax", [src], [p.max], keepdims=0, name=p.max))
            probes.append(p)
            continue
        stride, src, size = grid_stride(shapes[t], per_image, oversample), t, sizes[t]
        if stride > 1:  # every channel at rows and columns 0, s, 2s, ...: AveragePool of one value copies it exactly
            src, size = f"calib__{k}_grid", grid_values(shapes[t], stride)
            g.node.append(helper.make_node("AveragePool", [t], [src], kernel_shape=[1, 1], strides=[stride, stride],
                                           name=src))
        p = _Probe(t, t in nonnegative, None, None, f"calib__{k}_values", size, stride=stride)
        flat = f"calib__{k}_flat"
        g.node.append(helper.make_node("Reshape", [src, "calib__flat_shape"], [flat], name=flat))
        if p.per_image is not None:
            p.positions = _positions(p.per_image, per_image, k)
        if p.positions is not None:
            pos, want, idx = f"calib__{k}_positions", f"calib__{k}_index_shape", f"calib__{k}_index"
            g.initializer.extend([numpy_helper.from_array(p.positions.astype(np.int32)[None], pos),
                                  numpy_helper.from_array(np.array([len(p.positions)], np.int64), f"{pos}_count")])
            g.node.extend([helper.make_node("Concat", ["calib__batch", f"{pos}_count"], [want], axis=0, name=want),
                           helper.make_node("Expand", [pos, want], [idx], name=idx),
                           helper.make_node("GatherElements", [flat, idx], [p.values], axis=1, name=p.values)])
        else:
            p.values = flat
        probes.append(p)
    outputs = [n for p in probes for n in p.outputs()] + logits
    expose_outputs(m, outputs, dict.fromkeys(outputs, FLOAT), in_place=True)
    return m, probes


def samples_per_image(hist_values: int | None, images: int) -> int | None:
    """Positions to sample per image so that a tensor's histogram holds about ``hist_values`` values."""
    return None if hist_values is None else max(1, -(-int(hist_values) // max(images, 1)))


def _model(model):
    """A ``ModelProto`` as given, or the graph of an ONNX file (with its weights)."""
    import onnx

    return model if hasattr(model, "graph") else onnx.load(str(model))


def collect_stats(model, tensors: list[str], data: np.ndarray, histograms: bool = True,
                  batch: int = CALIB_BATCH, hist_values: int | None = HIST_VALUES,
                  on_batch: Callable[[int, int], None] | None = None) -> dict[str, CalibrationStats]:
    """One pass of ``data`` through the fp32 graph: with ``histograms``, the histogram of |x| of each tensor over a
    fixed sample of about ``hist_values`` of its values (None: every value) and the extremes of those values;
    without, the exact min/max of each tensor. ``model``: a ``ModelProto`` (left as it was: the statistics outputs
    are added for the session and taken out again) or an ONNX file."""
    from ..backends.onnxruntime import OnnxRuntimeRunner
    from ..onnx_graph import appended

    clock = {"setup": time.perf_counter(), "run": 0.0, "numpy": 0.0}
    per_image = samples_per_image(hist_values, len(data))
    # ORT's optimizer never fuses away a tensor another node still reads, so each probe sees the graph's values.
    # No memory pattern: its one block for all intermediates grew with the probes, at no gain in speed.
    # Spinning threads: the probes add ~200 small ops per batch, and waking idle threads for each cost a noticeable
    # share of the pass on 2 cores (spinning only distorts runtimes measured beside it, and calibration runs alone).
    with appended(_model(model)) as m:  # no copy of the weights: the probes are appended, serialised, taken out
        graph, probes = stats_graph(m, tensors, data.shape, per_image, values=histograms, copy=False)
        probed = {n for p in probes for n in p.outputs()}
        logits = [o.name for o in graph.graph.output if o.name not in probed]  # minmax only: checked for NaN
        serialized = graph.SerializeToString()
        del graph
    runner = OnnxRuntimeRunner(serialized, graph_level="all", spinning=True, mem_pattern=False,
                               single_use=True).activate()
    del serialized
    clock["setup"] = time.perf_counter() - clock["setup"]
    names = [n for p in probes for n in p.outputs()]
    names += logits
    stats = {t: CalibrationStats(hist=hg.MagnitudeHistogram() if histograms else None) for t in tensors}

    def not_finite(tensor: str, start: int, extremes: str = "") -> UserError:
        return UserError(f"tensor {tensor!r} of the fp32 graph is not finite on calibration samples "
                         f"{start}-{start + batch - 1}{extremes}: check the model and the data")

    def update(outs: dict, start: int) -> None:
        t0 = time.perf_counter()
        for n in logits:
            if not np.isfinite(outs[n]).all():
                raise not_finite(n, start)
        for p in probes:
            s = stats[p.tensor]
            lo, hi = p.extremes(outs)
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise not_finite(p.tensor, start, f" (min {lo}, max {hi})")
            s.min, s.max = min(s.min, lo), max(s.max, hi)
            if histograms:
                values = outs[p.values]
                if p.positions is None and per_image is not None and values.shape[1] > per_image:
                    # shape unknown when the graph was built: sample the exposed values here, same rule
                    p.positions = _positions(values.shape[1], per_image, tensors.index(p.tensor))
                if p.positions is not None and values.shape[1] != len(p.positions):
                    values = values[:, p.positions]
                s.hist.grow(max(abs(lo), abs(hi)))
                try:
                    s.hist.add(values, overwrite=True)
                except ValueError:  # NaN that min/max skipped
                    raise not_finite(p.tensor, start) from None
                s.sampled = len(p.positions) if p.positions is not None else (p.per_image if p.stride > 1 else 0)
        clock["numpy"] += time.perf_counter() - t0

    # Counting in a second thread while ORT runs the next batch was slower on 2 cores (both compete for them).
    batches = range(0, len(data), batch)
    with runner:
        for b, start in enumerate(batches):
            t0 = time.perf_counter()
            outs = dict(zip(names, runner.run_all(data[start:start + batch], names)))
            clock["run"] += time.perf_counter() - t0
            update(outs, start)
            if on_batch is not None:
                on_batch(b + 1, len(batches))
    log.debug("calibration statistics: graph and session %.1f s, ONNX Runtime %.1f s, histograms %.1f s",
              clock["setup"], clock["run"], clock["numpy"])
    return stats


def ranges_from_stats(stats: dict[str, CalibrationStats], method: CalibMethod, percentile: float) -> dict:
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


def calibrate(model, tensors: list[str], data: np.ndarray, data_sha256: str,
              method: CalibMethod, percentile: float = 99.99, caches: "list[Path] | tuple" = (),
              hist_values: int | None = HIST_VALUES,
              on_batch: Callable[[int, int], None] | None = None, model_sha256: str | None = None) -> Calibration:
    """Ranges of ``tensors`` over ``data`` with ``method``; reuses the first of ``caches`` whose method, model
    and data hashes match. ``model``: the fp32 ``ModelProto`` (not changed) with ``model_sha256``, the sha256 of
    its file (a bundle's manifest has it; else it is computed from the serialised model), or an ONNX file.
    ``on_batch(done, total)`` is called after each batch (progress)."""
    import hashlib

    method = CalibMethod.parse(method, "--calib-method")
    percentile = check_percentile(percentile)
    if model_sha256 is not None:
        model_sha = model_sha256
    elif hasattr(model, "graph"):
        model_sha = hashlib.sha256(model.SerializeToString()).hexdigest()
    else:
        model_sha = sha256_file(Path(model))
    start = time.perf_counter()
    for cache in caches:
        if Path(cache).is_file():
            ranges = read_cache(Path(cache), method, percentile, model_sha, data_sha256, tensors)
            if ranges is not None:
                log.info("reused calibration cache %s", cache)
                return Calibration(ranges, method, percentile, len(data), model_sha, data_sha256,
                                   time.perf_counter() - start, reused=True)
    stats = collect_stats(model, tensors, data, histograms=method != CalibMethod.MINMAX,
                          hist_values=hist_values, on_batch=on_batch)
    ranges = ranges_from_stats(stats, method, percentile)
    return Calibration(ranges, method, percentile, len(data), model_sha, data_sha256, time.perf_counter() - start,
                       stats=stats)
