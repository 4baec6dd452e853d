"""The vLLM engine's options (``--engine vllm``): the name and the typed record of the flags it reads, shared by
its engine (``engine.py``) and its backend."""

from __future__ import annotations

from dataclasses import dataclass

NAME = "vllm"


@dataclass(frozen=True)
class VLLMOptions:
    """The flags the vLLM engine reads (docs/engines.md), with their defaults."""

    dtype: str | None = None
    max_length: int | None = None
    batch_size: int | str = "auto"
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1  # checked: vLLM runs one replica in one process
    gpu_memory_utilization: float | None = None
    enforce_eager: bool = False
    trust_remote_code: bool = False
