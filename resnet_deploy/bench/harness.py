"""Run every selected case in its own worker process and assemble the report (``report.json`` schema 2)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import layout, validate
from ..bundle import find_artifacts, read_manifest, verified
from ..errors import CheckFailed, UserError
from ..types import Precision
from .report import SCHEMA_VERSION, machine_info, model_info
from .coverage import skipped_artifacts
from .runners import select_cases
from .stats import spread

log = logging.getLogger(__name__)

ISOLATION = ("each backend runs in its own fresh worker process (python -m resnet_deploy.bench.worker), one "
             "after the other")
QUIET_THREADS = ("--quiet-threads: thread spin-waiting off (ONNX Runtime session.intra_op/inter_op.allow_spinning=0, "
                 "OpenMP (torch) OMP_WAIT_POLICY=PASSIVE), for shared CI runners")
RUNTIME_DEFAULTS = "runtime defaults: every runtime threads and spin-waits as it ships, as its users run it"
DEFAULT_RANDOM_SAMPLES = 64  # enough to judge the precision bars (recommend.MIN_ACCURACY_SAMPLES)


@dataclass
class BenchConfig:
    """What to run and how to time it. ``iters`` or ``duration_s`` (the latter wins when both are set)."""

    backends: list[str] | None = None  # backend table names; None: every default backend runnable here
    precisions: list[Precision] | None = None
    batches: list[int] = field(default_factory=lambda: [1, 8, 32])
    warmup: int = 10
    iters: int | None = 100
    duration_s: float | None = None
    threads: int | None = None
    device: str = "auto"  # torch backends: auto (cuda when available), cpu, cuda
    images: str | None = None
    samples: int | None = None  # accuracy inputs: random count, or a cap on images
    seed: int = 0
    quiet_threads: bool = False  # spin-waiting off: steadier on a busy shared runner, slower on a quiet machine
    modes: list[str] = field(default_factory=lambda: ["latency"])  # latency and/or throughput

    @property
    def spinning(self) -> bool:
        return not self.quiet_threads

    def validate(self) -> None:
        from .runners import MODES

        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise UserError(f"--mode {','.join(self.modes)!r} is invalid: choose latency, throughput or both")
        if not self.batches or any(int(b) < 1 for b in self.batches):
            raise UserError(f"--batch {','.join(map(str, self.batches))} is invalid: batch sizes must be >= 1")
        if self.warmup < 0:
            raise UserError(f"--warmup {self.warmup} is invalid: it must be >= 0")
        if self.iters is not None and self.iters < 1 and self.duration_s is None:
            raise UserError(f"--iters {self.iters} is invalid: it must be >= 1")
        if self.duration_s is not None and self.duration_s <= 0:
            raise UserError(f"--duration {self.duration_s} is invalid: it must be > 0 seconds")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads {self.threads} is invalid: it must be >= 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"--device {self.device!r} is invalid: choose auto, cpu or cuda")
        if self.samples is not None and self.samples < 1:
            raise UserError(f"--samples {self.samples} is invalid: it must be >= 1")


def accuracy_inputs(manifest: dict, cfg: BenchConfig) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Inputs for the accuracy columns (``reference.make_inputs``, the builder every stage uses): preprocessed
    images (labels from an ImageFolder layout), or seeded standard-normal tensors (at least the largest batch,
    so every batch size runs full batches)."""
    from ..preprocess import Preprocessing
    from ..stages.reference import make_inputs

    pre = Preprocessing.from_dict(manifest["preprocessing"])
    n = cfg.samples or max(DEFAULT_RANDOM_SAMPLES, max(cfg.batches))
    data, labels, desc = make_inputs(pre, cfg.images, limit=cfg.samples, random_samples=n, seed=cfg.seed)
    if labels is not None and int(labels.max()) >= int(manifest.get("num_classes", 0)):
        raise UserError(f"--images {cfg.images!r} has {int(labels.max()) + 1} class folders but the model has "
                        f"{manifest.get('num_classes')} classes")
    return data, labels, desc + ("" if cfg.images is None or labels is not None else " (no labels)")


