"""A model sharded with FSDP2 (``torch.distributed.fsdp.fully_shard``) over the ranks of the process group.

Each layer's weights are gathered from every rank in that layer's forward, so every rank must run the same
forwards in the same order: every rank runs every request, in the same batches, and all get the same results.
Two things make that hold. The token budget of ``--batch-size auto`` is the smallest over the ranks (each rank
measures its own free memory), so all ranks plan the same batches. And scoring runs the model's body and head
directly (not its ``forward``), so the root module's own weights (embeddings, final norm, head) are gathered
explicitly before each call: FSDP gathers them only in the root's ``forward``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from llamabench.backends.base import BackendWrapper, OnDone
from llamabench.backends.hf.backend import HFBackend
from llamabench.distributed import agree, every_rank
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, RollingRequest


class FullyShardedBackend(BackendWrapper):
    """Runs ``inner`` (an HFBackend over an FSDP2 root module) on every rank in lockstep."""

    def __init__(self, inner: HFBackend):
        super().__init__(inner)
        self.root = inner.model
        # FSDP decides which module is its root in the first forward; running a layer first would make that layer
        # the root. One token through the root's forward settles it before scoring calls layers directly.
        with torch.no_grad():
            self.root(input_ids=torch.tensor([[inner.prefix_token]], device=inner.device), use_cache=False)
        if inner.policy.token_budget:
            budget = torch.tensor([inner.policy.token_budget], dtype=torch.long)
            dist.all_reduce(budget, op=dist.ReduceOp.MIN)
            inner.policy.token_budget = int(budget)

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, bool]]:
        return self._together(self.inner.loglikelihood, requests, on_done)

    def loglikelihood_rolling(
        self, requests: Sequence[RollingRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, int]]:
        return self._together(self.inner.loglikelihood_rolling, requests, on_done)

    def generate(self, requests: Sequence[GenerationRequest], on_done: OnDone | None = None) -> list[str]:
        return self._together(self.inner.generate, requests, on_done)

    def statistics(self) -> dict:
        return {**self.inner.statistics(), "fsdp": True, "ranks": every_rank(self.inner.describe())}

    def release(self) -> None:
        """Shard the root's weights again (training goes on with the memory it had)."""
        self.root.reshard()

    def _together(self, compute: Callable[..., list], requests: Sequence, on_done: OnDone | None) -> list:
        self.root.unshard()
        return agree(lambda: compute(requests, on_done=on_done), "running the sharded model")
