"""The export pipeline: one request, one Reference, the stages in order."""
