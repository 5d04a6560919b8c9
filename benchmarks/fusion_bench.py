"""Fusion benchmark: our FusedConv graph vs ONNX Runtime's own graph optimizations, ONNX Runtime CPU.

Configurations, at each batch size:
  unfused/disable   the exported graph, ORT graph optimizations disabled (the baseline)
  fused/disable     our onnxruntime-target graph (com.microsoft.FusedConv), optimizations disabled
  unfused/extended  the exported graph at ORT_ENABLE_EXTENDED (ORT's own fusions)
  unfused/all       the exported graph at ORT_ENABLE_ALL (fusions plus the NCHWc blocked layout)
  fused/all         our graph at ORT_ENABLE_ALL (does the layout still apply on top of our fusions?)

How it measures (the effect is a few percent; this VM's speed drifts by more than that within a minute):
- Every configuration runs in its own process (its own thread pool and allocator), and ``--replicas``
  processes per configuration average out the memory-layout luck of a single session (+-2-3% here).
- All processes start, create their session (creation time = median of 5, after one untimed creation that
  warms the file cache) and warm up; then the parent runs *rounds*: in each round every process, in a
  shuffled order, runs the model ``--runs-per-visit`` times while the others wait blocked on a pipe. Only one
  runs at a time, and slow drift of the machine hits every configuration alike within a round.
- Speed-up of a configuration = median over rounds of (baseline time / its time) in the same round, with a
  95% bootstrap interval over rounds. The issue's target, "the fused graph reaches >= 95% of the speed-up
  ORT_ENABLE_EXTENDED gets", is checked as margin = (fused - 1) - 0.95 * (extended - 1) >= 0.
- A profiled pass (ORT's profiler; same processes-per-configuration and interleaving, first batch size) sums
  kernel time per op type, which says where the difference comes from (the Relu / Add kernels each graph runs).
- A single-layer check times four resnet50 conv shapes fused and unfused (one process, interleaved), the
  kernels' cost without a whole model's layout luck.

    PYTHONPATH=. python benchmarks/fusion_bench.py                        # resnet50 224x224, batches 1 and 8
    PYTHONPATH=. python benchmarks/fusion_bench.py --threads 1 --name fusion_bench_threads1
    PYTHONPATH=. python benchmarks/fusion_bench.py --arch resnet18 --input-size 64 --rounds 3 --replicas 1 \
        --profile-runs 2 --name smoke --out-dir /tmp                     # smoke test (~30 s)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CONFIGS = ["unfused/disable", "fused/disable", "unfused/extended", "unfused/all", "fused/all"]
BASE, FUSED, EXT, ALL, FUSED_ALL = CONFIGS
TARGET_SHARE = 0.95


# ----------------------------------------------------------------------------------------------- worker side
def worker(args) -> None:
    """One configuration in its own process. Prints {"session_create_s"} once ready, then answers each
    ``run K`` line on stdin with {"times": [...]} (seconds) until ``quit`` or EOF. With ``--profile`` the
    session runs under ORT's profiler and, at ``quit``, prints {"kernel_ms": {op type: ms per run}}."""
    import numpy as np
    import onnxruntime as ort

    from resnet_deploy.backends.onnxruntime import session_options
    from resnet_deploy.bench.stats import WallTimer, measure

    def create(profile: bool = False):
        so = session_options(args.level, threads=args.threads, spinning=args.spinning)
        if profile:
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(tempfile.gettempdir()) / f"fusion_bench_{os.getpid()}")
        return ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])

    create()  # untimed: warms the file cache and ORT's one-time initialisation
    creations = []
    for _ in range(1 if args.profile else 5):
        start = time.perf_counter()
        session = create(args.profile)
        creations.append(time.perf_counter() - start)
    feed = {session.get_inputs()[0].name:
            np.random.default_rng(0).standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)}
    for _ in range(args.warmup):
        session.run(None, feed)
    print(json.dumps({"session_create_s": statistics.median(creations)}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        timed = measure(lambda: session.run(None, feed), WallTimer(), warmup=0, iters=int(cmd[1]))
        print(json.dumps({"times": timed.samples_s}), flush=True)
    if args.profile:
        print(json.dumps({"kernel_ms": kernel_ms(Path(session.end_profiling()), skip=args.warmup)}), flush=True)


def kernel_ms(profile: Path, skip: int) -> dict:
    """Kernel time per op type, ms per run: per node the median over the runs after ``skip`` warm-up runs,
    summed over the nodes of each op type. Deletes the profile file."""
    per_node = defaultdict(list)
    for e in json.loads(profile.read_text()):
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            per_node[(e["name"], e["args"]["op_name"])].append(e["dur"])
    profile.unlink()
    by_op = defaultdict(float)
    for (_, op), durs in per_node.items():
        by_op[op] += statistics.median(durs[skip:] or durs) / 1e3
    return dict(by_op)


class Worker:
    def __init__(self, config: str, model: Path, batch: int, args, profile: bool = False):
        cmd = [sys.executable, __file__, "--worker", "--model", str(model), "--level", config.split("/")[1],
               "--batch", str(batch), "--size", str(args.input_size), "--warmup", str(args.warmup)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if args.spinning:
            cmd += ["--spinning"]
        if profile:
            cmd += ["--profile"]
        self.config = config
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.config} exited with {self.proc.wait()}")
        return json.loads(line)

    def run(self, k: int) -> list[float]:
        self.proc.stdin.write(f"run {k}\n")
        return self.read()["times"]

    def close(self) -> dict | None:
        """Ends the worker; returns its last report (the kernel profile of a ``--profile`` worker)."""
        last = None
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            line = self.proc.stdout.readline()
            last = json.loads(line) if line.strip() else None
        except (BrokenPipeError, OSError, ValueError):
            pass
        self.proc.wait(timeout=60)
        return last


def start_workers(models: dict, batch: int, args, profile: bool = False) -> tuple[list[Worker], dict]:
    """``--replicas`` processes per configuration, started one after the other: each session creation is
    timed while the workers already started sit idle, blocked on their pipes."""
    workers, creation = [], defaultdict(list)
    try:
        for c in CONFIGS:
            for _ in range(args.replicas):
                workers.append(Worker(c, models[c.split("/")[0]], batch, args, profile))
                creation[c].append(workers[-1].read()["session_create_s"])
    except BaseException:
        for w in workers:
            w.proc.kill()
        raise
    return workers, creation


def interleave(workers: list[Worker], rounds: int, runs_per_visit: int, seed: int, label: str):
    """Rounds in which every worker, in a shuffled order, runs the model while the others wait. Returns the
    per-round times (config -> mean over its replicas of the visit median) and every run's time by config."""
    rng = random.Random(seed)
    per_round, runs = [], defaultdict(list)
    for i in range(rounds):
        order = workers[:]
        rng.shuffle(order)
        per = defaultdict(list)
        for w in order:
            times = w.run(runs_per_visit)
            runs[w.config] += times
            per[w.config].append(statistics.median(times))
        per_round.append({c: statistics.fmean(v) for c, v in per.items()})
        if (i + 1) % max(1, rounds // 5) == 0:
            print(f"  {label}: round {i + 1}/{rounds}", file=sys.stderr, flush=True)
    return per_round, runs


# ----------------------------------------------------------------------------------------------- statistics
def bootstrap(rounds: list[dict], stat, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Point estimate and 95% percentile interval of ``stat(rounds)``, resampling whole rounds."""
    rng = random.Random(seed)
    point = stat(rounds)
    samples = sorted(stat([rounds[rng.randrange(len(rounds))] for _ in rounds]) for _ in range(n))
    return point, samples[int(0.025 * (n - 1))], samples[int(0.975 * (n - 1))]


def speedup(config: str):
    return lambda rounds: statistics.median(r[BASE] / r[config] for r in rounds)


def ratio(num: str, den: str):
    return lambda rounds: statistics.median(r[num] / r[den] for r in rounds)


def margin(rounds: list[dict]) -> float:
    """(fused speed-up - 1) - 0.95 * (EXTENDED speed-up - 1): >= 0 meets the target."""
    return (speedup(FUSED)(rounds) - 1) - TARGET_SHARE * (speedup(EXT)(rounds) - 1)


def verdict(m: tuple[float, float, float]) -> str:
    point, lo, _ = m
    if lo >= 0:
        return "met"
    if point >= 0:
        return "met by the point estimate, not outside the 95% interval"
    return "not met"


def summarise(batch: int, rounds: list[dict], runs: dict, creation: dict) -> dict:
    """``rounds``: one dict per round, config -> that round's time (mean over replicas, seconds)."""
    cis = {c: bootstrap(rounds, speedup(c)) for c in runs if c != BASE}
    m = bootstrap(rounds, margin)
    ext_gain = cis[EXT][0] - 1
    return {
        "batch": batch,
        "configs": {c: {"latency_ms_median": statistics.median(t) * 1e3,
                        "latency_ms_p90": sorted(t)[int(0.9 * (len(t) - 1))] * 1e3,
                        "images_per_s": batch / statistics.median(t), "runs": len(t),
                        "session_create_s": statistics.median(creation[c]),
                        "speedup": [1.0, 1.0, 1.0] if c == BASE else list(cis[c])}
                    for c, t in ((c, runs[c]) for c in CONFIGS)},
        "fused_share_of_extended_gain": (cis[FUSED][0] - 1) / ext_gain if ext_gain > 0 else None,
        "target_margin": list(m), "target": verdict(m),
        "fused_vs_extended": list(bootstrap(rounds, ratio(EXT, FUSED))),
        "all_vs_extended": list(bootstrap(rounds, ratio(EXT, ALL))),
        "fused_all_vs_all": list(bootstrap(rounds, ratio(ALL, FUSED_ALL))),
    }


def measure(batch: int, models: dict, args) -> dict:
    workers, creation = start_workers(models, batch, args)
    try:
        rounds, runs = interleave(workers, args.rounds, args.runs_per_visit, seed=batch, label=f"b{batch}")
    finally:
        for w in workers:
            w.close()
    return summarise(batch, rounds, dict(runs), creation) | {"rounds": len(rounds)}


def kernel_profile(models: dict, batch: int, args) -> dict:
    """Kernel time per op type (ms per run) from ORT's profiler, measured like the timings: a process per
    configuration and replica, interleaved rounds; the mean over replicas. Profiling adds a little overhead per
    node, so these numbers explain the timings, they are not timings."""
    workers, _ = start_workers(models, batch, args, profile=True)
    reports = defaultdict(list)
    try:
        interleave(workers, args.profile_runs, 1, seed=-batch, label=f"profile b{batch}")
    finally:
        for w in workers:
            last = w.close()
            if last and "kernel_ms" in last:
                reports[w.config].append(last["kernel_ms"])
    out = {}
    for c in CONFIGS:
        ops = dict.fromkeys(o for r in reports[c] for o in r)
        mean = {o: statistics.fmean(r.get(o, 0.0) for r in reports[c]) for o in ops}
        out[c] = {"total_ms": sum(mean.values()), **dict(sorted(mean.items(), key=lambda t: -t[1]))}
    return out


# ------------------------------------------------------------------------------------------- graph insight
def ort_optimized_ops(model: Path, level: str, tmp: Path) -> dict:
    """Op counts of the graph ORT runs at ``level`` (it saves its optimized model when asked)."""
    import onnx
    import onnxruntime as ort

    from resnet_deploy.backends.onnxruntime import session_options
    from resnet_deploy.onnx_graph import op_counts

    out = tmp / f"ort_{model.stem}_{level}.onnx"
    ort.InferenceSession(str(model), session_options(level, optimized_model_path=str(out)),
                         providers=["CPUExecutionProvider"])
    return op_counts(onnx.load(str(out)))


# ------------------------------------------------------------------------------------------- single layers
LAYER_SHAPES = [(64, 256, 1, 56), (64, 64, 3, 56), (128, 512, 1, 28), (512, 2048, 1, 7)]  # resnet50 convs
LAYER_KINDS = ["Conv", "Conv+Relu", "FusedConv(Relu)", "Conv+Add+Relu", "FusedConv(Relu, Z)"]


def layer_graph(kind: str, cin: int, cout: int, k: int, hw: int) -> bytes:
    """One conv layer of resnet50 (batch 1) as ``kind``; the summed input Z is a graph input."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((cout, cin, k, k)) * 0.05).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "B")]
    conv = {"pads": [k // 2] * 4}
    with_z = "Add" in kind or "Z" in kind
    if kind.startswith("FusedConv"):
        nodes = [helper.make_node("FusedConv", ["X", "W", "B"] + (["Z"] if with_z else []), ["Y"],
                                  domain="com.microsoft", activation="Relu", **conv)]
    else:
        nodes = [helper.make_node("Conv", ["X", "W", "B"], ["Y" if kind == "Conv" else "c"], **conv)]
        if with_z:
            nodes.append(helper.make_node("Add", ["c", "Z"], ["a"]))
        if "Relu" in kind:
            nodes.append(helper.make_node("Relu", ["a" if with_z else "c"], ["Y"]))
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, c, hw, hw]) for n, c in (("X", cin), ("Z", cout))]
    out = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, cout, hw, hw])
    graph = helper.make_graph(nodes, kind, io if with_z else io[:1], [out], inits)
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9
    return model.SerializeToString()


def layer_bench(args) -> list[dict]:
    """Single resnet50 conv layers, fused vs unfused, ORT optimizations disabled: one process (the graphs are
    tiny), ``--layer-rounds`` interleaved rounds in a shuffled order, medians. Isolates the kernels' cost from
    a whole model's layout luck."""
    import numpy as np
    import onnxruntime as ort

    from resnet_deploy.backends.onnxruntime import session_options
    from resnet_deploy.bench.stats import WallTimer

    rows, rng, timer = [], random.Random(0), WallTimer()
    for cin, cout, k, hw in LAYER_SHAPES:
        sessions = {kind: ort.InferenceSession(layer_graph(kind, cin, cout, k, hw),
                                               session_options("disable", threads=args.threads),
                                               providers=["CPUExecutionProvider"]) for kind in LAYER_KINDS}
        data = np.random.default_rng(1)
        arrays = {"X": data.standard_normal((1, cin, hw, hw)).astype(np.float32),
                  "Z": data.standard_normal((1, cout, hw, hw)).astype(np.float32)}
        feeds = {kind: {i.name: arrays[i.name] for i in s.get_inputs()} for kind, s in sessions.items()}
        times = defaultdict(list)
        for _ in range(5):
            for kind, s in sessions.items():
                s.run(None, feeds[kind])
        for _ in range(args.layer_rounds):
            order = LAYER_KINDS[:]
            rng.shuffle(order)
            for kind in order:
                times[kind].append(timer(lambda: sessions[kind].run(None, feeds[kind])))
        rows.append({"layer": f"{cin}->{cout} {k}x{k} at {hw}x{hw}",
                     **{kind: statistics.median(times[kind]) * 1e3 for kind in LAYER_KINDS}})
    return rows


# ------------------------------------------------------------------------------------------------- report
def fmt_ci(ci, pct: bool = False) -> str:
    if pct:
        return f"{ci[0]:+.1%} [{ci[1]:+.1%}, {ci[2]:+.1%}]"
    return f"{ci[0]:.3f}x [{ci[1]:.3f}, {ci[2]:.3f}]"


def markdown(res: dict) -> str:
    a = res["args"]
    lines = [f"# Fusion benchmark: {a['arch']} {a['input_size']}x{a['input_size']}, ONNX Runtime CPU", "",
             *([f"**{a['note']}**", ""] if a.get("note") else []),
             f"{res['cpu']}, {res['cores']} cores; onnxruntime {res['onnxruntime']}; intra-op threads "
             f"{a['threads'] or 'default'}, spinning {'on' if a['spinning'] else 'off'}. Each configuration in "
             f"its own process ({a['replicas']} per configuration), {a['rounds']} interleaved rounds of "
             f"{a['runs_per_visit']} run(s) per process after {a['warmup']} warm-up runs; {res['wall_s']:.0f} s "
             f"in all. Command: `{res['command']}`", "",
             "| graph | ORT level | batch | img/s | median ms | p90 ms | speed-up vs unfused/disable [95% CI] | "
             "session create s |", "|---|---|---|---|---|---|---|---|"]
    for s in res["batches"]:
        for c, r in s["configs"].items():
            g, lvl = c.split("/")
            lines.append(f"| {g} | {lvl} | {s['batch']} | {r['images_per_s']:.2f} | {r['latency_ms_median']:.1f} "
                         f"| {r['latency_ms_p90']:.1f} | {fmt_ci(r['speedup'])} | {r['session_create_s']:.3f} |")
    lines += ["", f"Target: fused graph (optimizations off) reaches >= {TARGET_SHARE:.0%} of the speed-up "
              "ORT_ENABLE_EXTENDED gets over the unfused graph, i.e. margin = (fused - 1) - 0.95 x (EXTENDED - 1) "
              ">= 0.", "",
              "| batch | EXTENDED gain | fused gain | margin [95% CI] | target | fused vs EXTENDED | ALL vs EXTENDED "
              "| fused+ALL vs ALL |", "|---|---|---|---|---|---|---|---|"]
    for s in res["batches"]:
        c = s["configs"]
        lines.append(f"| {s['batch']} | {c[EXT]['speedup'][0] - 1:+.1%} | {c[FUSED]['speedup'][0] - 1:+.1%} | "
                     f"{fmt_ci(s['target_margin'], pct=True)} | {s['target']} | {fmt_ci(s['fused_vs_extended'])} | "
                     f"{fmt_ci(s['all_vs_extended'])} | {fmt_ci(s['fused_all_vs_all'])} |")
    if res["profile"]["kernel_ms"]:
        lines += ["", "Kernel time per op type from ONNX Runtime's profiler "
                  f"(batch {res['profile']['batch']}, measured like the timings: {a['replicas']} process(es) per "
                  f"configuration, {a['profile_runs']} interleaved rounds; per node the median, summed per op type, "
                  "ms per run). The profiler adds overhead per "
                  "node: compare rows with each other, not with the timings above.", "",
                  "| configuration | total | " + " | ".join(res["profile"]["ops"]) + " |",
                  "|---|---|" + "---|" * len(res["profile"]["ops"])]
        for c, k in res["profile"]["kernel_ms"].items():
            lines.append(f"| {c} | {k['total_ms']:.1f} | " + " | ".join(f"{k[o]:.2f}" if o in k else "-"
                                                                         for o in res["profile"]["ops"]) + " |")
    if res.get("layers"):
        lines += ["", f"Single resnet50 conv layers, batch 1, optimizations off, one process, {a['layer_rounds']} "
                  "interleaved rounds, median ms (Z is a graph input here, so FusedConv copies it into its output "
                  "first):", "", "| layer | " + " | ".join(LAYER_KINDS) + " | saved by fusing Relu | saved by "
                  "fusing Add+Relu |", "|---|" + "---|" * (len(LAYER_KINDS) + 2)]
        for r in res["layers"]:
            lines.append(f"| {r['layer']} | " + " | ".join(f"{r[k]:.3f}" for k in LAYER_KINDS) +
                         f" | {1 - r['FusedConv(Relu)'] / r['Conv+Relu']:.0%} | "
                         f"{1 - r['FusedConv(Relu, Z)'] / r['Conv+Add+Relu']:.0%} |")
    lines += ["", "Op counts of the graph each configuration runs (ORT's saved optimized models):", ""]
    for name, ops in res["graph_ops"].items():
        lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in ops.items()))
    return "\n".join(lines) + "\n"


class Parser(argparse.ArgumentParser):
    """Bad input: one line on stderr that names the option and what it accepts, exit 2, nothing written."""

    def error(self, message: str):
        print(f"error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {low}")
        return value
    return parse


def batch_sizes(text: str) -> str:
    """Comma-separated batch sizes >= 1; kept as written (the results record it so)."""
    for part in text.split(","):
        int_at_least(1)(part.strip())
    return text


def main() -> None:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--input-size", type=int_at_least(32), default=224)
    p.add_argument("--batches", type=batch_sizes, default="1,8", help="comma-separated, e.g. 1,8")
    p.add_argument("--rounds", type=int_at_least(1), default=40, help="interleaved rounds per batch size")
    p.add_argument("--replicas", type=int_at_least(1), default=2, help="processes per configuration")
    p.add_argument("--runs-per-visit", type=int_at_least(1), default=1)
    p.add_argument("--warmup", type=int_at_least(0), default=3)
    p.add_argument("--threads", type=int_at_least(1), default=None, help="intra-op threads (default: ORT's choice)")
    p.add_argument("--spinning", action="store_true", help="ORT thread spinning (off by default, see REFERENCE)")
    p.add_argument("--profile-runs", type=int_at_least(0), default=10,
                   help="interleaved rounds of the profiled pass (first batch size; 0: skip)")
    p.add_argument("--layer-rounds", type=int_at_least(0), default=200,
                   help="rounds of the single-layer check (0: skip)")
    p.add_argument("--note", default="", help="a line written under the title (e.g. how loaded the machine was)")
    p.add_argument("--name", default="fusion_bench", help="results file stem")
    p.add_argument("--out-dir", type=Path, default=RESULTS, help="where results go (default: benchmarks/results)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--level", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    from resnet_deploy.errors import UserError
    from resnet_deploy.models.registry import get_arch

    try:
        get_arch(args.arch)
    except UserError as e:
        p.error(f"argument --arch: {e}")
    try:  # fail now, not after minutes of measuring
        args.out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=args.out_dir).close()
    except OSError as e:
        p.error(f"argument --out-dir: cannot write to {str(args.out_dir)!r} ({e.strerror})")

    import onnxruntime as ort

    from resnet_deploy.bench.report import cpu_model
    from resnet_deploy.fuse import fuse_file
    from resnet_deploy.onnx_graph import op_counts
    from resnet_deploy.models import load_model
    from resnet_deploy.exporter.onnx_export import export_onnx

    started = time.perf_counter()
    batches = [int(b) for b in args.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = load_model(args.arch, "random", 1000, seed=0).model  # randomised BN; weights do not change speed
        models = {"unfused": tmp / "unfused.onnx", "fused": tmp / "fused.onnx"}
        export_onnx(model, models["unfused"], (args.input_size, args.input_size))
        fres = fuse_file(models["unfused"], models["fused"], "onnxruntime")
        graph_ops = {"unfused (exported), optimizations off": fres.ops_before,
                     "fused (ours), optimizations off": op_counts(fres.model),
                     "unfused at ORT EXTENDED": ort_optimized_ops(models["unfused"], "extended", tmp),
                     "unfused at ORT ALL": ort_optimized_ops(models["unfused"], "all", tmp),
                     "fused (ours) at ORT ALL": ort_optimized_ops(models["fused"], "all", tmp)}
        results = []
        for b in batches:
            print(f"batch {b}: {len(CONFIGS) * args.replicas} processes, {args.rounds} rounds", file=sys.stderr)
            results.append(measure(b, models, args))
        kernels = kernel_profile(models, batches[0], args) if args.profile_runs else {}
        layers = layer_bench(args) if args.layer_rounds else []
    ops = list(dict.fromkeys(o for k in kernels.values() for o in k if o != "total_ms"))
    internal = ("worker", "model", "level", "batch", "size", "profile", "out_dir")
    res = {"args": {k: v for k, v in vars(args).items() if k not in internal},
           "command": shlex.join(["python", "benchmarks/fusion_bench.py", *sys.argv[1:]]),
           "cpu": cpu_model(), "cores": os.cpu_count(), "onnxruntime": ort.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "wall_s": time.perf_counter() - started,
           "batches": results, "profile": {"batch": batches[0], "ops": ops, "kernel_ms": kernels},
           "layers": layers, "graph_ops": graph_ops}
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out_dir / f"{args.name}.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
