"""Token-budget batching with out-of-memory back-off."""

from __future__ import annotations

import gc
import resource
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from llamabench.errors import LlamabenchError

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchPolicy:
    """Groups length-sorted items into batches of at most ``token_budget`` padded tokens.

    ``max_items`` fixes the batch size instead (``--batch-size N``). With ``auto``, an
    out-of-memory batch is split in two and the budget halved for the rest of the run.
    """

    token_budget: int
    max_items: int | None = None
    sizes_used: Counter = field(default_factory=Counter)

    def plan(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Batches of indices into ``lengths``, longest first (so the first batch shows any OOM early).

        Each batch is formed when it is asked for, so a budget cut by an out-of-memory split applies to
        every later batch instead of each of them failing and splitting in turn.
        """
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and self._fits(end - start + 1, lengths[order[start]]):
                end += 1
            yield order[start:end]
            start = end

    def _fits(self, n_items: int, longest: int) -> bool:
        if self.max_items is not None:
            return n_items <= self.max_items
        return n_items * longest <= self.token_budget

    def run(self, items: list[T], forward: Callable[[list[T]], list[R]]) -> list[R]:
        """Apply ``forward`` to one batch, splitting it on out-of-memory until single items fail.

        The halves run only after the failed attempt's exception, and with it the traceback that holds the
        failed batch's tensors, is gone: retrying inside the ``except`` block would keep them allocated.
        """
        results = self._attempt(items, forward)
        if results is not None:
            return results
        release_memory()
        half = len(items) // 2
        return self.run(items[:half], forward) + self.run(items[half:], forward)

    def _attempt(self, items: list[T], forward: Callable[[list[T]], list[R]]) -> list[R] | None:
        """``forward(items)``, or None when it ran out of memory (the batch limit is then shrunk)."""
        try:
            results = forward(items)
        except torch.OutOfMemoryError as exc:
            if len(items) == 1:
                raise LlamabenchError(
                    "out of GPU memory on a single sequence; use a smaller --max-length, --dtype bfloat16 "
                    "or a larger GPU"
                ) from exc
            if self.max_items is None:
                self.token_budget = max(1, self.token_budget // 2)
            else:
                self.max_items = max(1, len(items) // 2)
            return None
        self.sizes_used[len(items)] += 1
        return results


def release_memory() -> None:
    """Free what a failed batch left: cyclic garbage, then (on a GPU) the allocator's cached blocks."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def peak_memory(device: torch.device) -> dict:
    """The most memory this run has held: the GPU allocator's peak on CUDA, else the process's peak RSS."""
    if device.type == "cuda":
        return {"bytes": torch.cuda.max_memory_allocated(device), "measure": "torch.cuda.max_memory_allocated"}
    # ru_maxrss is in KiB on Linux; it counts the whole process (weights, Python, tokenizer), not activations only.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"bytes": peak, "measure": "process peak RSS (getrusage ru_maxrss), whole process"}
