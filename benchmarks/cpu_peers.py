"""CPU peers benchmark: a bundle's CPU artifacts next to the runtimes a user could pick instead.

Variants (those the bundle has artifacts for; ``--list`` names them):
  torch-eager         the bundle's eager program, fp32, torch.inference_mode, torch's default threads
  torch-compile       the same through torch.compile (inductor, freezing on, dynamic=False: one graph per batch)
  ort-fp32            ONNX Runtime on model.onnx, ORT_ENABLE_ALL, the runtime's defaults (spinning on)
  ort-fp32-fused      ONNX Runtime on model.onnxruntime.onnx, the fused graph `resnet-deploy bench` runs
  ort-int8-<target>   ONNX Runtime on each of the bundle's INT8 graphs (model.int8.<target>.onnx)
  ort-int8-onnxruntime-concurrent
                      throughput batches only: that graph with one thread per run and one run per core in
                      flight (ONNX Runtime's counterpart of OpenVINO's streams)
  ov-f32              OpenVINO on model.onnx, inference precision f32
  ov-default          OpenVINO on model.onnx at its default precision for this CPU (bf16 where the CPU has it)
  ov-int8-<target>    OpenVINO reading each of the bundle's INT8 ONNX graphs
  ov-ir-int8          OpenVINO on the bundle's own INT8 IR (model.int8.openvino.xml, the openvino target)
  ov-ir-int8-static   the same IR reshaped to each batch size before compiling (static batch)
  ov-nncf-int8        OpenVINO on an INT8 model that NNCF quantized from model.onnx (nncf.quantize with its
                      defaults, on --calib with the bundle's preprocessing), as a user of that stack would

Modes: batch 1 is measured for latency, one request at a time (OpenVINO: LATENCY hint); larger batches for
throughput (OpenVINO: THROUGHPUT hint and an AsyncInferQueue with the runtime's optimal number of requests in
flight; ONNX Runtime and torch: one call at a time with all their threads, their default; the -concurrent
variant: one run per core in flight).

How it measures: every variant runs in its own process (its own thread pools and allocator), started one after
the other (startup time = model load + compile). Then ``--rounds`` rounds: in each, every variant in turn
(the order rotated by one each round) warms up and runs each batch size for ``--duration`` seconds while the
others wait blocked on a pipe, so slow drift of a shared machine hits every variant alike. Reported: the median
and min-max over rounds of images per second. Each variant's logits on the accuracy inputs, through the same
path as the timing, are compared with the eager fp32 logits (top-1 agreement, smallest cosine), so a fast but
wrong variant shows.

    python benchmarks/cpu_peers.py BUNDLE --calib calib.npz                       # 3 rounds x 6 s per variant
    python benchmarks/cpu_peers.py BUNDLE --rounds 1 --duration 0.3 --warmup 0.1 --out-dir /tmp   # smoke test

Writes <out-dir>/<name>.json and .md (default benchmarks/results/cpu_peers.*).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
REPO_IMAGES = Path(__file__).resolve().parents[1] / "tests" / "data" / "images"
NNCF_DEFAULT_SUBSET = 300  # nncf.quantize's own default subset_size
MIN_CALL_S = 1.0  # a throughput call (one queue fill and drain) lasts at least this long, so draining costs little


@dataclass
class Variant:
    """One thing to measure. ``model`` is a file (None: the bundle's eager program)."""

    name: str
    runtime: str  # torch | onnxruntime | openvino
    what: str
    model: str | None = None
    precision: str | None = None  # OpenVINO inference precision (None: its default)
    compile: bool = False  # torch.compile
    concurrent: bool = False  # ONNX Runtime: throughput batches as concurrent single-thread runs
    throughput_only: bool = False
    static_batch: bool = False  # OpenVINO: reshape to each batch size before compiling (else the batch stays dynamic)


# ------------------------------------------------------------------------------------------------ variants
def bundle_variants(bundle: Path, manifest: dict) -> list[Variant]:
    """Every variant this bundle has artifacts for, in table order (the NNCF model is made later)."""
    from resnet_deploy.bundle import find_artifacts

    fp32 = find_artifacts(manifest, kind="onnx", precision="fp32", target="portable")
    int8 = [(n, manifest["files"][n].get("target")) for n in find_artifacts(manifest, kind="onnx", precision="int8")]
    out = []
    if find_artifacts(manifest, kind="torch-exported-program"):
        out += [Variant("torch-eager", "torch", "torch eager fp32"),
                Variant("torch-compile", "torch", "torch.compile fp32 (inductor, freezing)", compile=True)]
    if fp32:
        out.append(Variant("ort-fp32", "onnxruntime", f"ONNX Runtime fp32 {fp32[0]}", str(bundle / fp32[0])))
    for name in find_artifacts(manifest, kind="onnx", precision="fp32", target="onnxruntime"):  # what bench runs
        out.append(Variant("ort-fp32-fused", "onnxruntime", f"ONNX Runtime fp32 {name} (fused)", str(bundle / name)))
    for name, target in int8:
        out.append(Variant(f"ort-int8-{target}", "onnxruntime", f"ONNX Runtime {name}", str(bundle / name)))
        if target == "onnxruntime":
            out.append(Variant(f"ort-int8-{target}-concurrent", "onnxruntime",
                               f"ONNX Runtime {name}, one run per core in flight", str(bundle / name),
                               concurrent=True, throughput_only=True))
    if fp32:
        out += [Variant("ov-f32", "openvino", f"OpenVINO f32 {fp32[0]}", str(bundle / fp32[0]), precision="f32"),
                Variant("ov-default", "openvino", f"OpenVINO default precision {fp32[0]}", str(bundle / fp32[0]))]
    for name, target in int8:
        out.append(Variant(f"ov-int8-{target}", "openvino", f"OpenVINO reading {name}", str(bundle / name)))
    for name in find_artifacts(manifest, kind="openvino-ir", precision="int8"):  # the IR the bundle ships
        out += [Variant("ov-ir-int8", "openvino", f"OpenVINO IR {name} (the bundle's own)", str(bundle / name)),
                Variant("ov-ir-int8-static", "openvino", f"OpenVINO IR {name}, reshaped to a static batch",
                        str(bundle / name), static_batch=True)]
    if fp32:
        out.append(Variant("ov-nncf-int8", "openvino", "OpenVINO + NNCF INT8 (quantized by NNCF from model.onnx)"))
    return out


def choose(available: list[Variant], only: str | None, skip: str | None) -> tuple[list[Variant], list[str]]:
    """The variants to run and notes on those dropped because a package is missing. Names the user gives must
    exist; a variant the user names explicitly must be runnable here."""
    from resnet_deploy.errors import MissingDependency, UserError

    names = [v.name for v in available]
    wanted, skipped = (only.split(",") if only else []), (skip.split(",") if skip else [])
    for n in wanted + skipped:
        if n.strip() and n.strip() not in names:
            raise UserError(f"unknown variant {n.strip()!r} for this bundle: choose from {', '.join(names)}")
    chosen = [v for v in available if (not only or v.name in [w.strip() for w in wanted])
              and v.name not in [s.strip() for s in skipped]]
    notes = []
    needs = {"openvino": lambda v: v.runtime == "openvino", "nncf": lambda v: v.name == "ov-nncf-int8"}
    for pkg, extra in (("openvino", "openvino"), ("nncf", "bench-peers")):
        hit = [v for v in chosen if needs[pkg](v)]
        if not hit or importlib.util.find_spec(pkg) is not None:
            continue
        if only:
            raise MissingDependency(pkg, extra=extra, what=f"variant {hit[0].name}")
        notes.append(f"{', '.join(v.name for v in hit)} skipped: {pkg} is not installed "
                     f"(pip install 'resnet-deploy[{extra}]')")
        chosen = [v for v in chosen if v not in hit]
    if not chosen:
        raise UserError("no variant left to run")
    return chosen, notes


# ------------------------------------------------------------------------------------------------ worker side
class Unit:
    """One batch size of one variant: ``call()`` runs ``images`` images once (one request, or a queue of them in
    throughput mode); ``logits(data)`` sends accuracy inputs through the same path."""

    def __init__(self, call, images: int, logits, runner, mode: str):
        self.call, self.images, self.logits, self.runner, self.mode = call, images, logits, runner, mode


def make_unit(v: Variant, batch: int, shape: list[int], throughput: bool, model=None) -> Unit:
    import numpy as np

    from resnet_deploy.validate import run_batches

    x = np.random.default_rng(batch).standard_normal((batch, *shape), dtype=np.float32)
    chunks = lambda data: [data[i:i + batch] for i in range(0, len(data), batch)]  # noqa: E731
    if v.runtime == "torch":
        from resnet_deploy.backends.torch_eager import TorchRunner

        runner = TorchRunner(model).activate()
    elif v.runtime == "onnxruntime":
        from resnet_deploy.backends.onnxruntime import OnnxRuntimeRunner

        runner = OnnxRuntimeRunner(v.model, threads=1 if v.concurrent else None, spinning=True).activate()
        if v.concurrent:
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(os.cpu_count() or 1)  # session.run releases the GIL: runs overlap
            k = 4 * (os.cpu_count() or 1)
            return Unit(lambda: list(pool.map(runner.infer, [x] * k)), batch * k,
                        lambda data: np.concatenate(list(pool.map(runner.infer, chunks(data)))), runner,
                        f"{os.cpu_count()} concurrent runs x 1 thread")
    else:
        from resnet_deploy.backends.openvino import OpenVinoRunner

        runner = OpenVinoRunner(v.model, hint="throughput" if throughput else "latency",
                                precision=v.precision, batch=batch if v.static_batch else None).activate()
        if throughput:
            k = max(4 * runner.optimal_requests, 1)
            start = time.perf_counter()
            runner.infer_many([x] * k)
            per_batch = (time.perf_counter() - start) / k
            k = max(k, math.ceil(MIN_CALL_S / max(per_batch, 1e-6)))
            return Unit(lambda: runner.infer_many([x] * k), batch * k,
                        lambda data: np.concatenate(runner.infer_many(chunks(data))), runner,
                        f"THROUGHPUT hint, AsyncInferQueue of {runner.optimal_requests}, {k} batches per call")
    mode = "one call at a time" + (", LATENCY hint" if v.runtime == "openvino" else "")
    return Unit(lambda: runner.infer(x), batch, lambda data: run_batches(runner, data, batch), runner, mode)


def worker(spec_path: str) -> None:
    """One variant in its own process. Prints {"ready"...} once set up, then answers one JSON command per stdin
    line: {"cmd": "run", "batch", "duration", "warmup"} -> {"images", "seconds", "call_s"}; {"cmd": "quit"} ->
    {"peak_rss_mb"}."""
    import numpy as np

    from resnet_deploy.bench.stats import WallTimer, measure
    from resnet_deploy.bench.worker import peak_rss_mb

    spec = json.loads(Path(spec_path).read_text())
    v = Variant(**spec["variant"])
    emit = lambda d: print(json.dumps(d, default=str), flush=True)  # noqa: E731
    try:
        start = time.perf_counter()
        model = None
        if v.runtime == "torch":
            import torch

            from resnet_deploy.bundle import load_eager

            model = load_eager(spec["bundle"])
            if v.compile:
                import torch._inductor.config as inductor_config

                inductor_config.freezing = True  # fold weights into the graph: the issue's setting
                model = torch.compile(model, dynamic=False)  # an exported program is in eval mode already
        data = np.load(spec["accuracy_inputs"])
        units, logits = {}, {}
        for b in spec["batches"]:
            units[b] = make_unit(v, b, spec["shape"], b > 1, model)
            logits[str(b)] = units[b].logits(data)  # also the first warm-up (torch.compile compiles here)
        np.savez(spec["logits_out"], **logits)
        emit({"ready": True, "activate_s": time.perf_counter() - start,
              "describe": {b: {**u.runner.describe(), "mode": u.mode, "images_per_call": u.images}
                           for b, u in units.items()}})
    except Exception as e:  # report and end: the parent records the variant as failed
        import traceback

        emit({"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()})
        return
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        unit = units[cmd["batch"]]
        end = time.perf_counter() + cmd["warmup"]
        while time.perf_counter() < end:  # caches went cold while the other variants ran
            unit.call()
        m = measure(unit.call, WallTimer(), warmup=0, iters=None, duration_s=cmd["duration"])
        emit({"images": unit.images * len(m.samples_s), "seconds": sum(m.samples_s), "call_s": m.samples_s})
    emit({"peak_rss_mb": peak_rss_mb()})


def nncf_worker(args) -> None:
    """Quantize model.onnx with NNCF, as its documentation shows for an OpenVINO model, and save the IR."""
    import numpy as np
    import openvino as ov

    from resnet_deploy.bench.worker import peak_rss_mb
    from resnet_deploy.precision.calibration_data import load_calibration
    from resnet_deploy.preprocess import Preprocessing

    start = time.perf_counter()
    import nncf

    pre = Preprocessing.from_dict(json.loads(args.preprocessing))
    ds = load_calibration(args.calib, pre, args.calib_size)
    model = ov.Core().read_model(args.model)
    ready = time.perf_counter()
    items = [np.ascontiguousarray(ds.data[i:i + 1]) for i in range(len(ds.data))]
    quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items))
    quantize_s = time.perf_counter() - ready
    ov.save_model(quantized, args.nncf_out)
    print(json.dumps({"quantize_s": quantize_s, "setup_s": ready - start, "samples": len(items),
                      "source": ds.source, "warnings": ds.warnings, "nncf": nncf.__version__,
                      "peak_rss_mb": peak_rss_mb()}), flush=True)


# ------------------------------------------------------------------------------------------------ parent side
class Worker:
    def __init__(self, v: Variant, spec: dict, tmp: Path):
        self.variant, self.log = v, tmp / f"{v.name}.log"
        path = tmp / f"{v.name}.json"
        path.write_text(json.dumps({**spec, "variant": asdict(v), "logits_out": str(tmp / f"{v.name}.npz")}))
        self.logits_path = tmp / f"{v.name}.npz"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, __file__, "--worker", str(path)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log.read_text().strip().splitlines()[-3:]
            raise RuntimeError(f"worker exited with {self.proc.wait()}: {' | '.join(tail)}")
        return json.loads(line)

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        return self.read()

    def close(self) -> dict:
        try:
            out = self.ask(cmd="quit")
        except (BrokenPipeError, OSError, RuntimeError, ValueError):
            out = {}
        self.proc.wait(timeout=60)
        return out


def accuracy_inputs(path: Path | None, pre, samples: int, multiple: int):
    """The accuracy inputs: images from ``path`` (bundle preprocessing), then seeded standard-normal tensors up
    to ``samples``, rounded up to a multiple of every batch size (every call is a full batch)."""
    import numpy as np

    from resnet_deploy.preprocess import load_images

    parts, desc = [], []
    if path is not None:
        imgs = load_images(path, pre, limit=samples, what="--accuracy-images")
        parts.append(imgs.data)
        desc.append(imgs.describe(path))
    n = max(samples, sum(len(p) for p in parts))
    n = math.ceil(n / multiple) * multiple
    fill = n - sum(len(p) for p in parts)
    if fill:
        parts.append(np.random.default_rng(0).standard_normal((fill, 3, *pre.input_size), dtype=np.float32))
        desc.append(f"random:{fill} seed=0")
    return np.concatenate(parts), " + ".join(desc)


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "onnxruntime", "openvino", "nncf", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def summarise(v: Variant, w: dict, rounds: dict, reference: dict, logits) -> dict:
    from resnet_deploy.validate import compare

    out = {"name": v.name, "what": v.what, "runtime": v.runtime, "model": Path(v.model).name if v.model else None,
           "activate_s": w.get("activate_s"), "peak_rss_mb": w.get("peak_rss_mb"), "batches": {}}
    for b, visits in rounds.items():
        ips = [r["images"] / r["seconds"] for r in visits]
        calls = sorted(c for r in visits for c in r["call_s"])
        row = {"ips_rounds": ips, "ips_median": statistics.median(ips), "ips_min": min(ips), "ips_max": max(ips),
               "describe": w["describe"][str(b)] if str(b) in w["describe"] else w["describe"].get(b)}
        if b == 1:
            row["latency_ms_p50"] = calls[len(calls) // 2] * 1e3
        row["accuracy"] = compare(reference[b], logits[str(b)], candidate_name=v.name).to_dict()
        out["batches"][str(b)] = row
    return out


def runs_as(d: dict) -> str:
    """What really ran, in a few words, from a runner's ``describe()``."""
    if d.get("name") == "openvino":
        return f"{d.get('inference_precision')}, {d.get('num_streams')} stream(s)"
    threads = d.get("threads")
    return f"{threads} thread(s)" if threads else "default threads"


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def fmt_ips(row: dict | None) -> str:
    if not row:
        return "-"
    return f"{row['ips_median']:.1f} ({row['ips_min']:.1f}-{row['ips_max']:.1f})"


def table_row(r: dict, batches: list[int]) -> str:
    if r.get("error"):
        cells = ["-"] * (len(batches) + 3) + [f"error: {r['error'].splitlines()[0][:120]}", "-", "-"]
        return f"| {r['name']} | " + " | ".join(cells) + " |"
    rows = [r["batches"].get(str(b)) for b in batches]
    present = [x for x in rows if x]
    cosines = [x["accuracy"]["cosine"] for x in present]
    cells = [fmt_ips(x) for x in rows] + [
        fmt(r["batches"].get("1", {}).get("latency_ms_p50"), ".2f"),
        f"{min(x['accuracy']['top1_agreement'] for x in present):.1%}",
        "not finite" if None in cosines else f"{min(cosines):.5f}",
        " / ".join(runs_as(x["describe"]) for x in present),
        fmt(r.get("activate_s"), ".1f"), fmt(r.get("peak_rss_mb"), ".0f")]
    return f"| {r['name']} | " + " | ".join(cells) + " |"


def markdown(res: dict) -> str:
    m, batches = res["machine"], res["args"]["batches"]
    flags = ", ".join(f for f, on in m["isa_flags"].items() if on) or "none of the tracked ones"
    versions_line = ", ".join(f"{k} {v}" for k, v in res["versions"].items())
    lines = [f"# CPU peers: {res['bundle']['arch']} {res['bundle']['input']}", "",
             f"Machine: {m['cpu']} ({m['cores']} cores; {flags}); load average {m['load_average_start']} at "
             f"start, {m['load_average_end']} at end.", f"Versions: {versions_line}.",
             f"Command: `{res['command']}` ({res['date']}, {res['wall_s']:.0f} s).",
             f"Rounds: {res['args']['rounds']} x {res['args']['duration']} s per variant and batch size, rotated; "
             "img/s median (min-max over rounds).", f"Accuracy inputs: {res['accuracy_inputs']}; vs eager fp32.", ""]
    if res.get("nncf"):
        n = res["nncf"]
        lines += [f"NNCF {n['nncf']}: quantized on {n['source']} ({n['samples']} samples) in {n['quantize_s']:.1f} "
                  f"s (peak {n['peak_rss_mb']:.0f} MiB). " + " ".join(n["warnings"]), ""]
    if res.get("note"):
        lines += [res["note"], ""]
    bs = " / ".join(f"b{b}" for b in batches)
    lines += ["| variant | " + " | ".join(f"b{b} img/s" for b in batches) + " | b1 p50 ms | top-1 agr. | min cosine "
              f"| runs as ({bs}) | startup s | peak MiB |",
              "|---|" + "---:|" * len(batches) + "---:|---:|---:|---|---:|---:|"]
    lines += [table_row(r, batches) for r in res["variants"]]
    lines += [""] + [f"- {n}" for n in res["modes"] + res["notes"]]
    return "\n".join(lines) + "\n"


class OneLineParser(argparse.ArgumentParser):
    """Bad options are one line on stderr and exit 2, like the rest of the project (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"cpu_peers.py: error: {message}\n")


def parse_args(argv=None):
    def positive(kind):
        def parse(text):
            try:
                value = kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
            if not value > 0:
                raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
            return value
        return parse

    p = OneLineParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", nargs="?", type=Path, help="a resnet-deploy bundle folder")
    p.add_argument("--variants", help="comma list of variants to run (default: every one the bundle allows)")
    p.add_argument("--skip", help="comma list of variants not to run")
    p.add_argument("--list", action="store_true", help="list this bundle's variants and exit")
    p.add_argument("--batches", default="1,8", help="batch sizes; 1 = latency mode, larger = throughput mode")
    p.add_argument("--rounds", type=positive(int), default=3)
    p.add_argument("--duration", type=positive(float), default=6.0, help="timed seconds per visit and batch size")
    p.add_argument("--warmup", type=float, default=1.0, help="untimed seconds at the start of every visit")
    p.add_argument("--calib", type=Path, default=REPO_IMAGES,
                   help="NNCF calibration data: an image folder or a .npy/.npz of preprocessed NCHW float32 "
                        "(default: the repository's 5 test photos, too few for real ranges)")
    p.add_argument("--calib-size", type=positive(int), default=None,
                   help="NNCF samples (default: as many as the bundle's own INT8 calibration used, else 300)")
    p.add_argument("--accuracy-images", type=Path, default=REPO_IMAGES, help="real images for the accuracy check")
    p.add_argument("--accuracy-samples", type=positive(int), default=16,
                   help="accuracy inputs: the images, then seeded random tensors up to this many")
    p.add_argument("--note", default="", help="a line written under the title (e.g. how loaded the machine was)")
    p.add_argument("--name", default="cpu_peers", help="results file stem")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="where results go (default: benchmarks/results)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--nncf-out", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--preprocessing", help=argparse.SUPPRESS)
    return p, p.parse_args(argv)


def check(args):
    """Validate everything before minutes of work; returns (manifest, batches, variants, notes)."""
    from resnet_deploy.bundle import read_manifest
    from resnet_deploy.errors import UserError
    from resnet_deploy.precision.calibration_data import check_path

    if args.bundle is None:
        raise UserError("give a bundle folder (made by resnet-deploy export)")
    manifest = read_manifest(args.bundle)
    try:
        batches = sorted({int(b) for b in args.batches.split(",") if b.strip()})
    except ValueError:
        raise UserError(f"--batches {args.batches!r} must be a comma list of integers") from None
    if not batches or batches[0] < 1:
        raise UserError(f"--batches {args.batches!r}: batch sizes must be >= 1")
    if args.warmup < 0:
        raise UserError(f"--warmup {args.warmup} must be >= 0 seconds")
    variants, notes = choose(bundle_variants(args.bundle, manifest), args.variants, args.skip)
    if any(v.name == "ov-nncf-int8" for v in variants):
        check_path(args.calib, "--calib")
    if args.accuracy_images is not None and not args.accuracy_images.exists():
        raise UserError(f"--accuracy-images {str(args.accuracy_images)!r} does not exist")
    try:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=args.out_dir).close()
    except OSError as e:
        raise UserError(f"--out-dir {str(args.out_dir)!r} is not writable ({e.strerror})") from None
    return manifest, batches, variants, notes


def quantize_with_nncf(args, manifest: dict, tmp: Path) -> dict:
    calib_size = args.calib_size or (manifest.get("precision", {}).get("int8", {}).get("calibration", {})
                                     .get("num_samples") or NNCF_DEFAULT_SUBSET)
    out = tmp / "nncf" / "model.xml"
    log = tmp / "nncf.log"
    cmd = [sys.executable, __file__, "--nncf-out", str(out), "--model", str(args.bundle / "model.onnx"),
           "--calib", str(args.calib), "--calib-size", str(calib_size),
           "--preprocessing", json.dumps(manifest["preprocessing"])]
    with open(log, "w") as err:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        tail = " | ".join(log.read_text().strip().splitlines()[-3:])
        raise RuntimeError(f"NNCF quantization failed (exit {r.returncode}): {tail}")
    return {**json.loads(lines[-1]), "model": str(out)}


def run(args, manifest, batches, variants, notes) -> dict:
    import numpy as np

    from resnet_deploy.backends.torch_eager import TorchRunner
    from resnet_deploy.bench.report import cpu_isa_flags, cpu_model
    from resnet_deploy.bundle import load_eager
    from resnet_deploy.preprocess import Preprocessing
    from resnet_deploy.validate import run_batches

    started, load_start = time.perf_counter(), os.getloadavg()
    pre = Preprocessing.from_dict(manifest["preprocessing"])
    data, acc_desc = accuracy_inputs(args.accuracy_images, pre, args.accuracy_samples, math.lcm(*batches))
    with TorchRunner(load_eager(args.bundle)) as eager:  # the reference, before any worker runs
        reference = {b: run_batches(eager, data, b) for b in batches}
    results, nncf_info = {}, None
    with tempfile.TemporaryDirectory(prefix="cpu_peers_") as tmp:
        tmp = Path(tmp)
        np.save(tmp / "accuracy.npy", data)
        if any(v.name == "ov-nncf-int8" for v in variants):
            print("NNCF: quantizing model.onnx", file=sys.stderr, flush=True)
            try:
                nncf_info = quantize_with_nncf(args, manifest, tmp)
                next(v for v in variants if v.name == "ov-nncf-int8").model = nncf_info.pop("model")
            except RuntimeError as e:
                results["ov-nncf-int8"] = {"name": "ov-nncf-int8", "error": str(e)}
                variants = [v for v in variants if v.name != "ov-nncf-int8"]
        spec = {"bundle": str(args.bundle), "shape": [3, *pre.input_size], "accuracy_inputs": str(tmp / "accuracy.npy")}
        workers, ready = [], {}
        try:
            for v in variants:  # one after the other: each startup (load + compile) has the machine alone
                print(f"starting {v.name}", file=sys.stderr, flush=True)
                w = Worker(v, {**spec, "batches": [b for b in batches if b > 1 or not v.throughput_only]}, tmp)
                try:
                    msg = w.read()
                except RuntimeError as e:
                    msg = {"error": str(e)}
                if "error" in msg:
                    results[v.name] = {"name": v.name, "what": v.what, "error": msg["error"],
                                       "traceback": msg.get("traceback")}
                    w.close()
                    continue
                workers.append(w)
                ready[v.name] = msg
            visits = {w.variant.name: {} for w in workers}
            for r in range(args.rounds):
                order = workers[r % len(workers):] + workers[:r % len(workers)] if workers else []
                for w in order:
                    for b in batches:
                        if b == 1 and w.variant.throughput_only:
                            continue
                        out = w.ask(cmd="run", batch=b, duration=args.duration, warmup=args.warmup)
                        visits[w.variant.name].setdefault(b, []).append(out)
                print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        finally:
            for w in workers:
                ready[w.variant.name]["peak_rss_mb"] = w.close().get("peak_rss_mb")
        for w in workers:
            logits = np.load(w.logits_path)
            results[w.variant.name] = summarise(w.variant, ready[w.variant.name], visits[w.variant.name], reference,
                                                logits)
    order = [v.name for v in bundle_variants(args.bundle, manifest)]
    modes = ["b1: latency, one request at a time (OpenVINO LATENCY hint)",
             "b>1: throughput; OpenVINO THROUGHPUT hint with an AsyncInferQueue of its optimal number of requests; "
             "torch and ONNX Runtime one call at a time with all their threads (their default); "
             "*-concurrent: one single-thread ONNX Runtime run per core in flight",
             "'runs as' for OpenVINO is its inference precision, which applies to the layers left in floating point "
             "(quantized layers run int8)"]
    return {"bundle": {"path": str(args.bundle), "arch": manifest.get("arch"),
                       "input": manifest.get("input", {}).get("shape"), "weights": manifest.get("weights", {}).get(
                           "source")},
            "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "isa_flags": cpu_isa_flags(),
                        "load_average_start": [round(x, 2) for x in load_start],
                        "load_average_end": [round(x, 2) for x in os.getloadavg()]},
            "versions": versions(), "command": shlex.join(["python", "benchmarks/cpu_peers.py", *sys.argv[1:]]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "wall_s": time.perf_counter() - started,
            "args": {"batches": batches, "rounds": args.rounds, "duration": args.duration, "warmup": args.warmup},
            "accuracy_inputs": acc_desc, "nncf": nncf_info, "note": args.note, "notes": notes, "modes": modes,
            "variants": sorted(results.values(), key=lambda r: order.index(r["name"]))}


def main(argv=None) -> int:
    p, args = parse_args(argv)
    if args.worker:
        worker(args.worker)
        return 0
    if args.nncf_out:
        nncf_worker(args)
        return 0
    from resnet_deploy.errors import UserError

    try:
        if args.list and args.bundle is not None:
            from resnet_deploy.bundle import read_manifest

            for v in bundle_variants(args.bundle, read_manifest(args.bundle)):
                print(f"{v.name:36s} {v.what}")
            return 0
        manifest, batches, variants, notes = check(args)
    except UserError as e:
        print(f"cpu_peers.py: error: {e}", file=sys.stderr)
        return 2
    res = run(args, manifest, batches, variants, notes)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    md = markdown(res)
    (args.out_dir / f"{args.name}.md").write_text(md)
    print(md)
    failed = [r["name"] for r in res["variants"] if r.get("error")]
    if failed:
        print(f"cpu_peers.py: {len(failed)} variant(s) failed: {', '.join(failed)} (see the results)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
