"""The report's picture: latency axis labels that can be read."""

from __future__ import annotations

import pytest

from resnet_deploy.bench.report import figure

pytest.importorskip("matplotlib")


def _report():
    lat = {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0, "std": 0.0}
    rows = []
    # the case: rows from ~1 ms (INT8) to ~40 ms (eager at batch 8), log y axis over two decades
    for backend, precision, ms in (("eager", "fp32", 18.0), ("onnxruntime", "int8", 0.98), ("openvino", "bf16", 2.5),
                                   ("onnxruntime", "fp32", 5.8)):
        for batch, factor in ((1, 1.0), (8, 2.3)):
            rows.append({"backend": backend, "precision": precision, "batch": batch, "mode": "latency",
                         "latency_ms": {**lat, "p50": ms * factor}, "throughput_ips": batch * 1000 / (ms * factor)})
    return {"machine": {"cpu": "test cpu"}, "model": {"arch": "resnet18"}, "results": rows}


def test_latency_axis_labels_do_not_overlap():
    fig = figure(_report())
    fig.canvas.draw()
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    lo, hi = ax.get_ylim()
    labels = [t for t in ax.get_yticklabels(which="both") if t.get_text() and lo <= t.get_position()[1] <= hi]
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.y0)
    assert len(boxes) >= 3, [t.get_text() for t in labels]  # still labelled
    for below, above in zip(boxes, boxes[1:]):
        assert below.y1 <= above.y0, "y-axis labels overlap"
