"""The backend factory: the backend a run's configuration asks for, for one checkpoint (a directory, a ``.gguf``,
a hub id or the embedded default). Every rank loads its own copy, and all ranks agree on a failure."""

from __future__ import annotations

from llamabench.backends.base import Backend
from llamabench.backends.hf.backend import HFBackend
from llamabench.config import RunConfig
from llamabench.distributed import agree


def load_backend(config: RunConfig, model: str | None) -> Backend:
    """The backend of ``model`` loaded as ``config`` says (engine, device, dtype, device map, KV cache, batch
    size, context length, remote code, the vLLM engine's options)."""

    def load() -> Backend:
        if config.engine == "vllm":
            from llamabench.backends.vllm.backend import VLLMBackend  # imports vLLM, installed apart

            return VLLMBackend.load(
                model,
                dtype=config.dtype,
                max_length=config.max_length,
                batch_size=config.batch_size,
                tensor_parallel_size=config.tensor_parallel_size,
                gpu_memory_utilization=config.gpu_memory_utilization,
                enforce_eager=config.enforce_eager,
                trust_remote_code=config.trust_remote_code,
            )
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
