"""Request records: what a task asks of a backend for each document (built in ``tasks/build.py``).

A backend answers three kinds of request (see ``backends/base.py`` for the contract): the log-likelihood of a
continuation after a context, the rolling log-likelihood of a whole text, and a generated continuation.
``DocRequests`` groups one document's requests with its id, prompt and gold label.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from llamabench.errors import LlamabenchError


@dataclass(frozen=True)
class LoglikelihoodRequest:
    """Score ``continuation`` given ``context``."""

    context: str
    continuation: str


@dataclass(frozen=True)
class RollingRequest:
    """Score the whole of ``text``; ``stride`` < max length gives overlapping (sliding) windows."""

    text: str
    stride: int | None = None


@dataclass(frozen=True)
class GenerationRequest:
    """Continue ``prompt`` for at most ``max_new_tokens``, stopping at the first of ``until``.

    A sampled request (``greedy=False``) carries its own ``seed``: the same request gives the same sample in
    any batch and any run, and two requests that differ only in their seed are two distinct samples.
    """

    prompt: str
    max_new_tokens: int
    until: tuple[str, ...] = ()
    greedy: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.greedy and self.seed is None:
            raise ValueError("a sampled GenerationRequest needs a seed (see sampling_seed)")


def require_prompt_room(
    max_new_tokens: int, max_length: int, task: str | None = None, model: str | None = None
) -> None:
    """Refuse a generation whose ``max_new_tokens`` leave no room for a prompt in a ``max_length`` context;
    ``model`` names the model whose own context (its config.json, which --max-length cannot raise) that is."""
    if max_new_tokens >= max_length:
        where = f"task {task}: " if task else ""
        whose = f" of model {model} (its config.json)" if model else ""
        fix = "" if model else " or raise --max-length"
        raise LlamabenchError(
            f"{where}max_new_tokens {max_new_tokens} leaves no room for a prompt in the {max_length}-token "
            f"context{whose}; lower the task's generation.max_new_tokens{fix}"
        )


def sampling_seed(*identity: object) -> int:
    """A 63-bit seed from a run's ``--seed`` and a request's identity (task, document, repeat)."""
    digest = hashlib.sha256(repr(identity).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


Request = LoglikelihoodRequest | RollingRequest | GenerationRequest


def request_size(request: Request) -> int:
    """Rough work a request costs, in characters: used to balance ranks."""
    if isinstance(request, LoglikelihoodRequest):
        return len(request.context) + len(request.continuation)
    if isinstance(request, RollingRequest):
        return len(request.text)
    return len(request.prompt) + 4 * request.max_new_tokens


@dataclass
class DocRequests:
    """One document's requests plus everything needed to score their results."""

    doc_id: str
    prompt: str
    requests: list[Request]
    targets: list[str] = field(default_factory=list)
    units_text: str | None = None
    choices: list[str] | None = None
    label: int | None = None

    @property
    def prompt_hash(self) -> str:
        return hashlib.sha256(self.prompt.encode()).hexdigest()[:12]
