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

A document is also looked for in the form its data is distributed in: each string of a record field that the
task's templates read but that does not occur in the rendered text (wikitext's raw page, with its " @-@ "
escapes, beside the detokenised page the task renders) is a further *form* of the document, counted whole. The
raw test file used as the corpus then holds the document. A document's contamination is that of its most
contaminated form (see ``result.py``).
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

PROMPT = "prompt"


@dataclass(frozen=True)
class EvalSample:
    """One form of a document of ``task``: its id, the form's text, that text's token ids and which tokens count
    (those holding a character of the document's own, :func:`own_characters`)."""

    task: str
    doc_id: str
    text: str
    tokens: np.ndarray
    counted: np.ndarray
    form: str = PROMPT


def sample_text(spec: TaskSpec, doc: DocRequests) -> str:
    """The document's own text: its prompt (no few-shot examples) and, when it has one, its gold answer."""
    if not doc.targets:
        return doc.prompt
    return doc.prompt + spec.target_delimiter + doc.targets[0]


def own_characters(text: str, record: dict) -> np.ndarray:
    """Which characters of ``text`` lie in an occurrence of one of ``record``'s strings (all, if none occurs)."""
    own = np.zeros(len(text), dtype=bool)
    for value in {value.strip() for _, value in _named_strings(record, "")}:
        start = text.find(value)
        while start >= 0:
            own[start : start + len(value)] = True
            start = text.find(value, start + 1)
    return own if own.any() else np.ones(len(text), dtype=bool)


@dataclass(frozen=True)
class SampleText:
    """A form of a document (``prompt``: as rendered; ``record:<field>``: a string of its record), and which of its
    characters are its own."""

    task: str
    doc_id: str
    text: str
    own: np.ndarray
    form: str = PROMPT


def template_fields(spec: TaskSpec) -> set[str]:
    """The names the task's prompt, target and choices templates read (a record's fields among them)."""
    import jinja2
    from jinja2 import nodes

    sources = [spec.prompt]
    for templates in (spec.target, spec.choices):
        sources += [templates] if isinstance(templates, str) else list(templates or [])
    environment = jinja2.Environment()  # parsing only: the task's own filters are not needed to read the names
    return {name.name for source in sources for name in environment.parse(source).find_all(nodes.Name)}


def record_forms(task: str, doc_id: str, rendered: str, record: dict, fields: set[str]) -> list[SampleText]:
    """The strings of ``record``'s ``fields`` that the rendered text does not hold, each a form counted whole."""
    forms, seen = [], set()
    for name, value in _named_strings({key: record[key] for key in sorted(fields) if key in record}, ""):
        if value not in rendered and value not in seen:
            seen.add(value)
            forms.append(SampleText(task, doc_id, value, np.ones(len(value), dtype=bool), f"record:{name}"))
    return forms


def _named_strings(value: object, name: str):
    """``(path, string)`` for every string in ``value`` of two characters or more (stripped), nested ones too."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _named_strings(item, f"{name}.{key}" if name else str(key))
    elif isinstance(value, list | tuple):
        for position, item in enumerate(value):
            yield from _named_strings(item, f"{name}[{position}]")
    elif isinstance(value, str) and len(value.strip()) >= 2:
        yield name, value


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
    --num-fewshot 0`` renders it, with its own characters marked, each followed by its record's forms (bad task
    names or data: one-line errors)."""
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
        fields = template_fields(task.spec)
        # Rendered again beside their records (prepare_tasks keeps only the scored ones): the same requests.
        for record, doc in zip(task.docs, build_requests(task.spec, task.docs, num_fewshot=0), strict=True):
            if kind.scorable(doc):
                text = sample_text(task.spec, doc)
                texts.append(SampleText(task.spec.name, doc.doc_id, text, own_characters(text, record)))
                texts += record_forms(task.spec.name, doc.doc_id, text, record, fields)
    return texts


def tokenize_samples(texts: list[SampleText], tokenizer) -> list[EvalSample]:
    """Each text with its token ids under ``tokenizer`` (a ``tokenizers.Tokenizer``) and which of them count."""
    encodings = tokenizer.encode_batch([item.text for item in texts], add_special_tokens=False)
    samples = []
    for item, encoding in zip(texts, encodings, strict=True):
        counted = np.array([item.own[start:end].any() for start, end in encoding.offsets], dtype=bool)
        tokens = np.asarray(encoding.ids, dtype=np.int64)
        samples.append(EvalSample(item.task, item.doc_id, item.text, tokens, counted, item.form))
    return samples
