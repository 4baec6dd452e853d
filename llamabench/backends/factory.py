"""The backend factory: the backend a run's configuration asks for, for one checkpoint (a directory, a ``.gguf``,
a hub id or the embedded default) or a served model (a URL). Every rank opens its own, and all ranks agree on a
failure; whoever opens a backend closes it (``Backend.close``)."""

from __future__ import annotations

from llamabench.backends.base import Backend
from llamabench.backends.registry import resolve
from llamabench.config import RunConfig
from llamabench.distributed import agree


def load_backend(config: RunConfig, model: str | None) -> Backend:
    """The backend of ``model`` opened by its engine (``registry.py``) with the engine's options of ``config``."""
    engine, options = resolve(config, model)
    return agree(lambda: engine.open(options, model), engine.opening)
