"""Whether a ``--model`` value names a server (``http://HOST:PORT/v1``) rather than a checkpoint, and the URL
as it may be shown or recorded (without a ``user:password@`` part). It imports nothing of llamabench: the
configuration, the engine registry and the server's client all read it."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

_SERVER_URL = re.compile(r"https?://", re.IGNORECASE)


def is_server_url(model: str | None) -> bool:
    """Whether ``--model`` names a server rather than a checkpoint."""
    return bool(model) and _SERVER_URL.match(model) is not None


def without_credentials(url: str) -> str:
    """``url`` without its ``user:password@`` part: the form every message, manifest and record holds."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def url_credentials(url: str) -> tuple[str, str] | None:
    """The (user, password) of ``url``'s ``user:password@`` part, percent-decoded; None without one."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


def shown(model: str | None) -> str | None:
    """A ``--model`` value as it may be printed or recorded: a server URL without its credentials."""
    return without_credentials(model) if model and is_server_url(model) else model
