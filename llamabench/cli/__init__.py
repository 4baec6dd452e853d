"""The command line: ``llamabench run|watch|tasks|runs|report|check``."""

from llamabench.cli.app import main

__all__ = ["main"]
