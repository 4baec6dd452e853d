"""Deterministic shards: ``--shard I/N`` evaluates a fixed, size-balanced part of every task's documents.

The split depends only on the prepared documents (their requests' sizes and their positions in the task), never
on hash seeds, dict order, the machine or the time, so every machine of a Slurm array computes the same split and
a rerun of a shard evaluates the same documents (its finished requests come back from the request cache). Every
document is rendered as in the unsharded run (few-shot examples are drawn per document from the whole pool), and a
shard runs only its own; ``llamabench merge`` joins the shards into the unsharded run.

Shards are numbered from 0: ``--shard 0/4`` .. ``--shard 3/4``; ``--shard auto`` reads a Slurm array job's
variables (``shard_spec.py`` parses the flag).

    >>> split_documents([[5, 2, 4, 3]], 2)  # one task of four documents, their sizes; two shards
    [[[0, 1]], [[2, 3]]]
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence


def split_documents(sizes: Sequence[Sequence[int]], count: int) -> list[list[list[int]]]:
    """Each shard's documents of each task: ``result[shard][task]`` lists positions into ``sizes[task]`` (the
    size of each document of each task, e.g. the characters of its requests), ascending.

    Longest first, each document goes to the shard with the least work so far (ties: the lower shard); documents
    are taken in order of size, then task, then position, so the split is a function of the sizes alone. The work
    is balanced over all tasks together: a task with fewer documents than shards does not land on shard 0 alone.
    """
    order = sorted(
        ((size, task, position) for task, docs in enumerate(sizes) for position, size in enumerate(docs)),
        key=lambda item: (-item[0], item[1], item[2]),
    )
    loads = [(0, shard) for shard in range(count)]
    result: list[list[list[int]]] = [[[] for _ in sizes] for _ in range(count)]
    for size, task, position in order:
        load, shard = heapq.heappop(loads)
        result[shard][task].append(position)
        heapq.heappush(loads, (load + size, shard))
    for shard in result:
        for positions in shard:
            positions.sort()
    return result
