"""The backend factory: the backend a run's configuration asks for, for one checkpoint (a directory, a ``.gguf``,
a hub id or the embedded default). Every rank loads its own copy, and all ranks agree on a failure."""

from __future__ import annotations

from llamabench.backends.base import Backend
from llamabench.backends.hf.backend import HFBackend
from llamabench.backends.server.url import is_server_url
from llamabench.config import RunConfig
from llamabench.distributed import agree


def load_backend(config: RunConfig, model: str | None) -> Backend:
    """The backend of ``model`` loaded as ``config`` says (engine, device, dtype, device map, KV cache, batch
    size, context length, remote code, the vLLM engine's options); a URL (``http://HOST:PORT/v1``) connects to the
    server there instead."""
    if is_server_url(model):
        return agree(lambda: _connect(config, model), "connecting to the server")

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


def _connect(config: RunConfig, url: str) -> Backend:
    from llamabench.backends.server.backend import ServerBackend
    from llamabench.backends.server.client import RetryPolicy

    return ServerBackend.connect(
        url,
        served_model=config.served_model,
        tokenizer=config.tokenizer,
        api_key_env=config.api_key_env,
        max_length=config.max_length,
        max_in_flight=config.max_concurrent_requests,
        policy=RetryPolicy(timeout=config.request_timeout, attempts=config.request_retries + 1),
    )
