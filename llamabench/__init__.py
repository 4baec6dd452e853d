"""llamabench: fast, reproducible evaluation of LLaMA-family checkpoints."""

__version__ = "0.1.0"
