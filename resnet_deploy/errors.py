"""One exception family for everything a user can get wrong.

The CLI prints a ``UserError`` as one line and exits 2; a ``CheckFailed`` (the artifact was built but does not
meet its own bar, e.g. broken parity) exits 1. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class ResnetDeployError(Exception):
    """Base of all errors the CLI reports in one line."""

    exit_code = 2


class UserError(ResnetDeployError):
    """Bad input: a value, file or option the user can fix. Exit code 2."""

    exit_code = 2


class CheckFailed(ResnetDeployError):
    """The work ran but its result failed a check (parity, accuracy, checksum). Exit code 1. ``warnings``: those
    of the failed run (e.g. a tiny calibration set), which the CLI shows before the error line."""

    exit_code = 1
    warnings: tuple = ()


class PrecisionFailed(CheckFailed):
    """An optional precision (fp16, bf16, an INT8 target) missed its bar or accuracy budget even after falling
    back: its artifact is left out, ``record`` (the numbers and attempts) goes into the manifest, and the run
    keeps everything already validated (``export``) or changes nothing (``quantize``). Exit code 1."""

    def __init__(self, precision: str, message: str, record: dict | None = None):
        super().__init__(message)
        self.precision = precision
        self.record = dict(record or {})


class MissingDependency(UserError):
    """An optional dependency (TensorRT, CUDA, onnxruntime-gpu...) is not installed."""

    def __init__(self, package: str, extra: str = "gpu", what: str = ""):
        purpose = f" for {what}" if what else ""
        self.package = package
        self.install = f"install it with pip install 'resnet-deploy[{extra}]'"
        super().__init__(f"{package} is not installed{purpose}: {self.install}")


def choices(values: Iterable[object]) -> str:
    """Format valid choices for an error message: ``a, b, c``."""
    return ", ".join(str(v) for v in values)


def unknown(what: str, value: object, valid: Iterable[object]) -> UserError:
    """The one-line error for a name that is not one of ``valid``: ``unknown arch 'x': choose one of a, b``."""
    return UserError(f"unknown {what} {value!r}: choose one of {choices(valid)}")
