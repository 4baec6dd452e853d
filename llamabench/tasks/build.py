"""Request building: every document of a task rendered into its requests, few-shot examples drawn before it.

The kind of the task (``tasks/kinds.py``) builds each document's requests; this module renders what every kind
shares: the document's id, its prompt and the few-shot examples before it.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from llamabench.errors import LlamabenchError, first_line
from llamabench.requests import DocRequests
from llamabench.tasks.kinds import kind_of
from llamabench.tasks.templates import (
    NullValueError,
    TooMuchTextError,
    TooMuchWorkError,
    UndefinedError,
    render,
    spend,
    text_budget,
    time_limit,
)

if TYPE_CHECKING:
    from llamabench.tasks.kinds import TaskKind
    from llamabench.tasks.spec import TaskSpec


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
    the document itself nor a document equal to it (see :func:`fewshot_indices`). Each document's rendered text
    is bounded (:func:`render_budget`), and two documents may not share a ``doc_id``.
    """
    pool = docs if fewshot_pool is None else fewshot_pool
    shots = spec.num_fewshot if num_fewshot is None else num_fewshot
    kind = kind_of(spec)
    if shots and not kind.takes_fewshot:
        raise LlamabenchError(
            f"task {spec.name}: few-shot examples make no sense for kind {kind.name}, which scores each document's "
            "own text; use --num-fewshot 0"
        )
    if shots and shots >= len(pool):
        raise LlamabenchError(f"task {spec.name}: {shots} few-shot examples need more than {len(pool)} documents")
    built = []
    first_of: dict[str, int] = {}
    for index, doc in enumerate(docs):
        try:
            built.append(_build_one(spec, kind, doc, index, pool, shots, seed))
        except LlamabenchError:
            raise
        except TooMuchWorkError as exc:
            raise LlamabenchError(
                f"task {spec.name}: document {index}: {exc}, which no prompt needs (a loop doing work it never "
                "prints); fix the task's templates"
            ) from None
        except TooMuchTextError as exc:
            raise LlamabenchError(
                f"task {spec.name}: document {index} renders to more text than its data can account for "
                f"({exc}; the bound is {RENDER_SLACK} characters plus {RENDER_FACTOR} times the text of the "
                "document and its few-shot examples); a template, delimiter or few-shot count multiplies text: "
                "fix the task"
            ) from None
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
        doc_id = built[-1].doc_id
        if doc_id in first_of:  # ids key the results, the per-document tables and the paired comparisons
            source = spec.dataset.local or spec.dataset.hub_path
            raise LlamabenchError(
                f"task {spec.name}: doc_id {doc_id!r} is given to documents {first_of[doc_id]} and {index} of "
                f"{source}; each document needs its own id: fix the data or the task's doc_id template"
            )
        first_of[doc_id] = index
    return built


# What one document may render to, few-shot examples, answers and choices included: the text its templates
# and delimiters may add (a task file holds at most 1 MiB of it) plus a multiple of the text of the document and
# of its examples. Ordinary tasks stay far below; a template or delimiter that multiplies text (aliases, `*`,
# loops, thousands of shots of a long delimiter) stops at this bound instead of filling the memory and the disk.
RENDER_SLACK = 2 << 20
RENDER_FACTOR = 16


def render_budget(docs: list[dict]) -> int:
    """The characters the rendering of a document whose few-shot examples are ``docs[1:]`` may produce."""
    return RENDER_SLACK + RENDER_FACTOR * sum(_text_size(doc) for doc in docs)


def _text_size(value: object) -> int:
    """Characters of text (and of numbers, as printed) in a document's fields, nested lists and mappings too."""
    if isinstance(value, dict):
        return sum(_text_size(key) + _text_size(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return sum(map(_text_size, value))
    return len(value) if isinstance(value, str) else len(str(value))


def _build_one(
    spec: TaskSpec, kind: TaskKind, doc: dict, index: int, pool: list[dict], shots: int, seed: int
) -> DocRequests:
    picked = fewshot_indices(spec.name, doc, index, pool, shots, seed) if shots else []
    with text_budget(render_budget([doc, *(pool[i] for i in picked)])), time_limit():
        doc_id = render(spec.doc_id, doc) if spec.doc_id else str(index)
        prompt = render(spec.prompt, doc)
        if picked:
            prompt = _fewshot_prefix(spec, kind, pool, picked) + prompt
        return kind.build(spec, doc, doc_id, prompt, index=index, seed=seed)


def fewshot_indices(task: str, doc: dict, index: int, pool: list[dict], shots: int, seed: int) -> list[int]:
    """The pool positions of document ``index``'s few-shot examples, by lm-eval's rule (``ContextSampler``): draw
    ``shots + 1``, drop every draw equal to the document (itself, a copy, or an identical twin: the same example
    either way), keep the first ``shots``; if copies left fewer, draw ``shots`` again from the pool without them.
    The generator is seeded per document (``seed``, task, index), so a document's examples do not depend on the
    documents before it or on ``--limit``."""
    rng = random.Random(f"{seed}:{task}:{index}")
    picked = [i for i in rng.sample(range(len(pool)), shots + 1) if not _same(pool[i], doc)][:shots]
    if len(picked) < shots:
        others = [i for i in range(len(pool)) if not _same(pool[i], doc)]
        if len(others) < shots:
            raise LlamabenchError(
                f"task {task}: document {index} has {len(others)} other documents to draw {shots} few-shot "
                "examples from (the rest are copies of it); lower --num-fewshot or remove the copies"
            )
        picked = rng.sample(others, shots)
    return picked


def _same(example: dict, doc: dict) -> bool:
    """The same document: the object itself or an equal one (lm-eval's test is equality alone)."""
    return example is doc or example == doc


def _fewshot_prefix(spec: TaskSpec, kind: TaskKind, pool: list[dict], picked: list[int]) -> str:
    examples = [
        render(spec.prompt, pool[i]) + spec.target_delimiter + kind.gold_answer(spec, pool[i], str(i)) for i in picked
    ]
    spend(len(spec.fewshot_delimiter) * len(examples) + len(spec.target_delimiter) * len(examples))
    return spec.fewshot_delimiter.join(examples) + spec.fewshot_delimiter
