"""Cleaning up temporary GGUF conversion folders (``<fingerprint>.tmp<pid>``) that a killed process left behind.

A conversion writes its dense copy under a temporary name and renames it into place when done, so a process
killed mid-way leaves the temporary folder, often gigabytes, in the cache forever. A folder is stale when the
process that wrote it is gone, when the process now holding its pid started after it was written (the pid was
reused), or when it is older than a day. Run folders (``results.py``) are cleaned by the same rule.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

MAX_AGE_S = 24 * 3600
_TEMPORARY = re.compile(r"\.tmp(\d+)$")


def remove_stale_temporaries(cache_dir: Path, max_age_s: float = MAX_AGE_S) -> list[Path]:
    """Delete the stale ``*.tmp<pid>`` folders directly under ``cache_dir``; returns them, sorted.

    The current process's own folder is never stale. Caveat: on a cache shared between machines, a conversion
    running on another machine looks gone here and may be deleted under it: give each machine its own
    ``$LLAMABENCH_CACHE``.
    """
    removed = []
    for folder in sorted(cache_dir.glob("*.tmp*")) if cache_dir.is_dir() else []:
        match = _TEMPORARY.search(folder.name)
        if match and folder.is_dir() and writer_gone(int(match.group(1)), folder, max_age_s):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def writer_gone(pid: int, folder: Path, max_age_s: float = MAX_AGE_S) -> bool:
    """Whether the process ``pid`` that wrote ``folder`` under a temporary name is gone, so the folder is left
    over: no such process (or a zombie), or the process with that id now started after the folder was last
    written (the id was reused), or the folder is older than ``max_age_s`` (where start times cannot be read).
    This process's own folders are never left over."""
    if pid == os.getpid():
        return False
    try:
        written = folder.stat().st_mtime
    except OSError:  # removed meanwhile: nothing left to clean
        return False
    started = _start_time(pid)
    if not _process_exists(pid) or started == _ZOMBIE:
        return True
    # Start times are read to about a second (the boot time is in whole seconds): 2 s of slack keeps a live
    # writer that started just before it created its folder.
    if started is not None and started > written + 2:
        return True
    return time.time() - written > max_age_s


_ZOMBIE = -1.0


def _start_time(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), _ZOMBIE for a zombie, None where unknown (not
    Linux, no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
    except (OSError, StopIteration):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": the name may hold spaces
    if fields[0] == "Z":
        return _ZOMBIE
    return int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists and may be signalled
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
