"""HTTP to an OpenAI-compatible server: JSON in and out, retries with exponential backoff, a total deadline per
request, a bounded number of requests in flight, and credentials that appear in no error, log or record and go
to no server other than the one named.

Standard library only (``urllib`` and threads): a request waits on the network, not on Python, so threads give
the concurrency without a new dependency.

What is retried, up to ``attempts`` times with waits of ``first_wait * 2**k`` seconds (capped at ``max_wait``,
or the server's ``Retry-After`` when it sends one, capped the same way): 429 and 5xx answers, connection errors
(refused, reset, a server that went away), a request past ``timeout`` seconds, and a body that is not complete
JSON (truncated or malformed). Any other 4xx is the request's fault and fails at once, with the server's message.

``timeout`` is a deadline for the whole request (connecting, sending, the status line, the headers and the whole
body), not for each read: a server that trickles its answer a byte at a time is cut off at the deadline.

Redirects (3xx) are never followed: urllib would send the ``Authorization`` header on to whatever host the
``Location`` names. A redirect stops the run with one line naming where it points; pass that address instead.
Credentials in the URL (``http://user:password@host/v1``) are sent to the server named as HTTP Basic, and the URL
is shown and recorded without them.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TypeVar

from llamabench.errors import LlamabenchError
from llamabench.urls import url_credentials, without_credentials

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
    own routes (``/tokenize``, ``/version``). ``api_key`` is sent as a bearer token and never shown; a
    ``user:password@`` in the URL is sent as HTTP Basic instead, and ``base_url`` is kept without it."""

    def __init__(self, base_url: str, *, api_key: str | None = None, policy: RetryPolicy = RetryPolicy()):
        self.base_url = without_credentials(base_url).rstrip("/")
        self.root = self.base_url.removesuffix("/v1")
        credentials = url_credentials(base_url)
        if credentials is not None:
            pair = base64.b64encode(":".join(credentials).encode()).decode()
            self._authorization: str | None = f"Basic {pair}"
            self._secrets = [secret for secret in (*credentials, pair, api_key) if secret]
        else:
            self._authorization = f"Bearer {api_key}" if api_key else None
            self._secrets = [api_key] if api_key else []
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
                status, headers, raw = self._once(url, data)
            except TimeoutError:
                problem = f"no answer within --request-timeout {self.policy.timeout:g} s"
            except (urllib.error.URLError, ConnectionError, http.client.HTTPException, OSError) as exc:
                problem = f"connection failed ({_reason(exc)})"
            else:
                if status == 200:
                    try:
                        return _json_object(raw)
                    except ValueError:
                        problem = "the answer was not complete JSON (truncated or malformed)"
                elif 300 <= status < 400:
                    where = without_credentials(headers.get("Location") or "(no Location)")
                    raise RequestRefused(
                        self._hide(
                            f"server {url} answered HTTP {status}, a redirect to {where}: llamabench follows no "
                            "redirect, so that credentials go only to the server named; pass the address it "
                            "redirects to as --model"
                        ),
                        status,
                    )
                elif status != 429 and status < 500:
                    raise RequestRefused(
                        self._hide(f"server {url} refused the request: HTTP {status} {_error_text(raw)}"), status
                    )
                else:
                    problem = f"HTTP {status} {_error_text(raw)}"
                    retry_after = headers.get("Retry-After")
            if attempt + 1 < self.policy.attempts:
                time.sleep(self.policy.wait(attempt, retry_after))
        raise ServerError(self._hide(f"server {url}: {problem}, {self.policy.attempts} attempts; is it up?"))

    def _once(self, url: str, data: bytes | None) -> tuple[int, http.client.HTTPMessage, bytes]:
        """One request: its status, headers and whole body, all within the deadline (TimeoutError past it)."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._authorization:
            headers["Authorization"] = self._authorization
        request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
        with self._count:
            self.sent += 1
        with _Deadline(self.policy.timeout) as deadline:
            opener = urllib.request.build_opener(_NoRedirects, _DeadlineHTTP(deadline), _DeadlineHTTPS(deadline))
            try:
                with opener.open(request, timeout=self.policy.timeout) as response:
                    answer = response.status, response.headers, response.read()
            except urllib.error.HTTPError as exc:
                answer = exc.code, exc.headers, _body(exc)
            except (OSError, http.client.HTTPException):
                if deadline.expired:
                    raise TimeoutError from None
                raise
        if deadline.expired:
            raise TimeoutError
        return answer

    def _hide(self, text: str) -> str:
        """``text`` with the credentials blanked, should a server echo them back in an error."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class _Deadline:
    """A deadline for one request: when it passes, every socket the request opened is shut down, which ends a
    read in progress however the server paces its bytes."""

    def __init__(self, seconds: float):
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()

    def track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            expired = self.expired
        if expired:
            _shut(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _tracked(base: type[http.client.HTTPConnection], deadline: _Deadline) -> type[http.client.HTTPConnection]:
    """``base`` whose socket, once connected, is handed to ``deadline``."""

    class Tracked(base):
        def connect(self) -> None:
            super().connect()
            deadline.track(self.sock)

    return Tracked


class _DeadlineHTTP(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._connection = _tracked(http.client.HTTPConnection, deadline)

    def http_open(self, req):
        return self.do_open(self._connection, req)


class _DeadlineHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, deadline: _Deadline):
        super().__init__()
        self._connection = _tracked(http.client.HTTPSConnection, deadline)

    def https_open(self, req):
        return self.do_open(self._connection, req, context=self._context)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Follows no redirect: the 3xx answer reaches the client as it is (see the module docstring)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


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


def _body(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read()
    except (OSError, http.client.HTTPException):
        return b""


def _json_object(raw: bytes) -> dict:
    value = json.loads(raw)  # ValueError (JSONDecodeError, UnicodeDecodeError) on a truncated body
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _error_text(raw: bytes) -> str:
    """The server's error message (OpenAI's ``{"error": {"message": ...}}`` or the body's first line)."""
    body = raw.decode("utf-8", "replace")
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
