"""The evaluation side of a contamination scan: each document of a task as the task renders it, and its tokens.

A document's text is its prompt without few-shot examples, followed by the task's target delimiter and its gold
answer (the text a few-shot example would show for it); a perplexity task's document is its text alone. The
documents are those ``llamabench run`` scores (``native.prepare_tasks`` with no few-shot examples), so the
``doc_id`` of a contamination row is the ``doc_id`` of a run's sample row.

Only the document's own words count: a character of the rendered text is the document's when it lies in an
occurrence of one of the document's text fields (any string in its data record, nested ones too, of two
characters or more); the template's words around them ("Translate the following German text...") are matched but
not counted (see :class:`~llamabench.contamination.criterion.SampleIndex`). A text in which no field occurs (a
template that transforms its field, as wikitext's detokeniser does) counts whole. A token is the document's when
any of its characters is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llamabench.config import RunConfig
from llamabench.native import prepare_tasks
from llamabench.requests import DocRequests
from llamabench.tasks.build import build_requests
from llamabench.tasks.kinds import kind_of
from llamabench.tasks.spec import TaskSpec


@dataclass(frozen=True)
class EvalSample:
    """One document of ``task``: its id, its text as rendered, that text's token ids and which tokens count (those
    holding a character of the document's own, :func:`own_characters`)."""

    task: str
    doc_id: str
    text: str
    tokens: np.ndarray
    counted: np.ndarray


def sample_text(spec: TaskSpec, doc: DocRequests) -> str:
    """The document's own text: its prompt (no few-shot examples) and, when it has one, its gold answer."""
    if not doc.targets:
        return doc.prompt
    return doc.prompt + spec.target_delimiter + doc.targets[0]


def own_characters(text: str, record: dict) -> np.ndarray:
    """Which characters of ``text`` lie in an occurrence of one of ``record``'s strings (all, if none occurs)."""
    own = np.zeros(len(text), dtype=bool)
    for value in set(_strings(record)):
        start = text.find(value)
        while start >= 0:
            own[start : start + len(value)] = True
            start = text.find(value, start + 1)
    return own if own.any() else np.ones(len(text), dtype=bool)


def _strings(value: object):
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str) and len(value.strip()) >= 2:
        yield value.strip()


@dataclass(frozen=True)
class SampleText:
    """A document as rendered, and which of its characters are its own."""

    task: str
    doc_id: str
    text: str
    own: np.ndarray


def task_texts(
    tasks: list[str],
    *,
    data_dir: Path | None = None,
    tasks_dir: list[Path] | None = None,
    limit: int | None = None,
    text: list[str] | None = None,
    text_format: str | None = None,
) -> list[SampleText]:
    """Every scored document of ``tasks`` (and of the ``--text`` files ``text``) as ``llamabench run
    --num-fewshot 0`` renders it, with its own characters marked (bad task names or data: one-line errors)."""
    config = RunConfig(
        tasks=tasks,
        data_dir=data_dir,
        tasks_dir=tasks_dir or [],
        limit=limit,
        num_fewshot=0,
        text=text or [],
        text_format=text_format,
    )
    texts = []
    for task in prepare_tasks(config.validate()):
        kind = kind_of(task.spec)
        # Rendered again beside their records (prepare_tasks keeps only the scored ones): the same requests.
        for record, doc in zip(task.docs, build_requests(task.spec, task.docs, num_fewshot=0), strict=True):
            if kind.scorable(doc):
                text = sample_text(task.spec, doc)
                texts.append(SampleText(task.spec.name, doc.doc_id, text, own_characters(text, record)))
    return texts


def tokenize_samples(texts: list[SampleText], tokenizer) -> list[EvalSample]:
    """Each text with its token ids under ``tokenizer`` (a ``tokenizers.Tokenizer``) and which of them count."""
    encodings = tokenizer.encode_batch([item.text for item in texts], add_special_tokens=False)
    samples = []
    for item, encoding in zip(texts, encodings, strict=True):
        counted = np.array([item.own[start:end].any() for start, end in encoding.offsets], dtype=bool)
        tokens = np.asarray(encoding.ids, dtype=np.int64)
        samples.append(EvalSample(item.task, item.doc_id, item.text, tokens, counted))
    return samples
