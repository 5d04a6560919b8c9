"""Options of the precision stage, shared by ``export`` and ``quantize``; values are checked by the library."""

from __future__ import annotations

import click

from .. import layout
from ..types import CalibMethod

OPTIONS = [
    click.option("--fp16", is_flag=True, help=f"Add {layout.FP16_ONNX} (fp16 weights/activations, validated vs eager)."),
    click.option("--fp16-io", is_flag=True, help="FP16 graph with fp16 inputs/outputs [default: fp32 I/O + Casts]."),
    click.option("--bf16", is_flag=True,
                 help=f"Add {layout.BF16_ONNX} (bf16, strongly typed, fp32 I/O: TensorRT on GPUs with bf16) and check "
                      "OpenVINO's bf16 run of the fp32 graph (CPUs with AVX-512 BF16 / AMX; skipped elsewhere)."),
    click.option("--keep-fp32", "keep_fp32", multiple=True, metavar="NODE[,NODE]",
                 help=f"ONNX node of {layout.FP32_ONNX} to keep in fp32 in the fp16/bf16 graphs (repeatable); the "
                      "fallback keeps more where the graph misses its bar."),
    click.option("--int8", is_flag=True, help=f"Add calibrated INT8 graphs {layout.INT8_ONNX_PATTERN} (needs --calib)."),
    click.option("--calib", type=click.Path(path_type=str), default=None, metavar="DIR|FILE",
                 help="Calibration data: image folder (recursive) or .npy/.npz of preprocessed NCHW float32."),
    click.option("--calib-size", type=int, default=512, show_default=True, metavar="N",
                 help="Calibration samples used."),
    click.option("--calib-method", default="mse", show_default=True, metavar="|".join(m.value for m in CalibMethod),
                 help="How activation ranges are chosen."),
    click.option("--percentile", default="99.99", show_default=True, metavar="PCT",
                 help="For --calib-method percentile: the percentile of |x| kept, in (0, 100]."),
    click.option("--calib-cache", type=click.Path(path_type=str), default=None, metavar="FILE",
                 help=f"{layout.CALIBRATION} to reuse (when model and data hashes match) and to keep."),
    click.option("--target", "targets", default="tensorrt,onnxruntime", show_default=True,
                 metavar="tensorrt,onnxruntime,openvino",
                 help="INT8 graphs to write (tensorrt: symmetric Q/DQ; onnxruntime: U8S8); openvino adds OpenVINO IR "
                      "(.xml/.bin) of the fp32 graph and of the INT8 graph (converted from the onnxruntime one)."),
    click.option("--val", type=click.Path(path_type=str), default=None, metavar="DIR|FILE",
                 help="Held-out images for the accuracy gate (ImageFolder layout: top-1/top-5; flat: agreement)."),
    click.option("--max-drop", default="1.0", show_default=True, metavar="POINTS",
                 help="Allowed top-1 (or agreement) drop in percentage points before layers fall back to fp32."),
]


def precision_options(func):
    for opt in reversed(OPTIONS):
        func = opt(func)
    return func


def build(fp16, fp16_io, bf16, keep_fp32, int8, calib, calib_size, calib_method, percentile, calib_cache, targets,
          val, max_drop, images=None):
    """``PrecisionOptions`` from the CLI values (the library validates them)."""
    from ..precision import PrecisionOptions
    from .common import split_names

    return PrecisionOptions(fp16=fp16, fp16_io=fp16_io, bf16=bf16, keep_fp32=tuple(split_names(keep_fp32)),
                            int8=int8, calib=calib, calib_size=calib_size, calib_method=calib_method,
                            percentile=percentile, calib_cache=calib_cache, targets=targets, val=val,
                            max_drop=max_drop, images=images)


def _kept(section: dict) -> str:
    """``node (reason), ...`` for the summary: the first few, and how many more."""
    kept = section.get("kept_fp32") or {}
    shown = [f"{n} ({k.get('reason', '?')})" for n, k in list(kept.items())[:6]]
    return ", ".join(shown) + (f" and {len(kept) - 6} more" if len(kept) > 6 else "") if shown else "none"


