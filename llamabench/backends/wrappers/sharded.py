"""Data parallelism: each torch.distributed rank scores its share of every call; all ranks get all results.

Launch with ``torchrun --nproc-per-node N -m llamabench run ...``: requests are dealt round-robin
after sorting by size (so every rank gets similar work), each rank runs its share through its own
model replica, and ``all_gather_object`` puts every result back at its input position. Rank 0
alone prints and writes the tables, which equal a single-process run's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.distributed as dist

from llamabench.backends.base import Backend, BackendWrapper, OnDone
from llamabench.distributed import every_rank, failure_line, shared_results
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, Request, RollingRequest, request_size


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
        for index, result in shared_results(local, "scoring its share of the requests"):
            results[index] = result
        return results