def accuracy_fields(logits: np.ndarray, reference: np.ndarray | None, labels: np.ndarray | None) -> dict:
    """The report's accuracy block; fields that do not apply are None."""
    acc = {"top1": None, "top5": None, "top1_agreement": None, "max_abs_diff": None, "cosine": None,
           "nonfinite": validate.nonfinite_summary(logits, "this backend")}  # kept below only when set
    if labels is not None:
        acc["top1"], acc["top5"] = (validate.topk_accuracy(logits, labels, k) for k in (1, 5))
    if reference is not None:
        p = validate.compare(reference, logits, "eager fp32", "this backend").to_dict()
        acc.update(top1_agreement=p["top1_agreement"], max_abs_diff=p["max_abs_diff"], cosine=p["cosine"],
                   spread_error=p["spread_error"], nonfinite=p["nonfinite"])
    if acc["nonfinite"] is None:  # an optional key: reports of finite runs keep the schema-2 shape exactly
        del acc["nonfinite"]
    return acc


def parse_modes(text: str) -> list[str]:
    """``latency``, ``throughput`` or ``both`` (the ``--mode`` option)."""
    from .runners import MODES

    value = str(text).strip().lower()
    if value == "both":
        return list(MODES)
    if value not in MODES:
        raise UserError(f"--mode {text!r} is invalid: choose latency, throughput or both")
    return [value]