def _reduced_lines(con, precision: str, f: dict, graph: bool = True) -> None:
    if graph and f.get("file"):
        tries = len(f.get("attempts", []))
        spread = f"spread error {f['spread_error']:.3g}, " if f.get("spread_error") is not None else ""
        con.print(f"{precision} {f['file']} (io {f['io']}): top-1 agreement {f['top1_agreement']:.1%}, {spread}"
                  f"cosine {f['cosine']:.6f}; kept fp32: {_kept(f)}" + (f"; {tries} attempts" if tries > 1 else ""))
        if "emulation" in f.get("validated_by", ""):
            con.print(f"  validated by {f['validated_by']}")
    ov = f.get("openvino")
    if ov:
        if "skipped" in ov:
            con.print(f"{precision} openvino: skipped: {ov['skipped']}")
        else:
            spread = f"spread error {ov['spread_error']:.3g}, " if ov.get("spread_error") is not None else ""
            con.print(f"{precision} openvino ({ov['artifact']} at inference precision bf16): top-1 agreement "
                      f"{ov['top1_agreement']:.1%}, {spread}cosine {ov['cosine']:.6f}"
                      + ("" if ov["passed"] else " (below the bar: not used)"))


def added(options) -> set[str]:
    """What a run of the precision stage with ``options`` (a ``PrecisionOptions``) writes, for ``print_summary``:
    fp16, bf16, int8, and openvino (the IRs and OpenVINO's bf16 run)."""
    wanted = {"fp16": options.fp16, "bf16": options.bf16, "int8": options.int8, "openvino": options.openvino}
    return {name for name, on in wanted.items() if on}


def print_summary(con, manifest: dict, only: set[str] | None = None) -> None:
    """A few lines per precision artifact: parity, accuracy, excluded layers; OpenVINO IRs. ``only``: the parts a
    run added (``added``), so a bundle's earlier precisions are not shown again; None: everything."""
    from .common import fmt_parity

    for name, e in manifest.get("files", {}).items():
        if e.get("kind") == layout.Kind.OPENVINO_IR and (only is None or "openvino" in only):
            con.print(f"openvino {name} ({e['precision']}, from {e.get('source')}): "
                      f"{fmt_parity(manifest['validation'][name])}")
    print_precisions(con, manifest, only)


def print_precisions(con, manifest: dict, only: set[str] | None = None) -> None:
    """The precision stage's results (``manifest["precision"]``): each failure with its one-line reason, then the
    fp16 / bf16 graphs and the INT8 calibration and targets (``only``: as in ``print_summary``)."""

    def shown(part: str) -> bool:
        return only is None or part in only

    sec = manifest.get("precision", {})
    for precision, f in sec.items():
        if isinstance(f, dict) and f.get("failed") and shown(precision):
            con.print(f"{precision} FAILED, left out of the bundle: {f['failed']}")
    for precision in ("fp16", "bf16"):
        if precision in sec and (shown(precision) or precision == "bf16" and shown("openvino")):
            _reduced_lines(con, precision, sec[precision], graph=shown(precision))
    if "int8" in sec and shown("int8"):
        i = sec["int8"]
        c = i["calibration"]
        con.print(f"int8 calibration: {c['method']} on {c['num_samples']} samples"
                  f"{' (cache reused)' if c['reused_cache'] else ''}; gate on {i['gate_data']}")
        for target, t in i["targets"].items():
            if not t.get("passed", True):
                continue
            acc = t["int8"]
            metric = (f"top-1 {t['fp32']['top1']:.2%} -> {acc['top1']:.2%}" if acc.get("top1") is not None
                      else f"agreement {acc['agreement']:.2%}")
            con.print(f"  {target}: {t['file']}  {metric}, drop {t['drop_points']:.2f} points "
                      f"(max {i['max_drop']}); excluded: {', '.join(t['excluded_layers']) or 'none'}")
