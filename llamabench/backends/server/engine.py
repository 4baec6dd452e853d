"""A model served over HTTP (``--engine server``, implied by ``--model http://HOST:PORT/v1``): its options and how
it connects."""

from __future__ import annotations

from dataclasses import dataclass

from llamabench.backends.base import Backend
from llamabench.backends.engine import Engine
from llamabench.backends.server.url import NAME


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


class ServerEngine(Engine):
    name = NAME
    options_type = ServerOptions
    opening = "connecting to the server"

    def open(self, options: ServerOptions, model: str | None) -> Backend:
        from llamabench.backends.server.backend import ServerBackend
        from llamabench.backends.server.client import RetryPolicy

        return ServerBackend.connect(
            model or "",
            served_model=options.served_model,
            tokenizer=options.tokenizer,
            api_key_env=options.api_key_env,
            max_length=options.max_length,
            max_in_flight=options.max_concurrent_requests,
            policy=RetryPolicy(timeout=options.request_timeout, attempts=options.request_retries + 1),
        )
