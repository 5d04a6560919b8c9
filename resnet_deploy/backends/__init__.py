"""Backends share one small interface (``Runner``) so benchmarks and accuracy checks treat them alike.

Each backend lives in its own module and imports its heavy library (torch, onnxruntime, tensorrt) only inside
functions, so ``import resnet_deploy.backends`` works on a machine without any of them.
"""

from .base import Runner

__all__ = ["Runner"]
