"""The vLLM engine for tests/test_backend_contract.py, run in vLLM's own environment (which has no pytest).

``python vllm_contract_worker.py CHECKPOINT`` loads the checkpoint into vLLM (float32, eager) and answers the
contract's calls, one JSON object a line on stdin, ``{"method", "requests", "max_length", "batch_size"}``, with one
JSON line on stdout: ``{"results", "reported"}`` (``reported``: each ``on_done`` call as ``[indices, results]``) or
``{"error", "message"}``. Anything the engine itself prints goes to stderr.

An engine per batch size (vLLM's ``max_num_seqs``), loaded when asked for (closing the one before) with the largest
window the contract asks for; a smaller window is a backend over the same engine (a window is the token base's,
not the engine's)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

LARGEST_WINDOW = 64


def main(checkpoint: str) -> None:
    from transformers import GenerationConfig

    from llamabench.backends.vllm.backend import VLLMBackend
    from llamabench.backends.vllm.options import VLLMOptions
    from llamabench.requests import GenerationRequest, LoglikelihoodRequest, RollingRequest

    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the engine's own prints must not mix with the replies
    kinds = {"loglikelihood": LoglikelihoodRequest, "loglikelihood_rolling": RollingRequest}
    kinds |= {"generate": GenerationRequest, "truncated_tokens": LoglikelihoodRequest}
    options = VLLMOptions(dtype="float32", max_length=LARGEST_WINDOW, enforce_eager=True, gpu_memory_utilization=0.05)
    opened: dict = {}  # one engine at a time (a second beside it finds no memory for its KV cache): its windows

    def backend(max_length: int, batch_size):
        if (LARGEST_WINDOW, batch_size) not in opened:
            close(opened)
            engine = VLLMBackend.load(checkpoint, replace(options, batch_size=batch_size))
            engine.progress = False
            opened[LARGEST_WINDOW, batch_size] = engine
        engine = opened[LARGEST_WINDOW, batch_size]
        if (max_length, batch_size) not in opened:
            opened[max_length, batch_size] = VLLMBackend(
                engine.llm,
                engine.tokenizer,
                GenerationConfig.from_pretrained(checkpoint),
                model_id=engine.model_id,
                model_fingerprint=engine.fingerprint,
                max_length=max_length,
                dtype=engine.dtype,
                options=replace(options, max_length=max_length, batch_size=batch_size),
                progress=False,
            )
        return opened[max_length, batch_size]

    for line in sys.stdin:
        call = json.loads(line)
        kind = kinds[call["method"]]
        requests = [kind(**{k: tuple(v) if k == "until" else v for k, v in r.items()}) for r in call["requests"]]
        method = getattr(backend(call["max_length"], call["batch_size"]), call["method"])
        reported: list = []
        try:
            if call["method"] == "truncated_tokens":
                results = method(requests)
            else:
                results = method(requests, on_done=_recorder(reported))
            reply = {"results": results, "reported": reported}
        except Exception as exc:  # noqa: BLE001 - the test side raises it again by name
            reply = {"error": type(exc).__name__, "message": str(exc)}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    close(opened)


def close(opened: dict) -> None:
    """Shut the open engine down (its smaller windows share it) and forget every backend over it."""
    for (max_length, _), backend in opened.items():
        if max_length == LARGEST_WINDOW:
            backend.close()
    opened.clear()


def _recorder(reported: list):
    """An ``on_done`` that keeps each call as ``[indices, results]``."""
    return lambda indices, results: reported.append([list(indices), list(results)])


if __name__ == "__main__":
    main(sys.argv[1])
