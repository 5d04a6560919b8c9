"""Whether a plan, by its build record, can run on this machine: TensorRT, CUDA and GPU compatibility rules."""

from __future__ import annotations

import logging

from ..errors import UserError
from ..types import HardwareCompat
from .profile import REBUILD

log = logging.getLogger(__name__)


def _major(version) -> str:
    return str(version).split(".")[0]


def _vtuple(version) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in str(version).split("."))


# Where a plan built with BuilderFlag.VERSION_COMPATIBLE may run, as TensorRT's documentation states it (10.16:
# "Version Compatibility"; 11.1: "Engine Compatibility" > "Version Compatibility"). It runs on the TensorRT that built
# it or any later one of the same major version (11.0 -> 11.1 and later 11.x). Across a major version only these
# pairs are named: plans of 8.x run on 9.x and 10.x, plans of 9.x on 10.x, plans of 10.x on 11.x. Nothing runs on an
# older TensorRT, and both sides must be at least 8.6, the first release with version compatibility.
VERSION_COMPAT_SINCE = (8, 6)
VERSION_COMPAT_LATER_MAJORS = {8: (9, 10), 9: (10,), 10: (11,)}


def version_compat_problem(built, here) -> str | None:
    """Why TensorRT ``here`` cannot load a version-compatible plan built with TensorRT ``built``; None when it can."""
    if built is None or here is None:
        return None if built == here else f"TensorRT {here} (built with {built})"
    b, h = _vtuple(built), _vtuple(here)
    if b[:2] < VERSION_COMPAT_SINCE:
        return (f"TensorRT {here} (built with {built}, older than 8.6: version compatibility starts at 8.6, "
                "so only that exact version loads it)") if b != h else None
    later = VERSION_COMPAT_LATER_MAJORS.get(b[0], ())
    allowed = f"{b[0]}.x >= {built}" + "".join(f" or {m}.x" for m in later)
    if h < b:
        return f"TensorRT {here} is older than the {built} that built this version-compatible plan (runs on {allowed})"
    if h[0] != b[0] and h[0] not in later:
        return f"TensorRT {here} (a version-compatible plan built with {built} runs on {allowed})"
    return None


def plan_compat_problems(info: dict, env: dict) -> list[str]:
    """Why a plan (its manifest ``info``) cannot run in ``env`` (this machine); empty when it can.

    TensorRT: the exact version, or for a --version-compat plan what ``version_compat_problem`` allows (a later
    version of the same major, or the next major where TensorRT documents it: 8.x -> 9.x / 10.x, 9.x -> 10.x,
    10.x -> 11.x). CUDA: the same major version (TensorRT's wheel CUDA when recorded on both sides, else torch's).
    GPU: the same model and compute capability; with ampere+ any GPU of compute capability >= 8.0; with same-cc any
    GPU of the same compute capability.
    """
    problems = []
    built_trt, here_trt = info.get("tensorrt"), env.get("tensorrt")
    if info.get("version_compat"):
        problem = version_compat_problem(built_trt, here_trt)
        if problem:
            problems.append(problem)
    elif built_trt != here_trt:
        problems.append(f"TensorRT {here_trt} (built with {built_trt})")
    # CUDA: TensorRT's own (from its wheel) when both sides know it, else torch's runtime.
    key = "tensorrt_cuda" if info.get("tensorrt_cuda") and env.get("tensorrt_cuda") else "cuda"
    if _major(info.get(key)) != _major(env.get(key)):
        problems.append(f"CUDA {env.get(key)} (built with CUDA {info.get(key)})")
    level = HardwareCompat.parse(info.get("hardware_compat") or "none")
    cc_built, cc_here = str(info.get("compute_capability")), str(env.get("compute_capability"))
    if level is HardwareCompat.AMPERE_PLUS:
        if _vtuple(cc_here) < (8, 0):
            problems.append(f"GPU {env.get('gpu')} (compute capability {cc_here}; an ampere+ plan needs >= 8.0)")
    elif level is HardwareCompat.SAME_CC:
        if cc_here != cc_built:
            problems.append(f"GPU compute capability {cc_here} (built for {cc_built})")
    elif cc_here != cc_built or env.get("gpu") != info.get("gpu"):
        problems.append(f"GPU {env.get('gpu')} sm {cc_here} (built on {info.get('gpu')} sm {cc_built})")
    return problems


def check_plan_compat(info: dict | None, env: dict, plan: str) -> None:
    """Refuse, before deserializing, a plan built for another GPU / TensorRT / CUDA version."""
    if info is None:
        log.warning("%s has no build record (manifest or sidecar): cannot check it matches this machine", plan)
        return
    problems = plan_compat_problems(info, env)
    if problems:
        raise UserError(f"{plan} does not fit this machine: {'; '.join(problems)}: {REBUILD}")
