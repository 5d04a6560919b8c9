"""The TensorRT build stage: plans from the bundle's graphs, checked against the reference."""
