"""Task kinds: what each kind of task asks of a model, and how the answers become the outcomes metrics score.

A kind is one class, registered under its ``name`` (the ``kind:`` of a task YAML) when it is defined. It knows

- ``keys``: the YAML keys, beyond those every task has (``spec.COMMON_KEYS``), that a task of its kind may give
  (any other is refused, naming the key, the kind and the file); ``required_keys``: those it must give;
- ``takes_fewshot`` and ``takes_text_files``: whether solved examples may precede a prompt and whether
  plain-text data files (text, lines, paragraphs) fit;
- ``outcome_fields``: the :class:`Outcome` fields its outcomes fill, which a metric's ``needs`` must be within;
- ``check_fits``: refuse, before any request runs, documents the backend's window cannot hold;
  ``generates``: whether its requests generate text (the checkpoint's generation settings then apply);
- ``build``: one document's requests, from its id and rendered prompt; ``gold_answer``: the answer a few-shot
  example shows after its prompt;
- ``run``: which backend call answers its requests;
- ``outcome``: one document's results, in its requests' order, as the :class:`Outcome` its metrics score;
- ``scorable``: whether a document is scored at all (an empty text has no perplexity: skipped and counted);
- ``with_chat_template``: the document with its prompt wrapped in the model's chat template;
- ``loglikelihoods`` and ``loglikelihood_column``: the log-likelihoods an outcome holds (checked finite) and
  how the samples table shows them.

:func:`run_documents` hands every document exactly its own results: each request is flattened with its key
(document index, request index), and the results come back through those keys; a backend that returns more or
fewer results than it was given requests is an error, never a silent shift onto the next document.

Worked example, ``multiple_choice``: a document ``{"q": "Sky?", "options": ["red", "blue"], "answer": 1}``
under ``prompt: "{{ q }}"``, ``choices: "{{ options }}"``, ``label: "{{ answer }}"`` builds the two requests
``LoglikelihoodRequest("Sky?", " red")`` and ``LoglikelihoodRequest("Sky?", " blue")``, which
``Backend.loglikelihood`` answers. Results ``[(-4.0, False), (-1.0, True)]`` give the outcome with
``choice_loglikelihoods=[-4.0, -1.0]``, ``prediction="blue"``, ``label=1`` and ``targets=["blue"]``: acc 1.
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from llamabench.digits import ascii_int
from llamabench.errors import LlamabenchError
from llamabench.metrics.base import Outcome
from llamabench.requests import (
    DocRequests,
    GenerationRequest,
    LoglikelihoodRequest,
    Request,
    RollingRequest,
    require_prompt_room,
    sampling_seed,
)
from llamabench.tasks.templates import render, render_list

if TYPE_CHECKING:
    from llamabench.backends.base import Backend, OnDone
    from llamabench.tasks.spec import TaskSpec

# Every kind, by name, in the order the classes are defined below: filled as they are defined.
KINDS: dict[str, TaskKind] = {}


class TaskKind(ABC):
    """One kind of task: its requests, the backend call that answers them, and its outcomes (see the module)."""

    name: ClassVar[str]
    keys: ClassVar[tuple[str, ...]]
    required_keys: ClassVar[tuple[str, ...]]
    outcome_fields: ClassVar[tuple[str, ...]]
    takes_fewshot: ClassVar[bool] = True
    takes_text_files: ClassVar[bool] = False
    generates: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if inspect.isabstract(cls):
            return
        if cls.name in KINDS:
            raise TypeError(f"task kind '{cls.name}' is taken by {type(KINDS[cls.name]).__qualname__}")
        KINDS[cls.name] = cls()

    @abstractmethod
    def build(self, spec: TaskSpec, doc: dict, doc_id: str, prompt: str, *, index: int, seed: int) -> DocRequests:
        """The requests of document number ``index`` (``prompt`` rendered, few-shot examples included)."""

    def gold_answer(self, spec: TaskSpec, doc: dict, doc_id: str) -> str:
        """The answer a few-shot example shows after its prompt: the first target."""
        return render_list(spec.target, doc)[0]

    @abstractmethod
    def run(self, backend: Backend, requests: Sequence[Request], on_done: OnDone | None = None) -> list:
        """The backend's results for ``requests``, one per request, in order."""

    @abstractmethod
    def outcome(self, spec: TaskSpec, doc: DocRequests, results: list) -> Outcome:
        """What the model produced for ``doc``, from the results of its requests (in their order)."""

    def scorable(self, doc: DocRequests) -> bool:
        """Whether ``doc`` is scored; one that is not is skipped and counted, not scored as zero."""
        return True

    def check_fits(  # noqa: B027
        self, task: str, docs: Sequence[DocRequests], max_length: int, model: str | None = None
    ) -> None:
        """Refuse (one line naming ``task``, and ``model`` when ``max_length`` is that model's own context)
        documents a ``max_length`` window cannot hold at all; most kinds fit any window (scoring truncates and
        counts, rolling windows)."""

    def loglikelihoods(self, outcome: Outcome) -> list[float]:
        """The log-likelihoods ``outcome`` holds, all of which must be finite."""
        return []

    def loglikelihood_column(self, outcome: Outcome) -> float | str | None:
        """What the samples table's ``loglikelihood`` column shows for ``outcome``."""
        return None

    @abstractmethod
    def with_chat_template(self, doc: DocRequests, wrap: Callable[[str], str]) -> DocRequests:
        """``doc`` with its prompt, few-shot examples included, passed through ``wrap`` (the model's chat template)."""


