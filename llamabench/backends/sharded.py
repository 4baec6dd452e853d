"""Data parallelism: each torch.distributed rank scores its share of every call; all ranks get all results.

Launch with ``torchrun --nproc-per-node N -m llamabench run ...``: requests are dealt round-robin
after sorting by size (so every rank gets similar work), each rank runs its share through its own
model replica, and ``all_gather_object`` puts every result back at its input position. Rank 0
alone prints and writes the tables, which equal a single-process run's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

from llamabench.backends.base import Backend, BackendWrapper, OnDone
from llamabench.errors import LlamabenchError, first_line
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, Request, RollingRequest, request_size

T = TypeVar("T")


class RankFailure(LlamabenchError):
    """Some rank failed: every rank raises this, with the same message, instead of waiting in a collective."""


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


def leave_ranks() -> None:
    """Leave the process group this process joined (torchrun warns of leaked resources otherwise)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    """The ranks of the default process group (1 when there is none)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def failure_line(exc: BaseException) -> str:
    """An exception as the one line every rank prints."""
    return first_line(exc) if isinstance(exc, LlamabenchError) else f"{type(exc).__name__}: {first_line(exc)}"


def agree(action: Callable[[], T], what: str) -> T:
    """Run ``action`` on every rank and meet once: when it failed on any rank, every rank raises the same
    :class:`RankFailure` naming the first failed rank, rather than the others waiting in their next collective."""
    if world_size() == 1:
        return action()
    result, failure = None, None
    try:
        result = action()
    except Exception as exc:  # noqa: BLE001  (shared with every rank below, then raised there)
        failure = failure_line(exc)
    _shared([(failure, None)], what)  # only the failures travel: each rank keeps its own result
    return result


def _shared(local: list, what: str) -> list:
    """All ranks' ``(failure, payload)`` lists, payloads only, in rank order; raises on any rank's failure."""
    gathered: list[list] = [[] for _ in range(world_size())]
    dist.all_gather_object(gathered, local)
    for rank, part in enumerate(gathered):
        for failure, _ in part:
            if failure is not None:
                raise RankFailure(f"rank {rank} of {len(gathered)} failed while {what}: {failure}")
    return [payload for part in gathered for _, payload in part]


def every_rank(value: T) -> list[T]:
    """``value`` from every rank, in rank order (just ``[value]`` without a process group)."""
    if world_size() == 1:
        return [value]
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


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

    def statistics(self) -> dict:
        # Every rank's counters (batches, cache hits, peak memory): a collective, called by every rank alike.
        return {**self.inner.statistics(), "world_size": self.world, "ranks": every_rank(self.inner.describe())}

    def _sharded(self, requests: Sequence[Request], compute: Callable[..., list], on_done: OnDone | None) -> list:
        by_size = sorted(range(len(requests)), key=lambda i: -request_size(requests[i]))
        mine = by_size[self.rank :: self.world]
        # This rank's finished batches are reported as they finish (at the caller's indices); the others' are not.
        report = None if on_done is None else lambda done, results: on_done([mine[i] for i in done], results)
        try:
            local = [
                (None, pair) for pair in zip(mine, compute([requests[i] for i in mine], on_done=report), strict=True)
            ]
        except Exception as exc:  # noqa: BLE001  (every rank raises it after the gather, none waits for this one)
            local = [(failure_line(exc), None)]
        results: list = [None] * len(requests)
        for index, result in _shared(local, "scoring its share of the requests"):
            results[index] = result
        return results
