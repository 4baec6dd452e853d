"""Deterministic shards: ``--shard I/N`` evaluates a fixed, size-balanced part of every task's documents.

The split depends only on the prepared documents (their requests' sizes and their positions in the task), never
on hash seeds, dict order, the machine or the time, so every machine of a Slurm array computes the same split and
a rerun of a shard evaluates the same documents (its finished requests come back from the request cache). Every
document is rendered as in the unsharded run (few-shot examples are drawn per document from the whole pool), and a
shard runs only its own; ``llamabench merge`` joins the shards into the unsharded run.

Shards are numbered from 0: ``--shard 0/4`` .. ``--shard 3/4``. ``--shard auto`` reads a Slurm array job's
``SLURM_ARRAY_TASK_ID`` minus ``SLURM_ARRAY_TASK_MIN`` (so ``--array=1-4`` works) of ``SLURM_ARRAY_TASK_COUNT``.

    >>> parse_shard("1/3")
    Shard(index=1, count=3)
    >>> split_documents([[5, 2, 4, 3]], 2)  # one task of four documents, their sizes; two shards
    [[[0, 1]], [[2, 3]]]
"""

from __future__ import annotations

import heapq
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llamabench.digits import environment_int
from llamabench.errors import LlamabenchError

AUTO = "auto"
_FORM = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (from 0) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> Shard:
    """``I/N`` (0 <= I < N), or ``auto`` read from the Slurm array variables of ``environ`` (default: this
    process's); raises a one-line :class:`LlamabenchError` naming ``--shard`` otherwise."""
    if text.strip() == AUTO:
        return _slurm_shard(os.environ if environ is None else environ)
    found = _FORM.fullmatch(text)
    if not found or not 0 <= int(found[1]) < int(found[2]):
        raise LlamabenchError(
            f"--shard {text} must be I/N with 0 <= I < N (shards count from 0: 0/4 .. 3/4), or auto in a Slurm array"
        )
    return Shard(int(found[1]), int(found[2]))


def _slurm_shard(environ: Mapping[str, str]) -> Shard:
    names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")
    missing = [name for name in names if name not in environ]
    if missing:
        raise LlamabenchError(
            f"--shard auto reads {' and '.join(names)} of a Slurm array job, and {', '.join(missing)} is not set "
            "here; run inside `sbatch --array`, or give --shard I/N"
        )
    task, count, first = (_slurm_number(environ, name) for name in (*names, "SLURM_ARRAY_TASK_MIN"))
    index = task - first
    if not 0 <= index < count:
        raise LlamabenchError(
            f"--shard auto: array task {environ['SLURM_ARRAY_TASK_ID']} (minimum {first}) is not one of "
            f"{count} consecutive tasks; submit a contiguous array (--array=0-{count - 1}), or give --shard I/N"
        )
    return Shard(index, count)


def _slurm_number(environ: Mapping[str, str], name: str) -> int:
    """A Slurm array variable as a whole number (SLURM_ARRAY_TASK_MIN: 0 when unset); one line naming it if it is
    not one in ASCII digits."""
    try:
        return environment_int(name, 0, environ)
    except LlamabenchError as exc:
        raise LlamabenchError(f"--shard auto: {exc}; run inside `sbatch --array`, or give --shard I/N") from None


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
