"""Where llamabench keeps what it can recompute: finished request results and file digests (one SQLite file)
and the dense copies of GGUF checkpoints. ``$LLAMABENCH_CACHE`` moves it (default ``~/.cache/llamabench``)."""

from __future__ import annotations

import os
from pathlib import Path

# The SQLite file holding finished request results and memoised file digests.
CACHE_DB = "requests.sqlite"


def cache_root() -> Path:
    return Path(os.environ.get("LLAMABENCH_CACHE", Path.home() / ".cache" / "llamabench"))
