"""A served model's options (``--engine server``): the name and the typed record of the flags it reads, shared by
its engine (``engine.py``) and its backend."""

from __future__ import annotations

from dataclasses import dataclass

NAME = "server"


@dataclass(frozen=True)
class ServerOptions:
    """The flags a served model reads (docs/servers.md); their values are checked by ``RunConfig.validate``."""

    served_model: str | None
    tokenizer: str | None
    api_key_env: str
    max_length: int | None
    max_concurrent_requests: int
    request_timeout: float
    request_retries: int
