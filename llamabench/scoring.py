"""Scores: per-sample and aggregate metrics from the outcomes of a task's documents."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from llamabench.backends.finite import DIVERGED
from llamabench.errors import LlamabenchError, warn
from llamabench.metrics import get_metric
from llamabench.metrics.base import Outcome
from llamabench.records.results import MetricValue
from llamabench.requests import DocRequests
from llamabench.tasks.kinds import kind_of
from llamabench.tasks.spec import TaskSpec


def score(
    spec: TaskSpec,
    docs: Sequence[DocRequests],
    outcomes: Sequence[Outcome],
    *,
    bootstrap_iters: int = 1000,
    seed: int = 0,
    model: str | None = None,
) -> tuple[list[MetricValue], pd.DataFrame]:
    """Aggregate figures with standard errors, and the per-sample table.

    The per-sample table has each metric's per-document value and a ``stats`` column holding, as JSON,
    each metric's sufficient statistics for that document (``Metric.aggregate`` of any subset of rows).
    Outcomes holding a NaN or infinite log-likelihood (from a backend that does not check its own numbers)
    are refused with one line naming ``model``, the task and the first such document: nothing is scored.
    """
    kind = kind_of(spec)
    require_finite_outcomes(spec.name, outcomes, model, kind.loglikelihoods)
    samples = pd.DataFrame(
        {
            "doc_id": [o.doc_id for o in outcomes],
            "prompt_hash": [d.prompt_hash for d in docs],
            "prompt": [d.prompt for d in docs],
            "prediction": [o.prediction for o in outcomes],
            "target": [json.dumps(o.targets, ensure_ascii=False) for o in outcomes],
            "loglikelihood": [kind.loglikelihood_column(o) for o in outcomes],
            "n_tokens": [o.n_tokens for o in outcomes],
            "truncated_tokens": _counts([o.truncated_tokens for o in outcomes]),
        }
    )
    values, stats_by_metric = [], {}
    for name in spec.metrics:
        metric = get_metric(name)
        stats = metric.stats(outcomes)
        stats_by_metric[name] = stats.tolist()
        samples[name] = per_sample = metric.per_sample(stats)
        values.append(
            metric_value(name, stats, signature=metric.signature(outcomes), bootstrap_iters=bootstrap_iters, seed=seed)
        )
        value = values[-1].value
        # A document's own figure may be undefined (NaN: no value for it alone); an infinite one has overflowed.
        overflowed = [i for i, v in enumerate(per_sample) if math.isinf(v)] if math.isfinite(value) else [0]
        if overflowed:  # the outcomes are finite (checked above): the figure itself overflows
            where = "" if not math.isfinite(value) else f" on document {outcomes[overflowed[0]].doc_id}"
            raise LlamabenchError(
                f"model {model}, task {spec.name}: {name} comes to infinity{where} from finite log-likelihoods, "
                "past what a float holds (a perplexity whose exponent passes about 709: too many nats per unit, as "
                "for text with few words); drop the metric from the task or score bits_per_byte instead"
            )
    # Each metric's sufficient statistics per document: any subset re-aggregates exactly (paired tests, rescoring).
    samples["stats"] = [
        json.dumps({name: rows[i] for name, rows in stats_by_metric.items()}) for i in range(len(outcomes))
    ]
    return values, samples


def metric_value(
    name: str, stats: np.ndarray, *, signature: str | None, bootstrap_iters: int, seed: int
) -> MetricValue:
    """The aggregate row of metric ``name`` over the documents whose sufficient statistics are ``stats``: how a
    run scores a task, and how ``llamabench merge`` scores the joined documents of its shards."""
    metric = get_metric(name)
    return MetricValue(
        metric=name,
        value=metric.aggregate(stats),
        stderr=metric.standard_error(stats, iters=bootstrap_iters, seed=seed),
        n=len(stats),
        higher_is_better=metric.higher_is_better,
        signature=signature,
    )


def sample_stats(samples: pd.DataFrame, metric: str) -> np.ndarray:
    """Metric ``metric``'s ``[n, k]`` sufficient statistics of the documents of a per-sample table, in its order
    (read from the ``stats`` column :func:`score` writes)."""
    return np.array([json.loads(stats)[metric] for stats in samples.stats])


def _counts(values: list[int | None]) -> list[int] | pd.arrays.IntegerArray:
    """Whole numbers as a plain integer column; with any unknown (None), nullable integers, so an unknown count
    stays unknown (<NA>), never 0 or a float."""
    return pd.array(values, dtype="Int64") if None in values else values


def truncation_notes(task: str, samples: pd.DataFrame) -> dict:
    """A task's truncation totals for the manifest (None when any document's count is unknown), with one warning
    line when any document was cut to the context window: scores of cut documents are not scores of the text."""
    counts = samples["truncated_tokens"]
    if counts.isna().any():
        return {"truncated_documents": None, "truncated_tokens": None}
    cut, dropped = int((counts > 0).sum()), int(counts.sum())
    if cut:
        warn(
            f"task {task}: {cut} of {len(counts)} documents were truncated to the context window ({dropped} tokens "
            "dropped in all); their scores see only the kept tokens: raise --max-length if the model allows, or "
            "shorten the prompts (per-document counts: the samples' truncated_tokens column)"
        )
    return {"truncated_documents": cut, "truncated_tokens": dropped}


def require_finite_outcomes(
    task: str, outcomes: Sequence[Outcome], model: str | None, loglikelihoods: Callable[[Outcome], list[float]]
) -> None:
    """Raise a one-line LlamabenchError when any outcome holds a NaN or infinite log-likelihood (the
    ``loglikelihoods`` of its task's kind)."""
    broken = [o.doc_id for o in outcomes if not all(math.isfinite(v) for v in loglikelihoods(o))]
    if broken:
        raise LlamabenchError(
            f"model {model or '(unnamed)'}, task {task}: the model produced non-finite log-probabilities for "
            f"{len(broken)} document(s) (first: doc_id {broken[0]!r}); {DIVERGED}"
        )
