"""Requests: what a task asks of a backend for each document, built from a task spec and its documents."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from llamabench.errors import LlamabenchError, first_line
from llamabench.tasks.spec import TaskSpec
from llamabench.tasks.templates import NullValueError, UndefinedError, render, render_list


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
    if shots and spec.kind == "loglikelihood_rolling":
        raise LlamabenchError(f"task {spec.name}: few-shot examples make no sense for perplexity; use --num-fewshot 0")
    if shots and shots >= len(pool):
        raise LlamabenchError(f"task {spec.name}: {shots} few-shot examples need more than {len(pool)} documents")
    built = []
    for index, doc in enumerate(docs):
        try:
            built.append(_build_one(spec, doc, index, pool, shots, seed))
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


def _build_one(spec: TaskSpec, doc: dict, index: int, pool: list[dict], shots: int, seed: int) -> DocRequests:
    doc_id = render(spec.doc_id, doc) if spec.doc_id else str(index)
    prompt = render(spec.prompt, doc)
    if spec.kind == "loglikelihood_rolling":
        units = render(spec.units, doc) if spec.units else prompt
        return DocRequests(doc_id, prompt, [RollingRequest(prompt, spec.stride)], units_text=units)
    if shots:
        prompt = _fewshot_prefix(spec, doc, index, pool, shots, seed) + prompt
    if spec.kind == "generate":
        settings = spec.generation
        if not prompt:
            raise LlamabenchError(
                f"task {spec.name}: document {doc_id} renders an empty prompt, so there is nothing to continue; "
                "fix or filter the data"
            )
        targets = render_list(spec.target, doc)
        if not targets or not all(target.strip() for target in targets):
            raise LlamabenchError(
                f"task {spec.name}: document {doc_id} has {'an empty' if targets else 'no'} gold answer "
                f"({json.dumps(targets, ensure_ascii=False)[:80]}); every target must be non-empty text, "
                "so fix or filter the data"
            )
        sample_seed = None if settings.greedy else sampling_seed(seed, spec.name, doc_id, index)
        request = GenerationRequest(prompt, settings.max_new_tokens, settings.until, settings.greedy, sample_seed)
        return DocRequests(doc_id, prompt, [request], targets=targets)
    choices = render_list(spec.choices, doc)
    if len(choices) < 2 or not all(choice.strip() for choice in choices):
        raise LlamabenchError(
            f"task {spec.name}: document {doc_id} has choices {json.dumps(choices, ensure_ascii=False)[:80]}; "
            "a multiple-choice question needs at least two non-empty choices, so fix or filter the data"
        )
    label = _resolve_label(spec, render(spec.label, doc), choices, doc_id)
    requests = [LoglikelihoodRequest(prompt, spec.target_delimiter + choice) for choice in choices]
    return DocRequests(doc_id, prompt, requests, targets=[choices[label]], choices=choices, label=label)


def with_chat_template(docs: list[DocRequests], wrap: Callable[[str], str]) -> list[DocRequests]:
    """``docs`` with each prompt, few-shot examples included, passed through ``wrap`` (the model's chat template);
    perplexity documents score their text as it is and stay unchanged."""
    wrapped = []
    for doc in docs:
        if any(isinstance(request, RollingRequest) for request in doc.requests):
            wrapped.append(doc)
            continue
        prompt = wrap(doc.prompt)
        requests = [
            replace(r, prompt=prompt) if isinstance(r, GenerationRequest) else replace(r, context=prompt)
            for r in doc.requests
        ]
        wrapped.append(replace(doc, prompt=prompt, requests=requests))
    return wrapped


def _fewshot_prefix(spec: TaskSpec, doc: dict, index: int, pool: list[dict], shots: int, seed: int) -> str:
    rng = random.Random(f"{seed}:{spec.name}:{index}")
    picked = [i for i in rng.sample(range(len(pool)), shots + 1) if pool[i] is not doc][:shots]
    examples = [
        render(spec.prompt, pool[i]) + spec.target_delimiter + _gold_answer(spec, pool[i], str(i)) for i in picked
    ]
    return spec.fewshot_delimiter.join(examples) + spec.fewshot_delimiter


def _gold_answer(spec: TaskSpec, doc: dict, doc_id: str) -> str:
    if spec.kind == "multiple_choice":
        choices = render_list(spec.choices, doc)
        return choices[_resolve_label(spec, render(spec.label, doc), choices, doc_id)]
    return render_list(spec.target, doc)[0]


def _resolve_label(spec: TaskSpec, label: str, choices: list[str], doc_id: str) -> int:
    """The gold choice's index: ``label`` is an index or the gold choice's text, and must not be both for
    different choices (label "3" with choices ["2", "3", "4", "1"]: index 3 is "1", text "3" is index 1)."""
    as_index = int(label) if label.strip().isdigit() and int(label) < len(choices) else None
    as_text = choices.index(label) if label in choices else None
    if as_index is not None and as_text is not None and as_index != as_text:
        raise LlamabenchError(
            f"task {spec.name}: document {doc_id} has label {label!r}, both choice number {as_index} "
            f"({choices[as_index]!r}) and the text of choice number {as_text}; render the label as an index "
            "(e.g. '{{ choices.index(answer) }}') so it means one thing"
        )
    if as_index is not None:
        return as_index
    if as_text is not None:
        return as_text
    raise LlamabenchError(
        f"task {spec.name}: document {doc_id} has label {label!r}, neither a choice index below {len(choices)} "
        "nor one of its choices; fix the task's 'label' template"
    )
