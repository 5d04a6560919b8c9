"""Where the parity bars come from: spread error, cosine and top-1 agreement of every precision's artifact vs eager.

For each case (an arch, random weights with randomised BatchNorm, optionally with its classifier scaled down to
give small logits and few classes, the shape that broke the cosine bar), export a bundle with FP16 and INT8
(calibrated on --calib), then compare against the eager fp32 logits on real inputs (the repository photos plus
calibration crops): ONNX Runtime fp32 / fp16 / INT8 graphs and, when OpenVINO is installed and the CPU has
bf16, model.onnx at OpenVINO's bf16 inference precision. Spread error = max |candidate - eager| / std of the eager
logits (validate.spread_error), the gate's error.

    python benchmarks/bar_survey.py --calib /tmp/calib300.npz     # make it with benchmarks/make_calib.py

Writes benchmarks/results/bar_survey.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
CASES = [  # (name, arch, input size, classes, classifier scale)
    ("resnet18 224 1000 classes", "resnet18", 224, 1000, 1.0),
    ("resnet50 224 1000 classes", "resnet50", 224, 1000, 1.0),
    ("resnet50 224 2 classes, logits x0.01", "resnet50", 224, 2, 0.01),
    ("resnet18 64 10 classes", "resnet18", 64, 10, 1.0),
]


def cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
    keep = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model} ({', '.join(keep)})"


def survey_case(name, arch, size, classes, scale, calib: np.ndarray, workdir: Path) -> dict:
    import torch

    from resnet_deploy.pipeline import api
    from resnet_deploy.backends.onnxruntime import OnnxRuntimeRunner
    from resnet_deploy.models import load_model
    from resnet_deploy.precision import PrecisionOptions
    from resnet_deploy.preprocess import load_images, make_preprocessing
    from resnet_deploy.validate import compare, run_batches

    pre = make_preprocessing(str(size))
    photos = load_images(Path(__file__).resolve().parents[1] / "tests" / "data" / "images", pre).data
    data = np.concatenate([photos, torch.nn.functional.interpolate(torch.from_numpy(calib[:59]), size=size,
                                                                   mode="bilinear").numpy()])
    model = load_model(arch, "random", classes, 0).model.eval()
    if scale != 1.0:
        with torch.no_grad():
            model.fc.weight.mul_(scale)
            model.fc.bias.mul_(scale)
    npz = workdir / f"calib{size}.npz"
    if not npz.exists():
        np.savez(npz, x=data)
    out = workdir / name.replace(" ", "_").replace(",", "")
    res = api.export(model, out, preprocessing=pre, arch=arch, inputs=(data, None, "survey inputs"),
                     engine="never", precision=PrecisionOptions(fp16=True, int8=True, calib=str(npz), max_drop=100))
    with torch.inference_mode():
        ref = model(torch.from_numpy(data)).numpy()
    rows = {}
    for label, file in (("fp32 onnx", "model.onnx"), ("fp16 onnx", "model.fp16.onnx"),
                        ("int8 tensorrt onnx", "model.int8.tensorrt.onnx"),
                        ("int8 onnxruntime onnx", "model.int8.onnxruntime.onnx")):
        if (out / file).exists():
            with OnnxRuntimeRunner(out / file) as r:
                rows[label] = compare(ref, run_batches(r, data, 8)).to_dict()
    try:
        from resnet_deploy.backends.openvino import OpenVinoRunner, bf16_supported

        if bf16_supported():
            with OpenVinoRunner(out / "model.onnx", precision="bf16") as r:
                rows["bf16 openvino"] = compare(ref, run_batches(r, data, 8)).to_dict()
    except ImportError:
        pass
    return {"case": name, "logit_std": float(ref.std()), "logit_absmax": float(np.abs(ref).max()),
            "samples": len(data), "rows": rows, "failures": res.failures}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calib", type=Path, required=True, help="224x224 .npz (key x), e.g. from make_calib.py")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    calib = np.load(a.calib)["x"]
    from resnet_deploy import validate

    bars = {k: v.to_dict() for k, v in validate.BARS.items()}
    for k in ("fp16", "bf16", "int8"):  # survey every artifact, whatever today's bars say
        validate.BARS[k] = validate.Bar(0.0, float("inf"))
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        cases = [survey_case(*c, calib, Path(tmp)) for c in CASES]
    report = {"machine": cpu(), "python": platform.python_version(), "command": " ".join(sys.argv),
              "seconds": round(time.time() - start), "bars": bars, "cases": cases}
    a.out_dir.mkdir(parents=True, exist_ok=True)
    (a.out_dir / "bar_survey.json").write_text(json.dumps(report, indent=1))
    lines = [f"# Parity of each precision vs eager fp32 (bar survey)", "",
             f"Machine: {report['machine']}. Command: `python benchmarks/bar_survey.py --calib {a.calib.name}` "
             f"({report['seconds']} s). Inputs: the 5 repository photos + 59 calibration crops; random weights.", "",
             "| case | artifact | top-1 agreement | spread error | max abs diff | cosine |", "|---|---|---:|---:|---:|---:|"]
    for c in cases:
        for label, r in c["rows"].items():
            lines.append(f"| {c['case']} (logit std {c['logit_std']:.3g}) | {label} | {r['top1_agreement']:.1%} | "
                         f"{r['spread_error']:.3g} | {r['max_abs_diff']:.3g} | {r['cosine']:.6f} |")
    (a.out_dir / "bar_survey.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
