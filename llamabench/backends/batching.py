"""Token-budget batching with out-of-memory back-off."""

from __future__ import annotations

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
        """Apply ``forward`` to one batch, splitting it on out-of-memory until single items fail."""
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
            torch.cuda.empty_cache()
            half = len(items) // 2
            return self.run(items[:half], forward) + self.run(items[half:], forward)
        self.sizes_used[len(items)] += 1
        return results
