"""What ``--shard`` names: shard ``I`` of ``N`` (from 0), or ``auto``, read from a Slurm array job's variables.
Parsed as the run's configuration is checked (``config.py``); ``scale/shards.py`` splits the documents.

    >>> parse_shard("1/3")
    Shard(index=1, count=3)
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
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
