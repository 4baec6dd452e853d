"""The backend factory: the backend a run's configuration asks for, for one checkpoint (a directory, a ``.gguf``,
a hub id or the embedded default). Every rank loads its own copy, and all ranks agree on a failure."""

from __future__ import annotations

from llamabench.backends.hf.backend import HFBackend
from llamabench.config import RunConfig
from llamabench.distributed import agree


def load_backend(config: RunConfig, model: str | None) -> HFBackend:
    """The backend of ``model`` loaded as ``config`` says (device, dtype, device map, KV cache, batch size,
    context length, remote code)."""

    def load() -> HFBackend:
        return HFBackend.load(
            model,
            device=config.device,
            dtype=config.dtype,
            device_map=config.device_map,
            kv_cache=config.kv_cache,
            batch_size=config.batch_size,
            max_length=config.max_length,
            trust_remote_code=config.trust_remote_code,
        )

    return agree(load, "loading the model")
