"""Benchmarks: every artifact of a bundle side by side with the eager model, each backend in its own process.

``run_bench(bundle, BenchConfig(...))`` returns a schema-2 report dict; ``report`` writes it as JSON,
markdown and PNG; ``gate`` compares it with a baseline for CI. Torch, ONNX Runtime and TensorRT are imported
only inside the worker processes and functions that need them.
"""

from .gate import GateResult, compare, gate, parse_percent
from .harness import BenchConfig, run_bench

__all__ = ["BenchConfig", "GateResult", "compare", "gate", "parse_percent", "run_bench"]
