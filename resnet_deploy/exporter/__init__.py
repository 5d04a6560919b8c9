"""The export stage: torch -> ONNX (dynamo) and the eager program, checked against eager."""
