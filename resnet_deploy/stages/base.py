"""What every stage shares besides the ``Reference``: the stage contract, recording a precision left out, and the
one open-update-verify-commit sequence for a stage list on an existing bundle.

A stage is a module with ``NAME`` and ``run(bundle, reference, options) -> Result``: ``bundle`` is a
``BundleWriter`` (a new bundle) or a ``BundleUpdate`` (an existing one), ``options`` its checked, immutable
options. A result may carry ``warnings`` and ``failures`` (optional precisions left out, one line each); a stage
whose artifact fails its check raises ``CheckFailed`` and nothing of the run is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import CheckFailed, PrecisionFailed


def record_failure(manifest: dict, failure: PrecisionFailed) -> str:
    """Note a precision left out: ``manifest["precision"][p]`` keeps its numbers and attempts plus ``failed`` (the
    one-line reason); the artifact itself was never added to the bundle. Returns the line for the result."""
    section = manifest.setdefault("precision", {})
    section[failure.precision] = {**section.get(failure.precision, {}), **failure.record, "failed": str(failure)}
    return str(failure)


def failures_of(results) -> list[str]:
    return [f for r in results for f in getattr(r, "failures", [])]


def warnings_of(results) -> list[str]:
    return [w for r in results for w in getattr(r, "warnings", [])]


def update_bundle(bundle_dir: "str | Path", stages: Sequence, *, force: bool = False, images=None, seed: int = 0,
                  fallback=None, before: "Callable[[object], None] | None" = None) -> tuple[list, dict]:
    """Run ``stages`` (``(stage module, options)`` pairs, in order) on an existing bundle, all or nothing.

    Open: lock the bundle and stage new files inside it (``BundleUpdate``). Update: build the run's ``Reference``
    from the bundle's own eager program (verified first) on ``images`` (else ``fallback`` data, else seeded inputs),
    after ``before(bundle)`` has checked what it must before anything is loaded, and run each stage. Verify: a
    check that fails raises and a precision left out fails the whole update, so the bundle stays exactly as it
    was. Commit: the staged files move in and the manifest, with the stages' warnings added, is replaced last.
    Returns the stage results and the new manifest."""
    from ..bundle import BundleUpdate, load_eager
    from ..preprocess import Preprocessing
    from .reference import build_reference

    with BundleUpdate(bundle_dir, force=force) as bundle:
        if before is not None:
            before(bundle)
        pre = Preprocessing.from_dict(bundle.manifest["preprocessing"])
        reference = build_reference(load_eager(bundle), pre, images, seed, fallback=fallback)
        results = [module.run(bundle, reference, options) for module, options in stages]
        failures, warnings = failures_of(results), warnings_of(results)
        if failures:  # all or nothing on an existing bundle: leave it exactly as it was
            failed = CheckFailed("; ".join(failures) + f"; bundle {str(bundle_dir)!r} left unchanged")
            failed.warnings = tuple(warnings)  # the CLI shows them before the error line
            raise failed
        if warnings:
            bundle.manifest["warnings"] = list(dict.fromkeys([*bundle.manifest.get("warnings", []), *warnings]))
    return results, bundle.manifest


def give_memory_back() -> None:
    """Between stages: collect what the last one dropped and hand freed heap back to the system (glibc's
    ``malloc_trim``; elsewhere a no-op). Large graphs and runtime sessions leave freed blocks that otherwise stay
    in the process and add to the next stage's peak resident memory."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def return_large_blocks() -> None:
    """For a process that builds a bundle and exits (the CLI's export, quantize, fuse and build): allocations of
    1 MiB or more come from their own mappings and go back to the system when freed. glibc otherwise raises that
    threshold as large blocks are freed and serves the next ones from its heap, where the transient buffers of
    one stage (a session's prepacked weights, a graph's serialised bytes) stay resident into the next. Not for
    processes that run inference in a loop (mapping each large buffer costs page faults)."""
    import ctypes

    m_mmap_threshold = -3
    try:
        ctypes.CDLL("libc.so.6").mallopt(m_mmap_threshold, 1 << 20)
    except (OSError, AttributeError):
        pass
