"""Number paths checked against independent oracles: ROUGE-Lsum on one-line multi-sentence predictions
(rouge-score on newline-split sentences), acc_norm's per-character normalisation (lm-eval's definition), and
the run's bootstrap seed reaching the standard error (numpy's bootstrap with that seed)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from rouge_score.rouge_scorer import RougeScorer

from llamabench.metrics import get_metric
from llamabench.metrics.base import Outcome
from llamabench.scoring import score


def realsumm_pairs(data_dir, system: str = "bart", count: int = 30) -> list[tuple[list[str], list[str]]]:
    """(system output sentences, reference sentences) of REALSumm documents, sentences as the `<t>` tags give
    them; documents with a sentence holding an inner ". " (abbreviations) are left out, since there a splitter
    and the tags may disagree."""
    folder = data_dir / "cnndm_realsumm_100"
    references = [json.loads(line)["summary_sentences"] for line in (folder / "test.jsonl").open()]
    outputs = (folder / "original" / "abs" / system / "out.txt").read_text().splitlines()
    pairs = []
    for line, reference in zip(outputs, references, strict=False):
        sentences = [s.strip() for s in re.findall(r"<t>((?:(?!<t>).)*?)</t>", line) if s.strip()]
        if sentences and not any(re.search(r"[.!?]\s", s[:-1]) for s in sentences):
            pairs.append((sentences, reference))
    return pairs[:count]


def test_rouge_lsum_of_one_line_predictions_equals_rouge_score_on_split_sentences(data_dir):
    oracle = RougeScorer(["rougeLsum"], use_stemmer=True)
    pairs = realsumm_pairs(data_dir)
    assert len(pairs) >= 20
    metric = get_metric("rougeLsum")
    for sentences, reference in pairs:
        # A model writes its summary on one line; rougeLsum is defined on one sentence per line.
        expected = oracle.score("\n".join(reference), "\n".join(sentences))["rougeLsum"].fmeasure
        outcome = Outcome("d", targets=["\n".join(reference)], prediction=" ".join(sentences))
        assert metric.score(outcome) == pytest.approx(expected, abs=1e-12)
    unsplit = [
        oracle.score("\n".join(r), " ".join(s))["rougeLsum"].fmeasure
        != oracle.score("\n".join(r), "\n".join(s))["rougeLsum"].fmeasure
        for s, r in pairs
    ]
    assert sum(unsplit) >= len(pairs) // 2  # the test can tell a split prediction from an unsplit one


def lm_eval_acc_norm(loglikelihoods: list[float], choices: list[str], label: int) -> float:
    """lm-eval 0.4's acc_norm (ConfigurableTask.process_results): log-likelihood over len(choice), characters."""
    normalised = np.array(loglikelihoods) / np.array([float(len(choice)) for choice in choices])
    return float(int(np.argmax(normalised)) == label)


def test_acc_norm_divides_by_characters_not_words():
    # Per character choice 1 wins (-2.5 > -3.0); per word choice 0 wins (-5.5 > -20); per token either could.
    choices, loglikelihoods = ["a b c d e f", "abcdefgh"], [-33.0, -20.0]
    for label in (0, 1):
        outcome = Outcome("d", choice_loglikelihoods=loglikelihoods, choices=choices, label=label)
        assert get_metric("acc_norm").score(outcome) == lm_eval_acc_norm(loglikelihoods, choices, label)
    words_pick = int(np.argmax(np.array(loglikelihoods) / [len(c.split()) for c in choices]))
    assert words_pick != int(np.argmax(np.array(loglikelihoods) / [len(c) for c in choices]))  # the case matters


def numpy_bootstrap_stderr(loglikelihoods, words, iters: int, seed: int) -> float:
    """Word perplexity's bootstrap standard error computed directly: resample documents with numpy's generator
    seeded with ``seed``, exp(-sum ll / sum words) of each resample, sample standard deviation."""
    rng = np.random.default_rng(seed)
    n = len(loglikelihoods)
    values = []
    for _ in range(iters):
        rows = rng.integers(0, n, size=n)
        values.append(math.exp(-np.sum(np.asarray(loglikelihoods)[rows]) / np.sum(np.asarray(words)[rows])))
    return float(np.std(values, ddof=1))


def test_the_runs_seed_reaches_the_bootstrap_standard_error():
    from llamabench.tasks import registry

    (spec,) = registry.resolve(["wikitext2"], registry.task_dirs([]))
    texts = ["one two three", "four five", "six seven eight nine", "ten", "eleven twelve"]
    loglikelihoods = [-9.0, -4.0, -20.0, -1.5, -7.0]
    outcomes = [
        Outcome(f"d{i}", loglikelihood=ll, n_tokens=5, units_text=text)
        for i, (ll, text) in enumerate(zip(loglikelihoods, texts, strict=True))
    ]
    docs = [type("Doc", (), {"prompt_hash": "h", "prompt": "p"})() for _ in outcomes]
    words = [len(re.split(r"\s+", text)) for text in texts]
    stderrs = {}
    for seed in (0, 1, 12345):
        values, _ = score(spec, docs, outcomes, bootstrap_iters=200, seed=seed)
        (ppl,) = [v for v in values if v.metric == "word_perplexity"]
        assert ppl.stderr == pytest.approx(numpy_bootstrap_stderr(loglikelihoods, words, 200, seed), rel=1e-12)
        stderrs[seed] = ppl.stderr
    assert len(set(stderrs.values())) == 3  # different seeds, different resamples