# Keys of the kinds that render a prompt for the model to answer: few-shot examples before it, a chat template
# around it, the delimiters between example, prompt and answer.
_PROMPTED = ("num_fewshot", "fewshot_delimiter", "target_delimiter", "chat_template")


class Rolling(TaskKind):
    """The log-likelihood of each document's whole text: perplexities."""

    name = "loglikelihood_rolling"
    # No few-shot keys, no chat template: the text is scored as it is.
    keys = ("units", "stride", "word_rule")
    required_keys = ("prompt",)
    outcome_fields = ("loglikelihood", "n_tokens", "units_text", "word_rule")
    takes_fewshot = False
    takes_text_files = True

    def build(self, spec: TaskSpec, doc: dict, doc_id: str, prompt: str, *, index: int, seed: int) -> DocRequests:
        units = render(spec.units, doc) if spec.units else prompt
        return DocRequests(doc_id, prompt, [RollingRequest(prompt, spec.stride)], units_text=units)

    def run(self, backend: Backend, requests: Sequence[Request], on_done: OnDone | None = None) -> list:
        return backend.loglikelihood_rolling(requests, on_done=on_done)

    def outcome(self, spec: TaskSpec, doc: DocRequests, results: list) -> Outcome:
        ((loglikelihood, n_tokens),) = results
        return Outcome(
            doc_id=doc.doc_id,
            targets=doc.targets,
            loglikelihood=loglikelihood,
            n_tokens=n_tokens,
            units_text=doc.units_text,
            word_rule=spec.word_rule,
        )

    def scorable(self, doc: DocRequests) -> bool:
        return bool(doc.prompt.strip())  # an empty text has no perplexity

    def loglikelihoods(self, outcome: Outcome) -> list[float]:
        return [] if outcome.loglikelihood is None else [outcome.loglikelihood]

    def loglikelihood_column(self, outcome: Outcome) -> float | str | None:
        return outcome.loglikelihood

    def with_chat_template(self, doc: DocRequests, wrap: Callable[[str], str]) -> DocRequests:
        return doc  # the text is scored as it is: a chat turn around it would change what is measured


class Generate(TaskKind):
    """A continuation generated from each prompt, scored against the document's targets."""

    name = "generate"
    keys = ("target", "generation", *_PROMPTED)
    required_keys = ("prompt", "target")
    outcome_fields = ("prediction", "targets")
    generates = True

    def build(self, spec: TaskSpec, doc: dict, doc_id: str, prompt: str, *, index: int, seed: int) -> DocRequests:
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
        settings = spec.generation
        sample_seed = None if settings.greedy else sampling_seed(seed, spec.name, doc_id, index)
        request = GenerationRequest(prompt, settings.max_new_tokens, settings.until, settings.greedy, sample_seed)
        return DocRequests(doc_id, prompt, [request], targets=targets)

    def run(self, backend: Backend, requests: Sequence[Request], on_done: OnDone | None = None) -> list:
        return backend.generate(requests, on_done=on_done)

    def outcome(self, spec: TaskSpec, doc: DocRequests, results: list) -> Outcome:
        (prediction,) = results
        return Outcome(doc_id=doc.doc_id, targets=doc.targets, prediction=prediction)

    def check_fits(self, task: str, docs: Sequence[DocRequests], max_length: int, model: str | None = None) -> None:
        longest = max((r.max_new_tokens for doc in docs for r in doc.requests), default=0)
        require_prompt_room(longest, max_length, task, model)

    def with_chat_template(self, doc: DocRequests, wrap: Callable[[str], str]) -> DocRequests:
        prompt = wrap(doc.prompt)
        return replace(doc, prompt=prompt, requests=[replace(r, prompt=prompt) for r in doc.requests])


