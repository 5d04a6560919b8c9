"""Calibration methods on a real ONNX graph fed with a long-tailed activation distribution, and the cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resnet_deploy.errors import UserError
from resnet_deploy.precision import calibrate as cal
from resnet_deploy.types import CalibMethod


@pytest.fixture(scope="module")
def relu_model(tmp_path_factory):
    """input -> Relu -> output: the Relu output is the calibrated activation (like a ResNet's)."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["input"], ["act"], name="relu")], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, 64, 64])],
                          [helper.make_tensor_value_info("act", TensorProto.FLOAT, [None, 3, 64, 64])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path_factory.mktemp("calib") / "relu.onnx"
    onnx.save(m, str(path))
    return path


@pytest.fixture(scope="module")
def long_tailed():
    """Signed log-normal magnitudes (sigma 1): a bulk around 1 and a long tail up to ~60."""
    rng = np.random.default_rng(0)
    shape = (16, 3, 64, 64)
    sign = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
    return (rng.lognormal(0.0, 1.0, size=shape) * sign).astype(np.float32)


def test_methods_clip_a_long_tail_differently(relu_model, long_tailed):
    got = {}
    for m in CalibMethod:
        c = cal.calibrate(relu_model, ["input", "act"], long_tailed, "data", m, 99.9)
        got[m] = c.ranges
    hi_minmax = got[CalibMethod.MINMAX]["act"][1]
    assert hi_minmax == pytest.approx(float(long_tailed.max()))
    assert got[CalibMethod.MINMAX]["act"][0] == 0.0  # Relu output: range starts at 0
    highs = {m: got[m]["act"][1] for m in (CalibMethod.PERCENTILE, CalibMethod.ENTROPY, CalibMethod.MSE)}
    for m, hi in highs.items():
        assert hi < 0.8 * hi_minmax, f"{m} did not clip the long tail: {hi} vs minmax {hi_minmax}"
        assert hi > 1.0, f"{m} clipped into the bulk of the distribution: {hi}"
    vals = sorted(highs.values())
    assert all(b > a * 1.02 for a, b in zip(vals, vals[1:])), f"methods should differ: {highs}"
    # percentile is what it says: 99.9% of |x| of the Relu output below the threshold (up to one bin)
    act = np.maximum(long_tailed, 0)
    frac = float((np.abs(act) <= highs[CalibMethod.PERCENTILE]).mean())
    assert 0.999 <= frac <= 0.9993
    # signed input: the symmetric threshold clips both sides
    lo, hi = got[CalibMethod.MSE]["input"]
    assert lo == pytest.approx(-hi, rel=1e-6) or lo > long_tailed.min()


def test_mse_and_entropy_keep_a_gaussian_nearly_whole(relu_model):
    """Without a tail there is little to clip: the methods stay near the true extent (no blind clipping)."""
    x = np.random.default_rng(1).uniform(-1, 1, size=(4, 3, 64, 64)).astype(np.float32)
    for m in (CalibMethod.ENTROPY, CalibMethod.MSE):
        hi = cal.calibrate(relu_model, ["act"], x, "u", m).ranges["act"][1]
        assert 0.85 < hi <= 1.0, (m, hi)


def test_cache_reused_only_when_model_and_data_match(relu_model, long_tailed, tmp_path):
    first = cal.calibrate(relu_model, ["act"], long_tailed, "sha-a", CalibMethod.MSE)
    cache = tmp_path / "calibration.json"
    cache.write_text(json.dumps(first.to_json()))
    saved = json.loads(cache.read_text())
    assert saved["method"] == "mse" and saved["model_sha256"] == first.model_sha256
    assert saved["tensors"]["act"]["range"] == list(first.ranges["act"])
    again = cal.calibrate(relu_model, ["act"], long_tailed, "sha-a", CalibMethod.MSE, caches=[cache])
    assert again.reused and again.ranges == first.ranges
    other_data = cal.calibrate(relu_model, ["act"], long_tailed[:8], "sha-b", CalibMethod.MSE, caches=[cache])
    assert not other_data.reused
    other_method = cal.calibrate(relu_model, ["act"], long_tailed, "sha-a", CalibMethod.MINMAX, caches=[cache])
    assert not other_method.reused and other_method.ranges["act"][1] > first.ranges["act"][1]
    saved["model_sha256"] = "0" * 64
    cache.write_text(json.dumps(saved))
    assert not cal.calibrate(relu_model, ["act"], long_tailed, "sha-a", CalibMethod.MSE, caches=[cache]).reused


@pytest.mark.parametrize("bad", ["0", "-1", "100.5", "abc", "nan"])
def test_percentile_outside_range(bad):
    with pytest.raises(UserError, match="percentile"):
        cal.check_percentile(bad)


# --- one pass ----------------------------------------------------------------------------------------------------

def test_one_pass_exact_statistics(relu_model, long_tailed):
    """One pass over the data, batch by batch; min/max exact over every value, and with every value histogrammed
    the counts are np.histogram's over the final range."""
    from resnet_deploy.precision import histogram as hg

    ticks = []
    stats = cal.collect_stats(relu_model, ["input", "act"], long_tailed, batch=5, hist_values=None,
                              on_batch=lambda done, total: ticks.append((done, total)))
    assert ticks == [(1, 4), (2, 4), (3, 4), (4, 4)]  # 16 samples, batches of 5: one pass
    for name, values in (("input", long_tailed), ("act", np.maximum(long_tailed, 0))):
        s = stats[name]
        assert (s.min, s.max) == (float(values.min()), float(values.max()))
        assert s.sampled == 0 and s.hist.range == hg.range_for(s.amax)
        np.testing.assert_array_equal(s.hist.counts, np.histogram(np.abs(values), hg.BINS, (0.0, s.hist.range))[0])


def test_sampled_histogram_takes_the_sample_extremes_and_close_ranges(relu_model, long_tailed):
    """A fixed sample of 4096 of the 12288 values per image (16 images): the extremes are the sample's (no
    Reduce op over every value), ranges per method within 10% (entropy 15%) of histogramming every value on this
    long tail, and the sample is the same run to run. minmax, which has no histogram, still reads the exact extremes."""
    import onnx

    exact = cal.collect_stats(relu_model, ["act"], long_tailed, hist_values=None)["act"]
    sampled = cal.collect_stats(relu_model, ["act"], long_tailed, hist_values=16 * 4096)["act"]
    again = cal.collect_stats(relu_model, ["act"], long_tailed, hist_values=16 * 4096)["act"]
    _, (probe,) = cal.stats_graph(onnx.load(str(relu_model)), ["act"], long_tailed.shape, 4096)
    positions = probe.positions  # the positions the statistics graph reads
    assert probe.stride == 1 and len(positions) == 4096
    sample = np.maximum(long_tailed, 0).reshape(len(long_tailed), -1)[:, positions]
    assert (exact.min, exact.max) == (0.0, float(long_tailed.max()))
    assert (sampled.min, sampled.max) == (0.0, float(sample.max()))
    assert float(sample.max()) < exact.max  # the sample misses the largest value: a real difference, tested
    assert sampled.sampled == 4096 and sampled.hist.counts.sum() == 4096 * len(long_tailed)
    minmax = cal.collect_stats(relu_model, ["act"], long_tailed, histograms=False, hist_values=16 * 4096)["act"]
    assert (minmax.min, minmax.max) == (exact.min, exact.max) and minmax.hist is None
    np.testing.assert_array_equal(sampled.hist.counts, again.hist.counts)
    # entropy's KL minimum is flat and jagged on this tail: on the exact histogram its 8 best candidates span
    # 18.2-23.5 (+-12% around the chosen 19.2), and the sample (a third of the values) picks 17.0 (-11.5%)
    for m, tol in ((CalibMethod.PERCENTILE, 0.1), (CalibMethod.ENTROPY, 0.15), (CalibMethod.MSE, 0.1)):
        a, b = cal.tensor_range(exact, m, 99.9)[1], cal.tensor_range(sampled, m, 99.9)[1]
        assert abs(a - b) <= tol * a, (m, a, b)


def test_large_tensors_are_sampled_from_a_strided_grid_exactly(tmp_path):
    """A (C, H, W) tensor much larger than its sample is read through AveragePool(1x1, stride s): every channel at
    rows and columns 0, s, 2s, ... (which ONNX Runtime computes in its blocked layout, with no copy of the whole
    tensor), then the seeded positions within that grid. The values read are exactly the tensor's there; minmax
    takes a nonnegative tensor's max per channel (GlobalMaxPool) and still gets the exact max."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from resnet_deploy.backends.onnxruntime import OnnxRuntimeRunner

    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((32, 16, 1, 1)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["conv"], name="conv"),
                           helper.make_node("Relu", ["conv"], ["act"], name="relu")], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 16, 40, 40])],
                          [helper.make_tensor_value_info("act", TensorProto.FLOAT, [None, 32, 40, 40])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    x = rng.standard_normal((4, 16, 40, 40)).astype(np.float32)
    per_image = 256  # of 51200 values per image: grid stride 7 (32 x 6 x 6 = 1152 >= 4 x 256 values)
    assert cal.grid_stride((32, 40, 40), per_image, 4) == 7 and cal.grid_stride((32, 40, 40), per_image, None) == 1
    stats_model, (probe,) = cal.stats_graph(model, ["act"], x.shape, per_image)
    assert probe.stride == 7 and probe.per_image == 32 * 6 * 6 and len(probe.positions) == per_image
    assert [n.op_type for n in stats_model.graph.node].count("AveragePool") == 1
    stats_model.graph.output.append(helper.make_tensor_value_info("act", TensorProto.FLOAT, None))
    with OnnxRuntimeRunner(stats_model.SerializeToString()) as runner:
        values, act = runner.run_all(x, [probe.values, "act"])
    np.testing.assert_array_equal(values, act[:, :, ::7, ::7].reshape(len(x), -1)[:, probe.positions])
    path = tmp_path / "conv.onnx"
    onnx.save(model, str(path))
    stats = cal.collect_stats(path, ["act"], x, hist_values=per_image * len(x))["act"]
    assert (stats.min, stats.max) == (0.0, float(values.max())) and stats.sampled == per_image
    minmax_model, _ = cal.stats_graph(model, ["act"], x.shape, None, values=False)
    assert "GlobalMaxPool" in [n.op_type for n in minmax_model.graph.node]
    minmax = cal.collect_stats(path, ["act"], x, histograms=False)["act"]
    assert (minmax.min, minmax.max) == (0.0, float(act.max()))


def test_unknown_shapes_are_sampled_in_numpy(relu_model, long_tailed, monkeypatch):
    """Without shapes in the graph the values come out whole and the same positions are sampled here."""
    in_graph = cal.collect_stats(relu_model, ["act"], long_tailed, hist_values=16 * 1024)["act"]
    monkeypatch.setattr(cal, "per_image_shapes", lambda model, tensors, shape: {t: None for t in tensors})
    in_numpy = cal.collect_stats(relu_model, ["act"], long_tailed, hist_values=16 * 1024)["act"]
    np.testing.assert_array_equal(in_graph.hist.counts, in_numpy.hist.counts)


@pytest.mark.parametrize("method", [CalibMethod.MSE, CalibMethod.MINMAX])  # values read / Reduce ops
@pytest.mark.parametrize("op,bad", [("Reciprocal", 0.0), ("Sqrt", -1.0)])  # Inf, NaN
def test_non_finite_activation_is_one_line_user_error(tmp_path, op, bad, method):
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node(op, ["input"], ["inv"], name="inv")], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
                          [helper.make_tensor_value_info("inv", TensorProto.FLOAT, [None, 4])])
    path = tmp_path / "inv.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    x = np.ones((3, 4), np.float32)
    x[2, 1] = bad
    with pytest.raises(UserError, match="'inv' of the fp32 graph is not finite") as e:
        cal.calibrate(path, ["inv"], x, "d", method)
    assert "\n" not in str(e.value)


def test_relu_outputs_get_no_min_probe_and_start_at_zero(relu_model, long_tailed):
    """A Relu's output (and a pool of it) cannot be negative: no ReduceMin is spent on it (minmax) and its min is
    0, the value every quantized range includes anyway; a signed tensor keeps its min. The histogram methods read
    values and no Reduce op at all."""
    import onnx
    from onnx import TensorProto, helper

    from resnet_deploy.precision.quantize_common import asymmetric_uint8

    nodes = [helper.make_node("Relu", ["input"], ["act"]), helper.make_node("MaxPool", ["act"], ["pool"],
                                                                             kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Neg", ["pool"], ["neg"])]
    m = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, 64, 64])],
        [helper.make_tensor_value_info("neg", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 18)])
    assert cal.nonnegative_tensors(m) == {"act", "pool"}
    names = ["input", "act", "pool", "neg"]
    stats_model, probes = cal.stats_graph(m, names, long_tailed.shape, None, values=False)
    assert [p.min is None for p in probes] == [p.nonnegative for p in probes] == [False, True, True, False]
    assert sum(n.op_type == "ReduceMin" for n in stats_model.graph.node) == 2
    assert sum(n.op_type == "ReduceMax" for n in stats_model.graph.node) == 4
    stats_model, probes = cal.stats_graph(m, names, long_tailed.shape, None, values=True)
    assert [p.nonnegative for p in probes] == [False, True, True, False]
    assert not [n for n in stats_model.graph.node if n.op_type.startswith("Reduce")]
    shifted = np.abs(long_tailed) + 0.5  # every value > 0: the Relu's true min is 0.5, recorded as 0
    for histograms in (True, False):
        s = cal.collect_stats(relu_model, ["input", "act"], shifted, histograms=histograms, hist_values=None)
        assert s["act"].min == 0.0 and s["act"].max == float(shifted.max())
        assert s["input"].min == float(shifted.min())  # signed tensors: exact (every value read, or ReduceMin)
    assert asymmetric_uint8(0.0, s["act"].max) == asymmetric_uint8(float(shifted.min()), s["act"].max)
