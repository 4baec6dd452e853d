"""Cleaning up temporary GGUF conversion folders (``<fingerprint>.tmp<pid>``) that a killed process left behind.

A conversion writes its dense copy under a temporary name and renames it into place when done, so a process
killed mid-way leaves the temporary folder, often gigabytes, in the cache forever. A folder is stale when the
process that wrote it is gone, or when it is older than a day (its pid may have been reused by now).
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
        if not match or not folder.is_dir() or int(match.group(1)) == os.getpid():
            continue
        if not _process_exists(int(match.group(1))) or time.time() - folder.stat().st_mtime > max_age_s:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists and may be signalled
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
