"""The one place tests take their numerical tolerances from, per precision."""

from resnet_deploy import validate

# fp32: the export's own bar (cosine / agreement), plus an absolute bound for small random nets at 64x64.
FP32 = {"min_cosine": validate.FP32_MIN_COSINE, "min_agreement": 1.0, "max_rel_diff": 1e-4}
# bf16 (OpenVINO's default on CPUs with AVX-512 BF16 / AMX): 8 mantissa bits, coarser than fp16.
BF16 = {"min_cosine": 0.999, "min_agreement": 0.9}
FP16 = {"min_cosine": 0.9999, "min_agreement": 0.99, "max_top1_drop_points": 0.2}
INT8 = {"max_top1_drop_points": 1.0}
