"""The evaluation side of a contamination scan: each document of a task as the task renders it, and its tokens.

A document's text is its prompt without few-shot examples, followed by the task's target delimiter and its gold
answer (the text a few-shot example would show for it); a perplexity task's document is its text alone. The
documents are those ``llamabench run`` scores (``native.prepare_tasks`` with no few-shot examples), so the
``doc_id`` of a contamination row is the ``doc_id`` of a run's sample row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llamabench.config import RunConfig
from llamabench.native import prepare_tasks
from llamabench.requests import DocRequests
from llamabench.tasks.spec import TaskSpec


@dataclass(frozen=True)
class EvalSample:
    """One document of ``task``: its id, its text as rendered, and that text's token ids."""

    task: str
    doc_id: str
    text: str
    tokens: np.ndarray


def sample_text(spec: TaskSpec, doc: DocRequests) -> str:
    """The document's own text: its prompt (no few-shot examples) and, when it has one, its gold answer."""
    if not doc.targets:
        return doc.prompt
    return doc.prompt + spec.target_delimiter + doc.targets[0]


def task_texts(
    tasks: list[str], *, data_dir: Path | None = None, tasks_dir: list[Path] | None = None, limit: int | None = None
) -> list[tuple[str, str, str]]:
    """``(task, doc_id, text)`` of every document of ``tasks``, as ``llamabench run --num-fewshot 0`` renders
    them (bad task names or data: one-line errors)."""
    config = RunConfig(tasks=tasks, data_dir=data_dir, tasks_dir=tasks_dir or [], limit=limit, num_fewshot=0)
    return [
        (task.spec.name, doc.doc_id, sample_text(task.spec, doc))
        for task in prepare_tasks(config.validate())
        for doc in task.requests
    ]


def tokenize_samples(texts: list[tuple[str, str, str]], tokenizer) -> list[EvalSample]:
    """Each ``(task, doc_id, text)`` with its token ids under ``tokenizer`` (a ``tokenizers.Tokenizer``)."""
    encodings = tokenizer.encode_batch([text for _, _, text in texts], add_special_tokens=False)
    return [
        EvalSample(task, doc_id, text, np.asarray(encoding.ids, dtype=np.int64))
        for (task, doc_id, text), encoding in zip(texts, encodings, strict=True)
    ]
