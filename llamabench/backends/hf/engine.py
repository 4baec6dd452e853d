"""The transformers engine (``--engine hf``, the default): its options and how it loads a checkpoint."""

from __future__ import annotations

from dataclasses import asdict

from llamabench.backends.base import Backend
from llamabench.backends.engine import Engine
from llamabench.backends.hf.options import NAME, HFOptions


class HFEngine(Engine):
    name = NAME
    options_type = HFOptions

    def open(self, options: HFOptions, model: str | None) -> Backend:
        from llamabench.backends.hf.backend import HFBackend  # torch and transformers: loaded on use

        return HFBackend.load(model, **asdict(options))
