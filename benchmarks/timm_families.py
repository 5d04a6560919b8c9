"""Per block family of timm's ResNets: node counts before / after fusion, fused pattern counts, and INT8 top-1
agreement with eager, on random-init models (randomised BatchNorm) at a small input size.

    python benchmarks/timm_families.py [--size 64] [--out benchmarks/results/timm_families]

Writes ``<out>.json`` and ``<out>.md``. Inputs are seeded standard-normal tensors (no images): 32 to calibrate
(minmax), 64 held out for the INT8 agreement. On a random-init network these numbers show that the graphs are
right and where INT8 error goes; they say nothing about accuracy on real data.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

FAMILIES = {"resnet-d": "resnet18d", "se-resnext": "seresnext26d_32x4d", "pre-activation": "resnetv2_18",
            "pre-activation (50)": "resnetv2_50", "eca": "ecaresnet26t", "resnet-rs": "resnetrs50"}
SHOWN = ("fold-batchnorm", "fuse-conv-add-relu", "fuse-conv-add", "fuse-conv-relu", "fuse-conv-sigmoid",
         "reduce-mean-to-pool", "drop-broadcast-expand")


def run_family(name: str, size: int, tmp: Path) -> dict:
    from resnet_deploy import export_arch
    from resnet_deploy.precision import PrecisionOptions

    rng = np.random.default_rng(1)
    np.savez(tmp / "calib.npz", x=rng.standard_normal((32, 3, size, size), dtype=np.float32))
    np.savez(tmp / "val.npz", x=rng.standard_normal((64, 3, size, size), dtype=np.float32))
    opts = PrecisionOptions(fp16=True, int8=True, calib=tmp / "calib.npz", val=tmp / "val.npz",
                            calib_method="minmax", max_drop=100.0)  # record, do not gate
    start = time.perf_counter()
    res = export_arch(f"timm/{name}", tmp / name, weights="random", input_size=size, num_classes=10,
                      precision=opts, engine="never")
    m = res.manifest
    report = json.loads((res.path / "fusion_report.json").read_text())
    fused = Counter(m["fusion"]["targets"]["portable"]["rewrites"]) + Counter(
        m["fusion"]["targets"]["onnxruntime"]["rewrites"])
    i8 = m["precision"]["int8"]["targets"]
    return {
        "model": f"timm/{name}", "exported_nodes": m["export"]["nodes"],
        "portable_nodes": report["targets"]["portable"]["nodes_after"],
        "onnxruntime_nodes": report["targets"]["onnxruntime"]["nodes_after"],
        "fused": {k: fused[k] for k in SHOWN if fused[k]},
        "recognized_se_eca": len(report["targets"]["onnxruntime"]["recognized"]),
        "batchnorm_kept": report["targets"]["onnxruntime"]["ops_after"].get("BatchNormalization", 0),
        "fp16_cosine": m["validation"]["fp16"]["cosine"],
        "int8": {t: {"agreement": r["int8"]["agreement"], "cosine": r["parity_vs_eager"]["cosine"],
                     "quantized_convs": r["quantized_convs"], "kept_float": len(r["kept_higher_precision"])}
                 for t, r in i8.items()},
        "seconds": round(time.perf_counter() - start, 1),
    }


def to_markdown(rows: dict, size: int) -> str:
    lines = [f"# timm ResNet families: fusion and INT8 (random init, randomised BN, {size}x{size}, 10 classes)", "",
             "| family | model | nodes exported / portable / onnxruntime | fused patterns | SE/ECA recognised | "
             "BN kept | INT8 agreement TensorRT / ORT (cosine) |", "|---|---|---|---|---|---|---|"]
    for fam, r in rows.items():
        fused = ", ".join(f"{k} {v}" for k, v in r["fused"].items())
        t, o = r["int8"]["tensorrt"], r["int8"]["onnxruntime"]
        lines.append(f"| {fam} | {r['model']} | {r['exported_nodes']} / {r['portable_nodes']} / "
                     f"{r['onnxruntime_nodes']} | {fused} | {r['recognized_se_eca']} | {r['batchnorm_kept']} | "
                     f"{t['agreement']:.1f}% ({t['cosine']:.4f}) / {o['agreement']:.1f}% ({o['cosine']:.4f}) |")
    lines += ["", "INT8: minmax ranges from 32 seeded standard-normal inputs; agreement on 64 other ones "
              "(top-1 of the INT8 graph in ONNX Runtime CPU vs eager fp32)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--out", default="benchmarks/results/timm_families")
    ap.add_argument("--only", nargs="*", default=None, help="family names to run")
    args = ap.parse_args()
    rows = {}
    for fam, name in FAMILIES.items():
        if args.only and fam not in args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            rows[fam] = run_family(name, args.size, Path(tmp))
        print(fam, json.dumps(rows[fam]), flush=True)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"size": args.size, "families": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(to_markdown(rows, args.size))


if __name__ == "__main__":
    main()
