"""Rolling-loglikelihood metrics as lm-eval 0.4 defines them (all lower is better).

Stats rows are ``[loglikelihood, units]``, where units are the words, UTF-8 bytes or tokens of the
document; the aggregate over rows is ``exp(-sum(ll) / sum(units))`` (``bits_per_byte``:
``-sum(ll) / sum(bytes) / ln 2``). Words and bytes are counted on ``Outcome.units_text``, the original
document text; words by the task's ``word_rule`` (``Outcome.word_rule``), one of :data:`WORD_RULES`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from llamabench.errors import LlamabenchError
from llamabench.metrics.base import Metric, Outcome


def lm_eval_words(text: str) -> int:
    """Words as lm-eval counts them: ``len(re.split(r"\\s+", text))``, which counts an empty word at each end
    of a text that starts or ends with whitespace."""
    return len(re.split(r"\s+", text))


def whitespace_tokens(text: str) -> int:
    """Runs of non-whitespace characters: ``len(text.split())``, no empty words."""
    return len(text.split())


WORD_RULES: dict[str, Callable[[str], int]] = {"lm_eval": lm_eval_words, "whitespace_tokens": whitespace_tokens}


def word_rule_signature(rule: str) -> str:
    """The ``signature`` of a word_perplexity row (``words:lm_eval``): figures under other rules never pass for it."""
    return f"words:{rule}"


def count_words(outcome: Outcome) -> int:
    """Words of the document text by the outcome's word rule."""
    return WORD_RULES[outcome.word_rule](_units_text(outcome))


def count_bytes(outcome: Outcome) -> int:
    """UTF-8 bytes of the original document text."""
    return len(_units_text(outcome).encode("utf-8"))


def count_tokens(outcome: Outcome) -> int:
    """Tokens the model scored (``Outcome.n_tokens``)."""
    if outcome.n_tokens is None:
        raise LlamabenchError(f"document '{outcome.doc_id}' has no token count; the backend must report n_tokens")
    return outcome.n_tokens


def _units_text(outcome: Outcome) -> str:
    if outcome.units_text is None:
        raise LlamabenchError(f"document '{outcome.doc_id}' has no units_text to count words/bytes on")
    return outcome.units_text


_MAX_EXPONENT = math.log(np.finfo(np.float64).max)


def _perplexity(rows: np.ndarray) -> float:
    loglikelihood, units = rows.sum(axis=0)
    exponent = float(-loglikelihood / units)
    return math.exp(exponent) if exponent < _MAX_EXPONENT else math.inf  # a hopeless model, not a crash


def _bits(rows: np.ndarray) -> float:
    loglikelihood, units = rows.sum(axis=0)
    return float(-loglikelihood / units / math.log(2))


def _loglikelihood_metric(
    name: str,
    count_units: Callable[[Outcome], int],
    aggregate: Callable[[np.ndarray], float],
    tokenizer_dependent: bool = False,
) -> Metric:
    def stats(outcomes: Sequence[Outcome]) -> np.ndarray:
        rows = []
        for outcome in outcomes:
            if outcome.loglikelihood is None:
                raise LlamabenchError(f"{name}: document '{outcome.doc_id}' has no loglikelihood")
            rows.append((outcome.loglikelihood, count_units(outcome)))
        return np.array(rows, dtype=float).reshape(-1, 2)

    return Metric(
        name=name,
        higher_is_better=False,
        stats=stats,
        aggregate=aggregate,
        is_mean=False,
        kinds=("loglikelihood_rolling",),
        tokenizer_dependent=tokenizer_dependent,
    )


word_perplexity = _loglikelihood_metric("word_perplexity", count_words, _perplexity)
byte_perplexity = _loglikelihood_metric("byte_perplexity", count_bytes, _perplexity)
bits_per_byte = _loglikelihood_metric("bits_per_byte", count_bytes, _bits)
token_perplexity = _loglikelihood_metric("token_perplexity", count_tokens, _perplexity, tokenizer_dependent=True)

METRICS = [word_perplexity, byte_perplexity, bits_per_byte, token_perplexity]
