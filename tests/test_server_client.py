"""The HTTP client of the server backend against misbehaving servers on 127.0.0.1 (no model needed): redirects
never carry the credentials off the server named, a password in the URL is never shown, and a request has a
total deadline that a server trickling its answer cannot stretch.

Every server here is deterministic (it redirects, or trickles forever); the deadlines are seconds long and the
bounds asserted are far above them, so a loaded machine changes how long a test takes, not its outcome.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llamabench.backends.server.client import RequestRefused, RetryPolicy, ServerClient, ServerError

SECRET = "sk-redirect-7d2e91"
PASSWORD = "pw-9c41f0e2"
REDIRECTS = (301, 302, 303, 307, 308)


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # a client that hung up on a trickle is expected here


class LocalServer:
    """An HTTP server on 127.0.0.1 whose every request is answered by ``answer(handler)``; it records the
    ``Authorization`` header of each request (None when absent)."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None]):
        self.authorizations: list[str | None] = []
        self.paths: list[str] = []
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.authorizations.append(self.headers.get("Authorization"))
                server.paths.append(self.path)
                answer(self)

            do_GET = do_POST = _any

        self.httpd = _Quiet(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _json(handler: BaseHTTPRequestHandler, status: int, value: dict, headers: dict | None = None) -> None:
    payload = json.dumps(value).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    for key, item in (headers or {}).items():
        handler.send_header(key, item)
    handler.end_headers()
    handler.wfile.write(payload)


@pytest.fixture
def elsewhere():
    """The server a redirect points to: it answers every request, and records who sent which credentials."""
    server = LocalServer(lambda handler: _json(handler, 200, {"data": [{"id": "m"}], "tokens": [1]}))
    yield server
    server.stop()


def _redirecting(code: int, target: str) -> LocalServer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        _json(handler, code, {}, {"Location": target + handler.path})

    return LocalServer(answer)


ONE_TRY = RetryPolicy(timeout=30, attempts=2, first_wait=0.01, max_wait=0.02)


@pytest.mark.parametrize("code", REDIRECTS)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])  # another port; another host name and port
@pytest.mark.parametrize("method", ["get", "post"])
def test_a_redirect_never_carries_the_api_key_to_another_server(elsewhere, code, host, method):
    origin = _redirecting(code, f"http://{host}:{elsewhere.port}")
    client = ServerClient(f"http://127.0.0.1:{origin.port}/v1", api_key=SECRET, policy=ONE_TRY)
    try:
        with pytest.raises(RequestRefused) as refused:
            client.get("/models") if method == "get" else client.post("/completions", {"prompt": [1]})
    finally:
        origin.stop()
    assert origin.authorizations == [f"Bearer {SECRET}"]  # sent once, to the server named, and not retried
    assert elsewhere.authorizations == []  # the redirect was not followed, with or without the key
    message = str(refused.value)
    assert f"HTTP {code}" in message and "redirect" in message and f"{host}:{elsewhere.port}" in message
    assert SECRET not in message and "\n" not in message


@pytest.mark.parametrize("code", REDIRECTS)
def test_a_redirect_never_carries_the_url_password_elsewhere_nor_shows_it(elsewhere, code):
    origin = _redirecting(code, f"http://user:{PASSWORD}@127.0.0.1:{elsewhere.port}")
    client = ServerClient(f"http://alice:{PASSWORD}@127.0.0.1:{origin.port}/v1", policy=ONE_TRY)
    try:
        with pytest.raises(RequestRefused) as refused:
            client.post("/completions", {"prompt": [1]})
    finally:
        origin.stop()
    basic = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert origin.authorizations == [basic]  # the URL's credentials go to the server named, as HTTP Basic
    assert elsewhere.authorizations == []
    assert PASSWORD not in str(refused.value) and PASSWORD not in repr(client) and PASSWORD not in client.base_url


def test_a_url_password_is_in_no_error_line():
    def broken(handler: BaseHTTPRequestHandler) -> None:
        _json(handler, 503, {"error": {"message": "down for maintenance"}})

    server = LocalServer(broken)
    client = ServerClient(f"http://alice:{PASSWORD}@127.0.0.1:{server.port}/v1", policy=ONE_TRY)
    try:
        with pytest.raises(ServerError) as failure:
            client.get("/models")
    finally:
        server.stop()
    assert f"http://127.0.0.1:{server.port}/v1/models" in str(failure.value)
    assert PASSWORD not in str(failure.value) and "alice" not in str(failure.value)


def test_a_url_password_is_in_no_record_of_the_configuration():
    from llamabench.config import RunConfig

    url = f"http://alice:{PASSWORD}@127.0.0.1:8000/v1"
    recorded = json.dumps(RunConfig(tasks=["ppl"], model=[url]).record(url))
    assert PASSWORD not in recorded and "http://127.0.0.1:8000/v1" in recorded


def test_a_url_password_is_in_no_note_about_repeated_models(capsys):
    from llamabench.training.checkpoints import expand_models

    url = f"http://alice:{PASSWORD}@127.0.0.1:8000/v1"
    assert expand_models([url, url]) == [url]
    assert PASSWORD not in capsys.readouterr().err


def _trickle_body(handler: BaseHTTPRequestHandler, server: LocalServer) -> None:
    """Headers promising a large JSON body, then one byte every 0.2 s until the server stops."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(10**9))
    handler.end_headers()
    handler.wfile.write(b"{")
    while not server.stopping.wait(0.2):
        handler.wfile.write(b" ")
        handler.wfile.flush()


def _trickle_headers(handler: BaseHTTPRequestHandler, server: LocalServer) -> None:
    """A status line, then one header's value one byte every 0.2 s, never ending."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    while not server.stopping.wait(0.2):
        handler.wfile.write(b"a")
        handler.wfile.flush()


@pytest.mark.parametrize("trickle", [_trickle_body, _trickle_headers])
def test_a_server_trickling_its_answer_hits_the_total_deadline(trickle):
    holder: list[LocalServer] = []
    server = LocalServer(lambda handler: trickle(handler, holder[0]))
    holder.append(server)
    client = ServerClient(
        f"http://127.0.0.1:{server.port}/v1", policy=RetryPolicy(timeout=3, attempts=2, first_wait=0.01, max_wait=0.02)
    )
    outcome: list[BaseException | None] = []

    def request() -> None:
        try:
            client.post("/completions", {"prompt": [1]})
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 (inspected below)
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=request, daemon=True)
    worker.start()
    worker.join(60)  # two attempts of 3 s each: far below this, however loaded the machine
    took = time.monotonic() - started
    server.stop()
    worker.join(10)
    assert outcome, f"the request still ran after {took:.0f} s: the deadline is per read, not per request"
    assert isinstance(outcome[0], ServerError)
    assert "no answer within --request-timeout 3 s" in str(outcome[0])
    assert took >= 6  # both attempts waited their full deadline
    assert len(server.paths) == 2
