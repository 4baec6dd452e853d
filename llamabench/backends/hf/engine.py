"""The transformers engine (``--engine hf``, the default): its options and how it loads a checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from llamabench.backends.base import Backend
from llamabench.backends.engine import Engine


@dataclass(frozen=True)
class HFOptions:
    """The flags the transformers engine reads (``llamabench run --help``)."""

    device: str | None
    device_map: str | None
    kv_cache: str
    dtype: str | None
    batch_size: int | str
    max_length: int | None
    trust_remote_code: bool


class HFEngine(Engine):
    name = "hf"
    options_type = HFOptions

    def open(self, options: HFOptions, model: str | None) -> Backend:
        from llamabench.backends.hf.backend import HFBackend  # torch and transformers: loaded on use

        return HFBackend.load(model, **asdict(options))
