"""A real HTTP proxy on 127.0.0.1 in front of a real server, which injects faults into what passes through it:
429 storms, truncated or malformed JSON, slow answers, answers that never come, a server that dies, a server whose
model was swapped, answers rewritten to hold impossible values.

It counts every request it receives (``requests``: path and JSON body), so a test sees exactly what a client sent.
Each fault applies to the next ``count`` requests to ``/v1/completions`` (the scoring and generation calls).
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Fault:
    kind: str  # "429", "truncate", "malformed", "slow", "hang", "swap", "skew", "rewrite"; "none" (passes them)
    count: int = 1_000_000  # requests it applies to
    seconds: float = 0.0  # "slow": the delay
    when: Callable[[dict], bool] | None = None  # which completion bodies it applies to (default: all)
    change: Callable[[dict, dict], None] | None = None  # "rewrite": edits the JSON answer, given the request body


@dataclass
class FaultProxy:
    """Forwards to ``upstream`` (``http://127.0.0.1:PORT``); ``start()`` picks a free port (or reuses ``port``)."""

    upstream: str
    port: int = 0
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, dict | None]] = field(default_factory=list)
    answered: list[dict] = field(default_factory=list)  # completion bodies answered with a 200
    die_after: int | None = None  # completions answered before the server "dies" (answers nothing more)
    # Prompt log-probability forms answered 400, as OpenAI's API does: "prompt_logprobs" (vLLM's) and "echo".
    refused_forms: tuple[str, ...] = ()
    authorizations: list[str] = field(default_factory=list)  # the Authorization headers received

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self, None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                proxy._handle(self, self.rfile.read(length))

        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.server = _QuietServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stop(self) -> None:
        self._stopping.set()  # releases the requests held by "hang"
        self.server.shutdown()
        self.server.server_close()

    def completions(self) -> list[dict]:
        """The bodies of every completions request received."""
        return [body for path, body in self.requests if path.endswith("/completions") and body is not None]

    def _take_fault(self, path: str, body: dict | None) -> Fault | None:
        if not path.endswith("/completions"):
            return None
        with self._lock:
            for fault in self.faults:
                if fault.count > 0 and (fault.when is None or fault.when(body or {})):
                    fault.count -= 1
                    return fault
        return None

    def _handle(self, handler: BaseHTTPRequestHandler, raw: bytes | None) -> None:
        body = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append((handler.path, body))
            if handler.headers.get("Authorization"):
                self.authorizations.append(handler.headers["Authorization"])
            dead = self.die_after is not None and len(self.answered) >= self.die_after
        if dead:  # the server is gone: no answer, the connection dropped
            handler.close_connection = True
            handler.connection.close()
            return
        form = "prompt_logprobs" if body and "prompt_logprobs" in body else "echo" if body and body.get("echo") else ""
        if form in self.refused_forms:
            return self._send(handler, 400, b'{"error": {"message": "unsupported parameter"}}', {})
        fault = self._take_fault(handler.path, body)
        if fault is not None and fault.kind == "429":
            return self._send(handler, 429, b'{"error": {"message": "rate limited"}}', {"Retry-After": "0"})
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind == "hang":  # no answer until the proxy stops
            self._stopping.wait()
            return None
        status, answer = self._forward(handler, raw)
        if status == 200 and handler.path.endswith("/completions"):
            with self._lock:
                self.answered.append(body)
        if fault is not None and fault.kind == "truncate":
            answer = answer[: len(answer) // 2]
        elif fault is not None and fault.kind == "malformed":
            answer = b"<html>502 Bad Gateway</html>" + answer[:10]
        elif fault is not None and fault.kind in ("swap", "skew"):
            answer = json.dumps(_shifted(json.loads(answer), fault.kind, body or {})).encode()
        elif fault is not None and fault.kind == "rewrite" and status == 200:
            value = json.loads(answer)
            fault.change(value, body or {})
            answer = json.dumps(value).encode()
        self._send(handler, status, answer, {})

    def _forward(self, handler: BaseHTTPRequestHandler, raw: bytes | None) -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.upstream + handler.path,
            data=raw,
            headers={"Content-Type": "application/json"},
            method=handler.command,
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: bytes, headers: dict) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        for key, value in headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(payload)


class _QuietServer(ThreadingHTTPServer):
    """Handler threads die with the process; a client that hung up (a timeout, a dropped connection) is expected
    here, not a traceback."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _shifted(answer: dict, kind: str, request: dict) -> dict:
    """``swap``: the answer another model would give (every log-probability 0.5 lower, every text reversed);
    ``skew``: prompt log-probabilities that disagree with the generation's (0.7 lower, in both the
    ``prompt_logprobs`` and the ``echo`` form; a plain generation's kept)."""
    for choice in answer.get("choices", []):
        echoed = choice.get("logprobs") or {}
        if kind == "skew" and request.get("echo") and echoed.get("token_logprobs"):
            echoed["token_logprobs"] = [None if v is None else v - 0.7 for v in echoed["token_logprobs"]]
            echoed["top_logprobs"] = [
                None if top is None else {key: v - 0.7 for key, v in top.items()} for top in echoed["top_logprobs"]
            ]
        for position in choice.get("prompt_logprobs") or []:
            for entry in (position or {}).values():
                entry["logprob"] -= 0.5 if kind == "swap" else 0.7
        generated = (choice.get("logprobs") or {}).get("token_logprobs") or []
        if kind == "swap":
            choice.setdefault("logprobs", {})
            if generated:
                choice["logprobs"]["token_logprobs"] = [None if v is None else v - 0.5 for v in generated]
            if isinstance(choice.get("text"), str):
                choice["text"] = choice["text"][::-1]
    return answer
