"""The runner interface, after Polygraphy: ``activate / infer / deactivate``, used as a context manager.

Runners never time themselves: the benchmark harness owns the clock and calls ``synchronize`` before reading it.
"""

from __future__ import annotations

import abc

import numpy as np


class Runner(abc.ABC):
    """Runs one model artifact. ``infer`` takes an NCHW float32 batch and returns logits as float32."""

    name: str = "runner"

    def __init__(self) -> None:
        self.is_active = False

    def activate(self) -> "Runner":
        """Load the model / create the session. Idempotent."""
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        """Release the session and any device memory."""
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; the result is a host float32 array of shape (N, num_classes)."""
        if not self.is_active:
            raise RuntimeError(f"{self.name}: infer() called before activate()")
        return self._infer(batch)

    @property
    def in_flight(self) -> int:
        """How many requests ``infer_many`` keeps in flight (1: one after the other)."""
        return 1

    def infer_many(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """Run several requests with as many in flight as the runtime wants (throughput mode); results in order.

        The default runs them one after the other, as a runtime without concurrent requests does."""
        return [self.infer(b) for b in batches]

    def synchronize(self) -> None:
        """Wait for queued device work; a no-op for host backends."""

    def describe(self) -> dict:
        """What really runs (providers, device, threads): recorded in reports."""
        return {"name": self.name}

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    @abc.abstractmethod
    def _activate(self) -> None: ...

    def _deactivate(self) -> None:
        """Default: nothing to release."""

    @abc.abstractmethod
    def _infer(self, batch: np.ndarray) -> np.ndarray: ...
