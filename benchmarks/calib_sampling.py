"""Does the sampled calibration histogram change INT8 accuracy? Checked on the tests' trained network.

The network is the precision proof's resnet18 trained on scikit-learn's digits (``tests/digits.py``; its
checkpoint is cached in ``tests/.cache`` by the proof tests, else trained here, ~1 min). It is calibrated on the
512 training images that the proof uses, with every value histogrammed (``exact``) and with samples of
``--hist-values`` values per tensor (the default, and smaller ones to stress it: at 32x32 the default
sample holds every value of this small network, so only the smaller ones really sample), then both INT8 targets
are built from each set of ranges and scored on the 450 held-out images (top-1, %).

    python benchmarks/calib_sampling.py                  # writes benchmarks/results/calib_sampling.{json,md}
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from resnet_deploy.precision import calibrate as cal
    from resnet_deploy.backends.onnxruntime import run_graph
    from resnet_deploy.precision.stage import INT8_WRITERS
    from resnet_deploy.types import CalibMethod
    from tests import digits

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hist-values", default=f"{cal.HIST_VALUES},{2 ** 18},{2 ** 16}",
                   help="sample sizes per tensor to compare with every value")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "calib_sampling"))
    a = p.parse_args()
    import onnx

    from resnet_deploy.pipeline.api import export

    x_train, y_train, x_test, y_test, _ = digits.dataset()
    calib = x_train[:512]
    model = digits.trained_model(x_train, y_train)
    sizes = [None] + [int(v) for v in a.hist_values.split(",")]
    res = {"network": "resnet18 trained on digits (tests/digits.py), 32x32", "calib_samples": len(calib),
           "held_out": len(x_test), "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = export(model, Path(tmp) / "b", preprocessing=digits.preprocessing(), arch="resnet18",
                        weights={"source": "digits-trained"}, num_classes=10)
        path = bundle.path / "model.onnx"
        proto = onnx.load(str(path))
        tensors = list(dict.fromkeys(t for w in INT8_WRITERS.values() for t in w.tensors_to_calibrate(proto)))
        top1 = lambda logits: round(float((logits.argmax(1) == y_test).mean() * 100), 2)  # noqa: E731
        res["fp32_top1"] = top1(run_graph(proto, x_test))
        stats = {hv: cal.collect_stats(path, tensors, calib, hist_values=hv) for hv in sizes}
        for method in (CalibMethod.PERCENTILE, CalibMethod.ENTROPY, CalibMethod.MSE):
            for hv in sizes:
                ranges = cal.ranges_from_stats(stats[hv], method, 99.99)
                row = {"per_image": cal.samples_per_image(hv, len(calib))}
                if hv is not None:
                    ex = cal.ranges_from_stats(stats[None], method, 99.99)
                    rel = [max(abs(ranges[t][0] - ex[t][0]), abs(ranges[t][1] - ex[t][1])) / (ex[t][1] - ex[t][0])
                           for t in tensors]
                    row["range_diff_median"], row["range_diff_max"] = float(np.median(rel)), float(np.max(rel))
                for target, w in INT8_WRITERS.items():
                    row[str(target)] = top1(run_graph(w.quantize(proto, ranges).model, x_test))
                res["results"].setdefault(str(method), {})["exact" if hv is None else str(hv)] = row
                print(method, hv, row, flush=True)
    lines = [f"# Sampled calibration histogram vs every value: INT8 top-1 on a trained network", "",
             f"{res['network']}; calibration on {len(calib)} training images, top-1 on {len(x_test)} held-out "
             f"images; fp32 top-1 {res['fp32_top1']}%. `python benchmarks/calib_sampling.py`", "",
             "| method | histogram | values per image | range diff vs exact (median / max) | INT8 tensorrt top-1 | "
             "INT8 onnxruntime top-1 |", "|---|---|---|---|---|---|"]
    for m, rows in res["results"].items():
        for hv, r in rows.items():
            diff = f"{r['range_diff_median']:.2%} / {r['range_diff_max']:.2%}" if "range_diff_max" in r else "-"
            lines.append(f"| {m} | {hv} | {r['per_image'] or 'all'} | {diff} | {r['tensorrt']} | {r['onnxruntime']} |")
    out = Path(a.out)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
