"""Using a bundle outside this tool: the Triton model repository."""
