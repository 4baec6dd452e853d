"""HTTP to an OpenAI-compatible server: JSON in and out, retries with exponential backoff, a per-request timeout,
a bounded number of requests in flight, and an API key that appears in no error, log or record.

Standard library only (``urllib`` and threads): a request waits on the network, not on Python, so threads give
the concurrency without a new dependency.

What is retried, up to ``attempts`` times with waits of ``first_wait * 2**k`` seconds (capped at ``max_wait``,
or the server's ``Retry-After`` when it sends one, capped the same way): 429 and 5xx answers, connection errors
(refused, reset, a server that went away), a request past ``timeout`` seconds, and a body that is not complete
JSON (truncated or malformed). Any other 4xx is the request's fault and fails at once, with the server's message.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

from llamabench.errors import LlamabenchError

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class ServerError(LlamabenchError):
    """A server answered a request with an error, or not at all after every retry."""


class RequestRefused(ServerError):
    """A 4xx answer other than 429: the server will not answer this request however often it is sent."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    """How long one request may take and how often a failed one is sent again."""

    timeout: float = 120.0
    attempts: int = 6
    first_wait: float = 0.5
    max_wait: float = 8.0

    def wait(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (attempt counts from 0)."""
        try:
            asked = float(retry_after) if retry_after is not None else None
        except ValueError:
            asked = None  # an HTTP date: fall back to the backoff
        return min(self.max_wait, asked if asked is not None else self.first_wait * 2**attempt)


class ServerClient:
    """JSON requests to one server. ``base_url`` ends in ``/v1`` (the OpenAI routes); ``root`` is the server's
    own routes (``/tokenize``, ``/version``). ``api_key`` is sent as a bearer token and never shown."""

    def __init__(self, base_url: str, *, api_key: str | None = None, policy: RetryPolicy = RetryPolicy()):
        self.base_url = base_url.rstrip("/")
        self.root = self.base_url.removesuffix("/v1")
        self._api_key = api_key
        self.policy = policy
        self.sent = 0  # requests sent, retries included
        self.retried = 0
        self._count = threading.Lock()  # the counts are updated from the request threads

    def __repr__(self) -> str:  # the key stays out of any repr a traceback or log may print
        return f"ServerClient({self.base_url!r})"

    def post(self, route: str, body: dict) -> dict:
        """POST ``body`` to ``route`` (``/completions`` under ``/v1``; ``/tokenize`` at the root: give the full
        path with ``at_root``), retrying as the module says."""
        return self._send(self._url(route), json.dumps(body).encode())

    def get(self, route: str) -> dict:
        return self._send(self._url(route), None)

    def _url(self, route: str) -> str:
        return f"{self.root}{route[len('root:') :]}" if route.startswith("root:") else f"{self.base_url}{route}"

    def _send(self, url: str, data: bytes | None) -> dict:
        problem = ""
        for attempt in range(self.policy.attempts):
            if attempt:
                with self._count:
                    self.retried += 1
            retry_after = None
            try:
                return self._once(url, data)
            except urllib.error.HTTPError as exc:
                detail = _error_text(exc)
                if exc.code != 429 and exc.code < 500:
                    raise RequestRefused(
                        self._hide(f"server {url} refused the request: HTTP {exc.code} {detail}"), exc.code
                    ) from None
                problem = f"HTTP {exc.code} {detail}"
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
            except TimeoutError:
                problem = f"no answer within --request-timeout {self.policy.timeout:g} s"
            except (urllib.error.URLError, ConnectionError, http.client.HTTPException, OSError) as exc:
                problem = f"connection failed ({_reason(exc)})"
            except ValueError:
                problem = "the answer was not complete JSON (truncated or malformed)"
            if attempt + 1 < self.policy.attempts:
                time.sleep(self.policy.wait(attempt, retry_after))
        raise ServerError(self._hide(f"server {url}: {problem}, {self.policy.attempts} attempts; is it up?"))

    def _once(self, url: str, data: bytes | None) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
        with self._count:
            self.sent += 1
        with urllib.request.urlopen(request, timeout=self.policy.timeout) as response:
            raw = response.read()
        value = json.loads(raw)  # ValueError (JSONDecodeError, UnicodeDecodeError) on a truncated body
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return value

    def _hide(self, text: str) -> str:
        """``text`` with the API key blanked, should a server echo it back in an error."""
        return text.replace(self._api_key, "***") if self._api_key else text


def run_bounded(
    work: Callable[[Item], Answer],
    items: Sequence[Item],
    max_in_flight: int,
    on_each: Callable[[int, Answer], None],
) -> None:
    """``work`` on every item with at most ``max_in_flight`` running at once; ``on_each(index, answer)`` in this
    thread as each finishes. The first failure stops new work, waits for the requests in flight (whose answers
    are still handed to ``on_each``, so a rerun need not repeat them) and is raised."""
    failure: BaseException | None = None
    pending = iter(enumerate(items))
    with ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="llamabench-http") as pool:
        running: dict[Future, int] = {}

        def start_next() -> None:
            for index, item in pending:
                running[pool.submit(work, item)] = index
                return

        for _ in range(max_in_flight):
            start_next()
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                index = running.pop(future)
                try:
                    answer = future.result()
                except BaseException as exc:  # noqa: BLE001 (kept and raised once the requests in flight end)
                    failure = failure or exc
                    continue
                on_each(index, answer)
                if failure is None:
                    start_next()
            if failure is not None and not running:
                break
    if failure is not None:
        raise failure


def _error_text(exc: urllib.error.HTTPError) -> str:
    """The server's error message (OpenAI's ``{"error": {"message": ...}}`` or the body's first line)."""
    try:
        body = exc.read().decode("utf-8", "replace")
    except OSError:
        return str(exc.reason)
    try:
        parsed = json.loads(body)
        message = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        message = message.get("message", message) if isinstance(message, dict) else message
        body = str(message)
    except ValueError:
        pass
    return " ".join(body.split())[:300]


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return f"{type(reason).__name__}: {reason}"[:200]
