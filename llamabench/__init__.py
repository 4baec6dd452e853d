"""llamabench: fast, reproducible evaluation of LLaMA-family checkpoints.

``llamabench.evaluate_checkpoint(model, tasks, ...)`` evaluates files as ``llamabench run`` does, and
``llamabench.evaluate_model(model, tokenizer, tasks, ...)`` a model in memory (plain, DDP or FSDP2); both return a
:class:`~llamabench.records.results.RunResult`. ``llamabench.LlamabenchCallback`` evaluates during a transformers
``Trainer``'s training. They are imported on first use, so ``import llamabench`` stays light.
"""

__version__ = "0.3.0"

_LAZY = {
    "evaluate_checkpoint": "llamabench.pipeline",
    "evaluate_model": "llamabench.training.in_memory",
    "LlamabenchCallback": "llamabench.training.trainer_callback",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llamabench' has no attribute {name!r}")
