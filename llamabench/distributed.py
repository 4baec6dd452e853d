"""The process group of a torchrun (or training) job: joining and leaving it, and the few collectives every
entry point needs (every rank agreeing on a failure, a value from every rank).

Launch with ``torchrun --nproc-per-node N -m llamabench run ...`` on one node, or with ``--nnodes``,
``--node-rank`` and a rendezvous address on several: each rank joins here (NCCL on GPUs, gloo on CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

from llamabench.digits import environment_int
from llamabench.errors import LlamabenchError, first_line

T = TypeVar("T")


class RankFailure(LlamabenchError):
    """Some rank failed: every rank raises this, with the same message, instead of waiting in a collective."""


def launched_distributed() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several ranks."""
    return environment_int("WORLD_SIZE", 1) > 1


def init_distributed(device: str | None) -> str:
    """Join the process group (NCCL on GPUs, gloo on CPU) and return this rank's device."""
    use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = environment_int("LOCAL_RANK", 0)
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
    shared_results([(failure, None)], what)  # only the failures travel: each rank keeps its own result
    return result


def shared_results(local: list, what: str) -> list:
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
