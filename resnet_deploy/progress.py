"""Progress of long steps. Library code wraps work in ``step(label)``; the CLI installs a live display."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator

log = logging.getLogger("resnet_deploy")

_reporter: Callable[[str], contextlib.AbstractContextManager] | None = None


def set_reporter(reporter: Callable[[str], contextlib.AbstractContextManager] | None) -> None:
    """Install a factory of context managers shown around each step (None: log only)."""
    global _reporter
    _reporter = reporter


@contextlib.contextmanager
def step(label: str) -> Iterator[Callable[[str], None]]:
    """Time a step, show it while it runs, and log how long it took. Yields ``detail(text)``, which shows how
    far the step has got (e.g. ``batch 3/64``) where the display can update in place (a no-op elsewhere)."""
    start = time.perf_counter()
    with (_reporter(label) if _reporter else contextlib.nullcontext()) as shown:
        update = getattr(shown, "update", None)
        yield (lambda text: update(f"{label}... {text}")) if callable(update) else (lambda text: None)
    log.info("%s: %.1f s", label, time.perf_counter() - start)
