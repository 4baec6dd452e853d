"""Corpus BLEU and chrF through sacrebleu, kept as per-segment sufficient statistics.

Each row holds the segment's sacrebleu statistics (n-gram matches and totals, lengths), so the aggregate of
any subset of rows is exactly sacrebleu's ``corpus_score`` on that subset. ``Outcome.targets`` holds the
segment's references; every outcome in one call must have the same number of them.

sacrebleu's public API scores a corpus but does not hand out per-segment statistics, so this module calls two
of its methods that are not public (``_extract_corpus_statistics`` and ``_compute_score_from_stats``), checked
against the sacrebleu releases in :data:`VERIFIED_SACREBLEU` (pinned in pyproject.toml; a test fails on others).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.metrics.base import Metric as SacreMetric

from llamabench.errors import LlamabenchError
from llamabench.metrics.base import CorpusMetric, Outcome

# The sacrebleu releases whose statistics methods this module was checked against: [first, last).
VERIFIED_SACREBLEU = ("2.0", "2.7")


class SacrebleuMetric(CorpusMetric):
    """A sacrebleu corpus metric on generated text, at sacrebleu's default settings."""

    sacrebleu_class: ClassVar[type[SacreMetric]]
    higher_is_better = True
    scale = "0-100"
    needs = ("prediction", "targets")

    def __init__(self) -> None:
        self._scorer = self.sacrebleu_class()

    def stats(self, outcomes: Sequence[Outcome]) -> np.ndarray:
        streams = _reference_streams(self.name, outcomes)
        hypotheses = [outcome.prediction or "" for outcome in outcomes]
        # Counts stay integers; TER's reference length is an average over references, a float.
        return np.array(self._scorer._extract_corpus_statistics(hypotheses, streams))

    def score_from(self, totals: np.ndarray) -> float:
        return float(self._scorer._compute_score_from_stats(totals.tolist()).score)

    def signature(self, outcomes: Sequence[Outcome]) -> str:
        """sacrebleu's signature, with the number of references the outcomes carry."""
        return self.signature_for(len(outcomes[0].targets) if outcomes else None)

    def signature_for(self, n_refs: int | None) -> str:
        """sacrebleu's signature with ``n_refs`` references (``None`` omits nrefs)."""
        scorer = self.sacrebleu_class()
        scorer.num_refs = n_refs
        return scorer.get_signature().format()


class Bleu(SacrebleuMetric):
    """Corpus BLEU (Papineni et al., 2002) with sacrebleu's 13a tokenisation and exponential smoothing."""

    name = "bleu"
    sacrebleu_class = BLEU


class Chrf(SacrebleuMetric):
    """Character n-gram F-score, chrF (Popović, 2015), beta 2, character order 6."""

    name = "chrf"
    sacrebleu_class = CHRF


def _reference_streams(name: str, outcomes: Sequence[Outcome]) -> list[tuple[str, ...]]:
    """Transpose per-segment references into sacrebleu's per-reference streams, checking their count."""
    counts = {len(outcome.targets) for outcome in outcomes}
    if not outcomes or 0 in counts or len(counts) != 1:
        raise LlamabenchError(
            f"{name} needs at least one outcome and the same number (>= 1) of references for every segment; "
            f"got {len(outcomes)} outcomes with reference counts {sorted(counts)}"
        )
    return list(zip(*(outcome.targets for outcome in outcomes), strict=True))
