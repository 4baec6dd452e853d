"""Golden values per metric version: every registered metric, at its current ``version``, scores fixed small
outcomes to a pinned figure.

A metric's ``version`` is what keeps runs scored under another definition apart (``comparability.py``), so a
changed formula must come with a bumped version. Here a changed formula at an unchanged version fails
``test_every_metric_scores_its_golden_value``; a bumped version without a golden entry for it, or a new metric
without one, fails ``test_every_registered_metric_has_a_golden_value_for_its_version``. The pinned figures are
computed independently of llamabench (``test_golden_values_are_the_independent_oracles``): sacrebleu for
BLEU, chrF and TER, rouge-score (with the Porter stemmer) for ROUGE, and by hand for the rest.
"""

import math
import re

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from llamabench.metrics import METRICS, Outcome, get_metric

# --- fixed outcomes -----------------------------------------------------------------------------------------

# Multiple choice: ``acc`` takes the largest log-likelihood, ``acc_norm`` the largest per character (lm-eval's
# ``len(choice)``, not bytes). Document 0: -2 / 2 chars = -1 vs -3.9 / 4 = -0.975: acc picks 0, acc_norm 1 (the
# label; per character + 1 it would pick 0). Document 1: -1 / 2 vs -3 / 2: both pick 0, the label. Document 2:
# -5 / 2 vs -1 / 6: both pick 1, label 0. Document 3: "é" is 1 character, 2 bytes: -1.5 / 1 vs -2.5 / 2 = -1.25:
# acc picks 0, acc_norm 1 (the label; per byte it would pick 0).
CHOICE = [
    Outcome("c0", choice_loglikelihoods=[-2.0, -3.9], choices=["ab", "cdef"], label=1),
    Outcome("c1", choice_loglikelihoods=[-1.0, -3.0], choices=["xy", "zw"], label=0),
    Outcome("c2", choice_loglikelihoods=[-5.0, -1.0], choices=["no", "maybe!"], label=0),
    Outcome("c3", choice_loglikelihoods=[-1.5, -2.5], choices=["é", "ab"], label=1),
]
# Rolling log-likelihoods: "naïve cat" is 10 UTF-8 bytes (ï takes two) and 2 words; "dogs bark loudly" 16 bytes,
# 3 words. Totals: log-likelihood -20, 26 bytes, 5 words, 4 + 6 = 10 tokens.
ROLLING_TEXTS = ["naïve cat", "dogs bark loudly"]
ROLLING = [
    Outcome("r0", loglikelihood=-8.0, n_tokens=4, units_text=ROLLING_TEXTS[0]),
    Outcome("r1", loglikelihood=-12.0, n_tokens=6, units_text=ROLLING_TEXTS[1]),
]
# Translation, summaries and answers: one target each (SQuAD's documents two).
HYPOTHESES = ["the cat sat on the mat", "a quick brown fox jumps", "rain fell all night long"]
REFERENCES = ["the cat is sitting on the mat", "the quick brown fox jumped", "it rained all night"]
TRANSLATION = [Outcome(f"t{i}", [ref], hyp) for i, (hyp, ref) in enumerate(zip(HYPOTHESES, REFERENCES, strict=True))]
# rougeLsum reads sentences one per line; the other ROUGE scores ignore the line breaks.
SUMMARY_PAIRS = [
    ("It rained all day.\nThe cats were running home.", "A cat runs home.\nRain fell all day long."),
    ("Markets fell sharply on Monday.", "On Monday the markets fell."),
]
SUMMARIES = [Outcome(f"s{i}", [ref], pred) for i, (pred, ref) in enumerate(SUMMARY_PAIRS)]
SQUAD = [
    Outcome("q0", ["Denver Broncos", "Broncos"], "the Denver Broncos"),  # articles dropped: exact, F1 100
    Outcome("q1", ["Denver Broncos"], "Broncos"),  # 1 of 1 predicted, 1 of 2 gold: F1 2/3
    Outcome("q2", ["Saint Bernadette Soubirous"], "Bernadette, in France"),  # 1 of 3, 1 of 3: F1 1/3
]

