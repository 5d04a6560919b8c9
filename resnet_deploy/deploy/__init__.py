"""Using a bundle outside this tool: the Python runtime (``runtime.load``) and the Triton model repository."""