def worker_env(spinning: bool) -> dict:
    """The worker's environment: this package first on the path; OpenMP told not to spin unless asked.

    On a loaded machine torch's spinning OpenMP threads collapse when a neighbour takes a core: each call runs many
    times slower than with OMP_WAIT_POLICY=PASSIVE (docs/benchmark.md, "Runtime defaults, or quiet threads")."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                                    os.environ.get("PYTHONPATH")]))}
    if not spinning:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def run_worker(job: dict, workdir: Path, on_event: Callable[[dict], None]) -> dict:
    """Run one worker process; returns its result (raises the worker's user error as one line)."""
    job_dir = Path(tempfile.mkdtemp(prefix="case-", dir=workdir))
    job = {**job, "out_dir": str(job_dir)}
    (job_dir / "job.json").write_text(json.dumps(job))
    env = worker_env(job.get("spinning", False))
    proc = subprocess.Popen([sys.executable, "-m", "resnet_deploy.bench.worker", str(job_dir / "job.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:
            try:
                on_event({**json.loads(line), "case": job["case"]})
            except json.JSONDecodeError:
                log.debug("worker: %s", line.rstrip())
        stderr = proc.stderr.read()
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    result_path = job_dir / "result.json"
    if not result_path.exists():
        raise CheckFailed(f"benchmark worker for {job['case']['backend']} {job['case']['precision']} died "
                          f"(exit {proc.returncode}): {stderr.strip().splitlines()[-1] if stderr.strip() else ''}")
    result = json.loads(result_path.read_text())
    if "error" in result:
        if result.get("traceback"):
            log.error("worker traceback:\n%s", result["traceback"])
        label = f"{job['case']['backend']} {job['case']['precision']}"
        if result["exit_code"] == 2:
            raise UserError(f"{label}: {result['error']}")
        raise CheckFailed(f"{label} failed: {result['error']}")
    result["logits"] = {int(p.stem.split("_b")[1]): np.load(p) for p in job_dir.glob("logits_b*.npy")}
    return result


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    from ..backends.table import cuda_available

    return "cuda" if cuda_available() else "cpu"


EAGER_FP32 = ("eager", Precision.FP32)


def _result_rows(results: dict, reference: dict, labels, with_accuracy: bool) -> list[dict]:
    rows = []
    for (case, mode), res in results.items():
        for r in res["rows"]:
            b = r["batch"]
            acc = accuracy_fields(res["logits"][b], reference.get(b), labels) if with_accuracy else None
            rows.append({"backend": case.backend, "precision": str(case.precision), "batch": b, "mode": mode,
                         "requests_per_round": r["requests_per_round"], "in_flight": r["in_flight"],
                         "artifact": case.artifact, "latency_ms": r["latency_ms"],
                         "throughput_ips": r["throughput_ips"], "iterations": r["iterations"],
                         "peak_host_memory_mb": res["peak_host_memory_mb"], "timer": res["timer"],
                         "runner": res["runner"], "accuracy": acc, "spread_ms": spread([s * 1e3 for s in r["samples_s"]]),
                         "samples_ms": [s * 1e3 for s in r["samples_s"]]})
    return rows


def _config_block(cfg: BenchConfig, batches: list[int], device: str, data_desc: str | None,
                  samples: int | None) -> dict:
    return {"batches": batches, "warmup": cfg.warmup, "iters": cfg.iters, "duration_s": cfg.duration_s,
            "threads": cfg.threads, "threads_note": "applied to every backend (torch.set_num_threads, ONNX Runtime "
            "intra_op_num_threads); None: each runtime's default, see results[].runner",
            "device": device, "isolation": ISOLATION, "modes": cfg.modes, "quiet_threads": cfg.quiet_threads,
            "spinning": cfg.spinning, "threading": QUIET_THREADS if cfg.quiet_threads else RUNTIME_DEFAULTS,
            "accuracy_inputs": data_desc, "accuracy_samples": samples,
            "accuracy_reference": f"eager fp32 (bundle {layout.EAGER_PROGRAM}) on CPU at the same batch size", "seed": cfg.seed}


def run_bench(bundle: "str | Path", cfg: BenchConfig, on_event: Callable[[dict], None] = lambda e: None,
              only: set[tuple[str, str, int, str]] | None = None, with_accuracy: bool = True) -> dict:
    """Benchmark the bundle's cases in each mode (or ``only`` those (backend, precision, batch, mode) keys) and
    return the report.

    Each case and mode runs in its own worker process, one after the other. Accuracy is measured against the
    eager fp32 model of the bundle on CPU at every batch size, on the same inputs.
    """
    from concurrent.futures import ThreadPoolExecutor

    cfg.validate()
    bundle = Path(bundle).absolute()
    manifest = read_manifest(bundle)
    cases, notes = select_cases(manifest, cfg.backends, cfg.precisions)
    with ThreadPoolExecutor(1) as pool:  # the machine's description imports torch (GPUs): while the workers run
        machine = pool.submit(machine_info)
        run = _run_cases(bundle, manifest, cases, cfg, on_event, only, with_accuracy)
        return {
            "schema_version": SCHEMA_VERSION,
            "machine": machine.result(),
            "model": model_info(bundle, manifest),
            "config": _config_block(cfg, run.batches, run.device, run.data_desc, run.samples),
            "notes": notes,
            "results": _result_rows(run.results, run.reference, run.labels, with_accuracy),
            "skipped": skipped_artifacts(manifest, cases, cfg.backends, cfg.precisions),
        }


@dataclass
class _Run:
    """What the workers of one run gave: results per (case, mode), eager's logits per batch (the accuracy
    reference), the accuracy inputs' labels, description and count, the device and the batch sizes."""

    results: dict
    reference: dict
    labels: np.ndarray | None
    data_desc: str | None
    samples: int | None
    device: str
    batches: list[int]


def _run_cases(bundle: Path, manifest: dict, cases: list, cfg: BenchConfig, on_event, only,
               with_accuracy: bool) -> _Run:
    """Each case and mode in its own worker, eager fp32 first (``run_bench``)."""
    for name in dict.fromkeys([c.artifact for c in cases] + find_artifacts(manifest, kind="torch-exported-program")):
        verified(bundle, manifest, name)  # a missing or altered file is one line here, not a worker traceback
    device = resolve_device(cfg.device)
    batches = sorted({int(b) for b in cfg.batches})
    plan = [(c, m, [b for b in batches if only is None or (str(c.backend), str(c.precision), b, m) in only])
            for c in cases for m in cfg.modes]
    plan = sorted(((c, m, bs) for c, m, bs in plan if bs),
                  key=lambda cmb: (cmb[0].backend, cmb[0].precision) != EAGER_FP32)
    if not plan:
        raise UserError("nothing to benchmark: no selected case matches")
    # eager fp32 timed on CPU doubles as the reference; otherwise (not selected, or on a GPU where TF32 may
    # be on) a separate CPU worker computes the reference logits
    eager_is_reference = device == "cpu" and (plan[0][0].backend, plan[0][0].precision) == EAGER_FP32
    labels = data_desc = samples = None
    results, reference = {}, {}
    with tempfile.TemporaryDirectory(prefix="resnet-deploy-bench-") as tmp:
        tmp = Path(tmp)
        base_job = {"bundle": str(bundle), "input_shape": [int(v) for v in manifest["input"]["shape"][1:]],
                    "warmup": cfg.warmup, "iters": cfg.iters, "duration_s": cfg.duration_s, "threads": cfg.threads,
                    "device": device, "seed": cfg.seed, "accuracy_inputs": None, "spinning": cfg.spinning}
        if with_accuracy:
            data, labels, data_desc = accuracy_inputs(manifest, cfg)
            samples = len(data)
            np.save(tmp / "accuracy_inputs.npy", data)
            base_job["accuracy_inputs"] = str(tmp / "accuracy_inputs.npy")
        if with_accuracy and not eager_is_reference:
            ref_case = select_cases(manifest, ["eager"], [Precision.FP32])[0][0]
            on_event({"event": "case", "case": ref_case.to_dict(), "label": "eager fp32 reference (accuracy only)"})
            reference = run_worker({**base_job, "case": ref_case.to_dict(), "batches": batches, "iters": 0,
                                    "device": "cpu"}, tmp, on_event)["logits"]
        for case, mode, bs in plan:
            label = case.label + ("" if cfg.modes == ["latency"] else f" ({mode})")
            on_event({"event": "case", "case": case.to_dict(), "label": label, "batches": bs})
            res = run_worker({**base_job, "case": case.to_dict(), "batches": bs, "mode": mode}, tmp, on_event)
            if with_accuracy and eager_is_reference and (case.backend, case.precision) == EAGER_FP32 and not reference:
                reference = res["logits"]
            results[(case, mode)] = res
    return _Run(results, reference, labels, data_desc, samples, device, batches)


def remeasure(report: dict, keys: set, on_event: Callable[[dict], None] = lambda e: None) -> dict:
    """Measure the (backend, precision, batch, mode) ``keys`` again with the settings recorded in ``report``."""
    c = report["config"]
    backends = list(dict.fromkeys(k[0] for k in keys))
    precisions = list(dict.fromkeys(Precision.parse(k[1]) for k in keys))
    modes = [m for m in ("latency", "throughput") if any(k[3] == m for k in keys)]
    cfg = BenchConfig(backends=backends, precisions=precisions, batches=sorted({k[2] for k in keys}),
                      warmup=c["warmup"], iters=c["iters"], duration_s=c["duration_s"], threads=c["threads"],
                      device=c["device"], seed=c["seed"], modes=modes,
                      quiet_threads=c.get("quiet_threads", not c.get("spinning", False)))  # schema 1: spinning
    return run_bench(report["model"]["bundle"], cfg, on_event=on_event, only=keys, with_accuracy=False)


def gate_against_baseline(report: dict, baseline: dict, max_regression: float, reference: str | None,
                          retries: int = 2, remeasure_suspects: bool = True,
                          on_event: Callable[[dict], None] = lambda e: None, **tolerances):
    """The CI gate workflow shared by ``bench --baseline`` and ``testing.assert_no_regression``: compare ``report``
    with ``baseline``, re-measure the suspect rows (with their reference rows) in fresh workers, and return the
    verdict and the final report (``bench.gate.gate``)."""
    from .gate import gate

    def rerun(keys: set) -> dict:
        on_event({"event": "remeasure", "rows": len(keys)})
        return remeasure(report, keys, on_event)

    return gate(baseline, report, rerun if remeasure_suspects else None, max_regression, reference,
                retries=retries, **tolerances)


def nonfinite_rows(report: dict) -> list[str]:
    """``backend precision batch N: what`` for every row whose outputs held NaN/Inf (never a pass)."""
    return [f"{r['backend']} {r['precision']} batch {r['batch']}: {r['accuracy']['nonfinite']}"
            for r in report["results"] if (r.get("accuracy") or {}).get("nonfinite")]