# --- golden values: (metric, version) -> (outcomes, value) -------------------------------------------------------

# rougeL scores the sentences in one sequence (their order costs it), rougeLsum sentence by sentence.
ROUGE_GOLDEN = {
    "rouge1": 0.7333333333333334,
    "rouge2": 0.375,
    "rougeL": 0.3666666666666667,
    "rougeLsum": 0.5333333333333333,
}
GOLDEN: dict[tuple[str, str], tuple[list[Outcome], float]] = {
    ("acc", "1"): (CHOICE, 1 / 4),  # document 1
    ("acc_norm", "1"): (CHOICE, 3 / 4),  # documents 0, 1 and 3
    ("bits_per_byte", "1"): (ROLLING, 20 / 26 / math.log(2)),
    ("byte_perplexity", "1"): (ROLLING, math.exp(20 / 26)),
    ("word_perplexity", "1"): (ROLLING, math.exp(20 / 5)),
    ("token_perplexity", "1"): (ROLLING, math.exp(20 / 10)),
    ("exact_match", "1"): (SQUAD, 100 / 3),
    ("f1", "1"): (SQUAD, 100 * (1 + 2 / 3 + 1 / 3) / 3),
    ("bleu", "1"): (TRANSLATION, 25.33654946448646),
    ("chrf", "1"): (TRANSLATION, 58.24839087694181),
    ("ter", "1"): (TRANSLATION, 43.75),
    **{(name, "1"): (SUMMARIES, value) for name, value in ROUGE_GOLDEN.items()},
}


def aggregate(name: str, outcomes: list[Outcome]) -> float:
    metric = get_metric(name)
    return metric.aggregate(metric.stats(outcomes))


def test_every_registered_metric_has_a_golden_value_for_its_version():
    missing = sorted(f"{name} version {m.version}" for name, m in METRICS.items() if (name, m.version) not in GOLDEN)
    assert not missing, f"no golden value for {missing}: add one (computed independently) to GOLDEN"


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_scores_its_golden_value(name):
    """A changed formula fails here unless the metric's ``version`` is bumped (with a new golden entry)."""
    outcomes, value = GOLDEN[(name, get_metric(name).version)]
    assert aggregate(name, outcomes) == pytest.approx(value, rel=1e-9)


# --- the pinned figures, from the oracles --------------------------------------------------------------------


def lm_eval_words(text: str) -> int:
    """lm-eval's word count for word_perplexity: the pieces of the text split at whitespace."""
    return len(re.split(r"\s+", text))


def test_golden_values_are_the_independent_oracles():
    # The hand counts of the rolling texts.
    assert [len(t.encode("utf-8")) for t in ROLLING_TEXTS] == [10, 16]
    assert [lm_eval_words(t) for t in ROLLING_TEXTS] == [2, 3]
    # sacrebleu on the same sentences (default settings: 13a tokenisation, exp smoothing, chrF beta 2).
    refs = [REFERENCES]
    assert GOLDEN[("bleu", "1")][1] == pytest.approx(sacrebleu.corpus_bleu(HYPOTHESES, refs).score, abs=1e-9)
    assert GOLDEN[("chrf", "1")][1] == pytest.approx(sacrebleu.corpus_chrf(HYPOTHESES, refs).score, abs=1e-9)
    assert GOLDEN[("ter", "1")][1] == pytest.approx(sacrebleu.corpus_ter(HYPOTHESES, refs).score, abs=1e-9)
    # rouge-score with the Porter stemmer, the mean F-measure over documents.
    scorer = rouge_scorer.RougeScorer(list(ROUGE_GOLDEN), use_stemmer=True)
    scores = [scorer.score(ref, pred) for pred, ref in SUMMARY_PAIRS]
    for name, value in ROUGE_GOLDEN.items():
        assert value == pytest.approx(sum(s[name].fmeasure for s in scores) / len(scores), abs=1e-9), name
