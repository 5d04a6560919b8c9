"""The OpenVINO stage: IR of the bundle's fp32 and INT8 graphs, checked in OpenVINO."""
