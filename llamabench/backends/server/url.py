"""Whether a ``--model`` value names a server (``http://HOST:PORT/v1``) rather than a checkpoint, and the name of
the engine that runs a served model; light to import (the registry reads both)."""

from __future__ import annotations

import re

NAME = "server"  # --engine server
_SERVER_URL = re.compile(r"https?://", re.IGNORECASE)


def is_server_url(model: str | None) -> bool:
    """Whether ``--model`` names a server rather than a checkpoint."""
    return bool(model) and _SERVER_URL.match(model) is not None
