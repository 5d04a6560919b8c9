"""Fusion: graph passes over ONNX (BN folding, Conv+Relu / Conv+Add+Relu into FusedConv, clean-up), a report,
and the same Conv+BN fold at the PyTorch level before export. See docs/fusion.md."""

from .core import FuseResult, fuse_file, fuse_model, passes_for
from .passes import PASSES, get_pass, pass_names

__all__ = ["PASSES", "FuseResult", "fuse_file", "fuse_model", "get_pass", "pass_names", "passes_for"]
