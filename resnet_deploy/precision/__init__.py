"""Precision stage: FP16 / BF16 graphs (mixed precision) and calibrated INT8 graphs (explicit Q/DQ) for TensorRT,
ONNX Runtime and OpenVINO.

Modules: ``reduced`` (fp16 / bf16 conversion and its emulation), ``fallback`` (which nodes stay fp32), ``mixed``
(their part of the stage), ``data`` (calibration / validation sets), ``calibrate`` (our range methods and the
cache), ``quantize_trt`` / ``quantize_ort`` (Q/DQ placement per target), ``budget`` (accuracy budget and
sensitivity fallback), ``stage`` (the bundle stage used by ``export`` and ``resnet-deploy quantize``).
Heavy imports (onnx, onnxruntime, torch) happen inside functions.
"""

from .stage import PrecisionOptions, PrecisionPlan, PrecisionResult, prepare, run

__all__ = ["PrecisionOptions", "PrecisionPlan", "PrecisionResult", "prepare", "run"]
