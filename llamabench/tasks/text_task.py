"""The task behind ``llamabench run --text PATH``: the perplexity of the files at PATH, with no task YAML."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from llamabench.escaping import safe_name
from llamabench.tasks.spec import TaskSpec
from llamabench.tasks.task_file import normal_path, parse_task
from llamabench.tasks.text_readers import TEXT_FIELD

TEXT_METRICS = ["word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity"]


def text_task(path: str, text_format: str = "text", word_rule: str = "lm_eval") -> TaskSpec:
    """A ``loglikelihood_rolling`` task named ``text:<path, file-name safe>`` over a file, folder or glob.

    It goes through the same validation as a task YAML, so ``text_format`` and ``word_rule`` are checked there.
    One file or folder named several ways (``books``, ``./books/``, absolute, through a symlink) is one task: the
    name and the path it reads are those of :func:`canonical_text_path`.
    """
    path = canonical_text_path(path)
    raw = {
        "name": "text",  # a placeholder: YAML task names may not hold the ':' that marks this family
        "description": f"perplexity of {path} ({text_format})",
        "kind": "loglikelihood_rolling",
        "dataset": {"local": path, "format": text_format},
        "prompt": "{{ " + TEXT_FIELD + " }}",
        "metrics": TEXT_METRICS,
        "word_rule": word_rule,
    }
    return replace(parse_task(raw, f"--text {path}"), name="text:" + safe_name(path.rstrip("/")))


def canonical_text_path(path: str) -> str:
    """An existing ``path`` as its real location relative to the real working directory (absolute when it lies
    outside); a glob pattern or a missing path spelled lexically normalised (``./a//b/`` is ``a/b``)."""
    if not os.path.lexists(path):
        return normal_path(path) or path
    real, cwd = Path(path).resolve(), Path.cwd().resolve()
    return real.relative_to(cwd).as_posix() if real.is_relative_to(cwd) else real.as_posix()
