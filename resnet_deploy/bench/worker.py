"""One benchmark case in its own process: ``python -m resnet_deploy.bench.worker JOB.json``.

Each backend runs in a fresh process, one after the other, so no runtime's threads (ONNX Runtime spins its
workers by default), caches or allocator state can slow down the next one, and the process's peak RSS is the
backend's own peak host memory. The worker reports progress as JSON lines on stdout and writes
``result.json`` plus the logits of the accuracy inputs (``logits_b<batch>.npy``) into the job's folder.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..validate import run_batches
from .stats import CudaEventTimer, Measurement, WallTimer, measure


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    Linux: ``VmHWM`` of /proc/self/status, which starts afresh at exec. ``ru_maxrss`` does not: it keeps the
    parent's RSS at fork time, so a worker started from a big process would report the parent's memory.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timing_batch(shape: list[int], batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *shape), dtype=np.float32)


def run_case(runner, batches: list[int], input_shape: list[int], *, warmup: int, iters: int | None,
             duration_s: float | None, timer: Callable, seed: int = 0, accuracy_inputs: np.ndarray | None = None,
             emit: Callable[[dict], None] = lambda e: None, mode: str = "latency") -> tuple[list[dict], dict]:
    """Time an active ``runner`` at each batch size with ``timer``, then run the accuracy inputs in chunks of
    that batch size. Returns per-batch summaries (with raw samples) and the logits per batch size.

    ``latency``: one request at a time, each call timed. ``throughput``: rounds of requests handed to
    ``runner.infer_many`` (as many in flight as the runtime wants), each round timed; the row's latencies are
    per request (round time / requests), its throughput images per second over all rounds.
    """
    rows, logits = [], {}
    per_round = max(4, 2 * runner.in_flight) if mode == "throughput" else 1
    for b in batches:
        if iters != 0:
            x = timing_batch(input_shape, b, seed)
            call = (lambda: runner.infer(x)) if per_round == 1 else (lambda: runner.infer_many([x] * per_round))
            rounds = None if iters is None else -(-iters // per_round)
            emit({"event": "batch", "batch": b, "iters": rounds, "duration_s": duration_s})
            m = measure(call, timer, warmup=-(-warmup // per_round), iters=rounds, duration_s=duration_s,
                        on_iter=lambda i: emit({"event": "iter", "batch": b, "done": i}) if i % 5 == 0 else None)
            per_request = Measurement([t / per_round for t in m.samples_s], m.warmup)
            rows.append({"batch": b, "mode": mode, **per_request.summary(b), "samples_s": per_request.samples_s,
                         "requests_per_round": per_round, "in_flight": runner.in_flight})
        if accuracy_inputs is not None:
            logits[b] = run_batches(runner, accuracy_inputs, b)
    return rows, logits


def choose_timer(runner, gpu: bool):
    """CUDA events on a GPU backend (when torch sees CUDA), else the host clock; both synchronise."""
    if gpu:
        try:
            import torch

            if torch.cuda.is_available():
                return CudaEventTimer(sync=runner.synchronize)
        except ImportError:
            pass
    return WallTimer(sync=runner.synchronize)


def main(job_path: str) -> int:
    from ..errors import ResnetDeployError
    from .runners import GPU_BACKENDS, Case, make_runner

    job = json.loads(Path(job_path).read_text())
    out = Path(job["out_dir"])

    def emit(event: dict) -> None:
        print(json.dumps(event), flush=True)

    try:
        case = Case.from_dict(job["case"])
        acc = np.load(job["accuracy_inputs"]) if job.get("accuracy_inputs") else None
        mode = job.get("mode", "latency")
        runner = make_runner(case, Path(job["bundle"]), job.get("threads"), job.get("device", "cpu"),
                             job.get("spinning", True), work_dir=out, mode=mode,
                             max_batch=max(job["batches"], default=None))
        t0 = time.perf_counter()
        emit({"event": "activate"})
        with runner:
            activate_s = time.perf_counter() - t0
            gpu = case.backend in GPU_BACKENDS or str(job.get("device", "cpu")).startswith("cuda")
            timer = choose_timer(runner, gpu)
            rows, logits = run_case(runner, job["batches"], job["input_shape"], warmup=job["warmup"],
                                    iters=job["iters"], duration_s=job.get("duration_s"), timer=timer,
                                    seed=job.get("seed", 0), accuracy_inputs=acc, emit=emit, mode=mode)
            describe = {**runner.describe(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}
        for b, y in logits.items():
            np.save(out / f"logits_b{b}.npy", y)
        result = {"rows": rows, "runner": describe, "timer": timer.kind, "activate_s": activate_s,
                  "peak_host_memory_mb": peak_rss_mb()}
    except ResnetDeployError as e:
        result = {"error": str(e), "exit_code": e.exit_code}
    except FileNotFoundError as e:  # an artifact vanished after the parent checked it
        result = {"error": f"{Path(e.filename or '?').name} could not be read ({e.strerror}): run resnet-deploy info "
                           f"{job['bundle']} to check every file", "exit_code": 1}
    except Exception as e:  # a bug or a runtime failure: keep the traceback for the report
        result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(), "exit_code": 3}
    (out / "result.json").write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
