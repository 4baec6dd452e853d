"""The task behind ``llamabench run --text PATH``: the perplexity of the files at PATH, with no task YAML."""

from __future__ import annotations

from dataclasses import replace

from llamabench.results import safe_name
from llamabench.tasks.spec import TaskSpec, parse_task
from llamabench.tasks.text_readers import TEXT_FIELD

TEXT_METRICS = ["word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity"]


def text_task(path: str, text_format: str = "text", word_rule: str = "lm_eval") -> TaskSpec:
    """A ``loglikelihood_rolling`` task named ``text:<path, file-name safe>`` over a file, folder or glob.

    It goes through the same validation as a task YAML, so ``text_format`` and ``word_rule`` are checked there.
    """
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
