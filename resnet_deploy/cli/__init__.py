"""The ``resnet-deploy`` command line: thin wrappers that parse, call one library function, print a summary."""

from .main import main

__all__ = ["main"]
