"""The transformers engine's options (``--engine hf``): the name and the typed record of the flags it reads, shared by
its engine (``engine.py``) and its backend."""

from __future__ import annotations

from dataclasses import dataclass

NAME = "hf"


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
