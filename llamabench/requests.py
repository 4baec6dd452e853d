"""Requests: what a task asks of a backend for each document, built from a task spec and its documents.

The kind of the task (``tasks/kinds.py``) builds each document's requests; this module renders what every kind
shares: the document's id, its prompt and the few-shot examples before it.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llamabench.errors import LlamabenchError, first_line
from llamabench.tasks.templates import NullValueError, UndefinedError, render

if TYPE_CHECKING:
    from llamabench.tasks.kinds import TaskKind
    from llamabench.tasks.spec import TaskSpec


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


def require_prompt_room(max_new_tokens: int, max_length: int, task: str | None = None) -> None:
    """Refuse a generation whose ``max_new_tokens`` leave no room for a prompt in a ``max_length`` context."""
    if max_new_tokens >= max_length:
        where = f"task {task}: " if task else ""
        raise LlamabenchError(
            f"{where}max_new_tokens {max_new_tokens} leaves no room for a prompt in a context of {max_length} "
            "tokens; lower the task's generation.max_new_tokens or raise --max-length"
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


def build_requests(
    spec: TaskSpec,
    docs: list[dict],
    *,
    num_fewshot: int | None = None,
    fewshot_pool: list[dict] | None = None,
    seed: int = 0,
) -> list[DocRequests]:
    """Render every document into its requests.

    Few-shot examples are drawn (seeded, per document) from ``fewshot_pool`` (default: ``docs``), never
    the document itself.
    """
    pool = docs if fewshot_pool is None else fewshot_pool
    shots = spec.num_fewshot if num_fewshot is None else num_fewshot
    kind = spec.task_kind
    if shots and not kind.takes_fewshot:
        raise LlamabenchError(
            f"task {spec.name}: few-shot examples make no sense for kind {kind.name}, which scores each document's "
            "own text; use --num-fewshot 0"
        )
    if shots and shots >= len(pool):
        raise LlamabenchError(f"task {spec.name}: {shots} few-shot examples need more than {len(pool)} documents")
    built = []
    for index, doc in enumerate(docs):
        try:
            built.append(_build_one(spec, kind, doc, index, pool, shots, seed))
        except LlamabenchError:
            raise
        except UndefinedError as exc:
            raise LlamabenchError(
                f"task {spec.name}: document {index} lacks a field the task uses ({exc.message}); "
                f"its fields are {', '.join(sorted(map(str, doc)))}: fix the task's templates or the data file"
            ) from None
        except NullValueError as exc:
            raise LlamabenchError(
                f"task {spec.name}: document {index} has a null value where a template needs text ({exc.message}); "
                "fix or filter the data, or give a default in the template, e.g. {{ field or '' }}"
            ) from None
        except Exception as exc:  # a template is the task author's code: any runtime error is a task error
            raise LlamabenchError(
                f"task {spec.name}: a template fails on document {index} ({type(exc).__name__}: "
                f"{first_line(exc, 200) or 'no message'}); fix the task's templates"
            ) from None
    return built


def _build_one(
    spec: TaskSpec, kind: TaskKind, doc: dict, index: int, pool: list[dict], shots: int, seed: int
) -> DocRequests:
    doc_id = render(spec.doc_id, doc) if spec.doc_id else str(index)
    prompt = render(spec.prompt, doc)
    if shots:
        prompt = _fewshot_prefix(spec, kind, doc, index, pool, shots, seed) + prompt
    return kind.build(spec, doc, doc_id, prompt, index=index, seed=seed)


def _fewshot_prefix(
    spec: TaskSpec, kind: TaskKind, doc: dict, index: int, pool: list[dict], shots: int, seed: int
) -> str:
    rng = random.Random(f"{seed}:{spec.name}:{index}")
    picked = [i for i in rng.sample(range(len(pool)), shots + 1) if pool[i] is not doc][:shots]
    examples = [
        render(spec.prompt, pool[i]) + spec.target_delimiter + kind.gold_answer(spec, pool[i], str(i)) for i in picked
    ]
    return spec.fewshot_delimiter.join(examples) + spec.fewshot_delimiter
