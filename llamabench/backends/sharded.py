"""Data parallelism: each torch.distributed rank scores its share of every call; all ranks get all results.

Launch with ``torchrun --nproc-per-node N -m llamabench run ...``: requests are dealt round-robin
after sorting by size (so every rank gets similar work), each rank runs its share through its own
model replica, and ``all_gather_object`` puts every result back at its input position. Rank 0
alone prints and writes the tables, which equal a single-process run's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from llamabench.backends.base import Backend, BackendWrapper, OnDone
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, Request, RollingRequest, request_size


def launched_distributed() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str | None) -> str:
    """Join the process group (NCCL on GPUs, gloo on CPU) and return this rank's device."""
    use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


class ShardedBackend(BackendWrapper):
    """Splits each call's requests across the ranks of the default process group."""

    def __init__(self, inner: Backend):
        super().__init__(inner)
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, bool]]:
        return self._sharded(requests, self.inner.loglikelihood, on_done)

    def loglikelihood_rolling(
        self, requests: Sequence[RollingRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, int]]:
        return self._sharded(requests, self.inner.loglikelihood_rolling, on_done)

    def generate(self, requests: Sequence[GenerationRequest], on_done: OnDone | None = None) -> list[str]:
        return self._sharded(requests, self.inner.generate, on_done)

    def describe(self) -> dict:
        return {**self.inner.describe(), "world_size": self.world}

    def _sharded(self, requests: Sequence[Request], compute: Callable[..., list], on_done: OnDone | None) -> list:
        by_size = sorted(range(len(requests)), key=lambda i: -request_size(requests[i]))
        mine = by_size[self.rank :: self.world]
        # This rank's finished batches are reported as they finish (at the caller's indices); the others' are not.
        report = None if on_done is None else lambda done, results: on_done([mine[i] for i in done], results)
        local = list(zip(mine, compute([requests[i] for i in mine], on_done=report), strict=True))
        gathered: list[list] = [[] for _ in range(self.world)]
        dist.all_gather_object(gathered, local)
        results: list = [None] * len(requests)
        for index, result in (pair for part in gathered for pair in part):
            results[index] = result
        return results
