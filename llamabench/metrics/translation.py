"""Corpus BLEU and chrF through sacrebleu, kept as per-segment sufficient statistics.

Each row holds the segment's sacrebleu statistics (n-gram matches and totals, lengths), so the aggregate of
any subset of rows is exactly sacrebleu's ``corpus_score`` on that subset. ``Outcome.targets`` holds the
segment's references; every outcome in one call must have the same number of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.metrics.base import Metric as SacreMetric

from llamabench.errors import LlamabenchError
from llamabench.metrics.base import Metric, Outcome

_FACTORIES: dict[str, Callable[[], SacreMetric]] = {"bleu": BLEU, "chrf": CHRF}


def signature(metric_name: str, n_refs: int | None) -> str:
    """sacrebleu's signature string for ``metric_name`` with ``n_refs`` references (``None`` omits nrefs)."""
    if metric_name not in _FACTORIES:
        raise LlamabenchError(f"no sacrebleu signature for '{metric_name}'; known: {', '.join(_FACTORIES)}")
    scorer = _FACTORIES[metric_name]()
    scorer.num_refs = n_refs
    return scorer.get_signature().format()


def _reference_streams(name: str, outcomes: Sequence[Outcome]) -> list[tuple[str, ...]]:
    """Transpose per-segment references into sacrebleu's per-reference streams, checking their count."""
    counts = {len(outcome.targets) for outcome in outcomes}
    if not outcomes or 0 in counts or len(counts) != 1:
        raise LlamabenchError(
            f"{name} needs at least one outcome and the same number (>= 1) of references for every segment; "
            f"got {len(outcomes)} outcomes with reference counts {sorted(counts)}"
        )
    return list(zip(*(outcome.targets for outcome in outcomes), strict=True))


def _sacrebleu_metric(name: str) -> Metric:
    scorer = _FACTORIES[name]()

    def stats(outcomes: Sequence[Outcome]) -> np.ndarray:
        streams = _reference_streams(name, outcomes)
        hypotheses = [outcome.prediction or "" for outcome in outcomes]
        return np.array(scorer._extract_corpus_statistics(hypotheses, streams), dtype=np.int64)

    def aggregate(rows: np.ndarray) -> float:
        return float(scorer._compute_score_from_stats(rows.sum(axis=0).tolist()).score)

    return Metric(
        name=name,
        higher_is_better=True,
        stats=stats,
        aggregate=aggregate,
        is_mean=False,
        signature=signature(name, None),
        kinds=("generate",),
    )


bleu = _sacrebleu_metric("bleu")
chrf = _sacrebleu_metric("chrf")

METRICS = [bleu, chrf]
