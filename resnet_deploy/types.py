"""Enums shared by every stage: precisions and targets are never free strings."""

from __future__ import annotations

import enum

from .errors import UserError, choices, unknown


class _ChoiceEnum(str, enum.Enum):
    """A string enum that parses user input with a one-line error naming the valid choices."""

    @classmethod
    def parse(cls, value: "str | _ChoiceEnum", what: str | None = None):
        if isinstance(value, cls):
            return value
        text = str(value).strip().lower()
        for member in cls:
            if member.value == text:
                return member
        label = what or cls.__name__.lower()
        raise unknown(label, value, (m.value for m in cls))

    @classmethod
    def parse_list(cls, text: str, what: str | None = None) -> list:
        """Parse a comma-separated list, keeping order and dropping duplicates."""
        out: list = []
        for part in str(text).split(","):
            if part.strip():
                member = cls.parse(part, what)
                if member not in out:
                    out.append(member)
        if not out:
            raise UserError(f"empty {what or cls.__name__.lower()} list: choose from {choices(m.value for m in cls)}")
        return out

    def __str__(self) -> str:
        return self.value


class Precision(_ChoiceEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"  # TensorRT: model.bf16.onnx; OpenVINO: the fp32 graph run with bf16 inference precision
    INT8 = "int8"


class Target(_ChoiceEnum):
    """Which runtime a graph is shaped for."""

    PORTABLE = "portable"  # standard ONNX ops only: TensorRT and any other runtime
    ONNXRUNTIME = "onnxruntime"  # may use com.microsoft ops (FusedConv) and ORT-friendly INT8 (U8S8)
    TENSORRT = "tensorrt"  # TensorRT rules (symmetric int8 Q/DQ placement)
    OPENVINO = "openvino"  # OpenVINO IR (.xml + .bin) for OpenVINO's CPU runtime and Triton's openvino backend


class HardwareCompat(_ChoiceEnum):
    """Which GPUs a TensorRT plan may run on (TensorRT's hardware-compatibility level)."""

    NONE = "none"  # only the GPU model it was built on
    AMPERE_PLUS = "ampere+"  # any Ampere or newer GPU (compute capability >= 8.0)
    SAME_CC = "same-cc"  # any GPU with the same compute capability


class EngineMode(_ChoiceEnum):
    """Whether ``export`` builds TensorRT plans: when possible, always (fail without a GPU), or never."""

    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


class CalibMethod(_ChoiceEnum):
    """How an activation range is chosen from the calibration histogram (see docs/precision.md)."""

    MINMAX = "minmax"
    PERCENTILE = "percentile"
    ENTROPY = "entropy"
    MSE = "mse"
