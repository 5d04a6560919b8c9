"""The TensorRT wing. Plain-Python plan facts at the bottom (``profile``, ``compat``, ``plan``, ``layers``), imported
by the TensorRT backend (``backends/tensorrt.py``, the only module that imports ``tensorrt``) and by the build
stage (``stage``) alike, so nothing imports upward.
"""
