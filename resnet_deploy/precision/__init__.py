"""Precision stage: FP16 / BF16 graphs (mixed precision) and calibrated INT8 graphs (explicit Q/DQ) for TensorRT,
ONNX Runtime and OpenVINO.

Modules: ``reduced_convert`` (fp16 / bf16 conversion and its emulation), ``fp32_fallback`` (which nodes stay fp32),
``reduced_precision`` (their part of the stage), ``calibration_data`` (calibration / validation sets), ``calibrate``
(our range methods and the cache) with ``histogram``, ``quantize_trt`` / ``quantize_ort`` (Q/DQ placement per target)
with ``quantize_common`` (what both share) and ``residual_blocks`` (shortcuts, gates and heads), ``int8_budget``
(accuracy budget and sensitivity fallback), ``stage`` (the bundle stage used by ``export`` and ``resnet-deploy
quantize``).
Heavy imports (onnx, onnxruntime, torch) happen inside functions.
"""

from .stage import PrecisionOptions, PrecisionPlan, PrecisionResult, prepare, run

__all__ = ["PrecisionOptions", "PrecisionPlan", "PrecisionResult", "prepare", "run"]