class MultipleChoice(TaskKind):
    """The log-likelihood of each choice after the prompt; the likeliest choice is the prediction."""

    name = "multiple_choice"
    keys = ("choices", "label", *_PROMPTED)
    required_keys = ("prompt", "choices", "label")
    # ``prediction`` (the likeliest choice) is shown in the samples table, not offered to metrics: a metric of
    # generated text (exact match, BLEU) would score a choice as if the model had written it.
    outcome_fields = ("choice_loglikelihoods", "choices", "label", "targets")

    def build(self, spec: TaskSpec, doc: dict, doc_id: str, prompt: str, *, index: int, seed: int) -> DocRequests:
        choices = render_list(spec.choices, doc)
        if len(choices) < 2 or not all(choice.strip() for choice in choices):
            raise LlamabenchError(
                f"task {spec.name}: document {doc_id} has choices {json.dumps(choices, ensure_ascii=False)[:80]}; "
                "a multiple-choice question needs at least two non-empty choices, so fix or filter the data"
            )
        label = _resolve_label(spec, render(spec.label, doc), choices, doc_id)
        requests = [LoglikelihoodRequest(prompt, spec.target_delimiter + choice) for choice in choices]
        return DocRequests(doc_id, prompt, requests, targets=[choices[label]], choices=choices, label=label)

    def gold_answer(self, spec: TaskSpec, doc: dict, doc_id: str) -> str:
        choices = render_list(spec.choices, doc)
        return choices[_resolve_label(spec, render(spec.label, doc), choices, doc_id)]

    def run(self, backend: Backend, requests: Sequence[Request], on_done: OnDone | None = None) -> list:
        return backend.loglikelihood(requests, on_done=on_done)

    def outcome(self, spec: TaskSpec, doc: DocRequests, results: list) -> Outcome:
        scores = [loglikelihood for loglikelihood, _ in results]
        return Outcome(
            doc_id=doc.doc_id,
            targets=doc.targets,
            prediction=doc.choices[int(np.argmax(scores))],
            choice_loglikelihoods=scores,
            choices=doc.choices,
            label=doc.label,
        )

    def with_chat_template(self, doc: DocRequests, wrap: Callable[[str], str]) -> DocRequests:
        prompt = wrap(doc.prompt)
        return replace(doc, prompt=prompt, requests=[replace(r, context=prompt) for r in doc.requests])

    def loglikelihoods(self, outcome: Outcome) -> list[float]:
        return list(outcome.choice_loglikelihoods or [])

    def loglikelihood_column(self, outcome: Outcome) -> float | str | None:
        scores = outcome.choice_loglikelihoods
        return None if scores is None else json.dumps([round(v, 6) for v in scores])


def _resolve_label(spec: TaskSpec, label: str, choices: list[str], doc_id: str) -> int:
    """The gold choice's index: ``label`` is an index or the gold choice's text, and must not be both for
    different choices (label "3" with choices ["2", "3", "4", "1"]: index 3 is "1", text "3" is index 1)."""
    number = ascii_int(label)
    as_index = number if number is not None and number < len(choices) else None
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


def run_documents(
    backend: Backend, spec: TaskSpec, docs: Sequence[DocRequests], on_done: OnDone | None = None
) -> list[Outcome]:
    """Every document's outcome: its requests run in one backend call of its kind, its results returned by key.

    ``on_done`` (optional) is passed to that call: its indices are into every document's requests in order.
    """
    kind = kind_of(spec)
    keys = [(d, r) for d, doc in enumerate(docs) for r in range(len(doc.requests))]
    results = kind.run(backend, [docs[d].requests[r] for d, r in keys], on_done)
    if len(results) != len(keys):
        raise LlamabenchError(
            f"task {spec.name}: backend {backend.model_id} returned {len(results)} results for {len(keys)} "
            f"requests; a backend must return one result per request, in order ({type(backend).__name__} does not)"
        )
    by_document: list[list] = [[None] * len(doc.requests) for doc in docs]
    for (d, r), result in zip(keys, results, strict=True):
        by_document[d][r] = result
    truncated = _truncated_per_document(backend, spec, docs, keys)
    return [
        replace(kind.outcome(spec, doc, own), truncated_tokens=dropped)
        for doc, own, dropped in zip(docs, by_document, truncated, strict=True)
    ]


def _truncated_per_document(
    backend: Backend, spec: TaskSpec, docs: Sequence[DocRequests], keys: list[tuple[int, int]]
) -> list[int | None]:
    """Tokens the backend dropped from each document's requests (``Backend.truncated_tokens``); None for a
    document any of whose requests the backend cannot count."""
    counts = backend.truncated_tokens([docs[d].requests[r] for d, r in keys])
    if len(counts) != len(keys):
        raise LlamabenchError(
            f"task {spec.name}: backend {backend.model_id} returned {len(counts)} truncation counts for "
            f"{len(keys)} requests; a backend must return one per request ({type(backend).__name__} does not)"
        )
    totals: list[int | None] = [0] * len(docs)
    for (d, _), count in zip(keys, counts, strict=True):
        totals[d] = None if count is None or totals[d] is None else totals[d] + count
    return totals


def kind_of(spec: TaskSpec) -> TaskKind:
    """The kind ``spec`` names: how its requests are built, run and scored."""
    return KINDS[spec.kind]
