"""Precision stage: FP16 graphs and calibrated INT8 graphs (explicit Q/DQ) for TensorRT and ONNX Runtime.

Modules: ``fp16`` (conversion), ``data`` (calibration / validation sets), ``calibrate`` (our range methods and
the cache), ``quantize_trt`` / ``quantize_ort`` (Q/DQ placement per target), ``budget`` (accuracy budget and
sensitivity fallback), ``stage`` (the bundle stage used by ``export`` and ``resnet-deploy quantize``).
Heavy imports (onnx, onnxruntime, torch) happen inside functions.
"""

from .stage import PrecisionOptions, PrecisionPlan, PrecisionResult, prepare, run

__all__ = ["PrecisionOptions", "PrecisionPlan", "PrecisionResult", "prepare", "run"]
