"""llamabench: fast, reproducible evaluation of LLaMA-family checkpoints."""

__version__ = "0.2.0"
