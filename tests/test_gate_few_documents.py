"""The regression gate on few documents: the exact paired permutation test (sign flips for a mean metric, swapped
statistics for a corpus metric) checked against hand enumeration and scipy, McNemar against scipy's binomial test,
and the INCONCLUSIVE verdict where even the most extreme outcome on the documents could not reach p < alpha."""

import itertools
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from builders import em_rows, make_run

from llamabench.analysis.check import compare_runs, format_comparisons
from llamabench.cli.app import main
from llamabench.metrics import get_metric
from llamabench.metrics.uncertainty import EXACT_MAX_DIFFERING, mcnemar_p, paired_permutation
from llamabench.records.results import write_run
from llamabench.records.store import RunStore

scipy_stats = pytest.importorskip("scipy.stats")


def one_row(comparisons, metric):
    (row,) = [c for c in comparisons if c.metric == metric]
    return row


def f1_runs(base: list[float], cand: list[float]):
    return (
        make_run("base", {"squad": {"f1": [[v] for v in base]}}),
        make_run("cand", {"squad": {"f1": [[v] for v in cand]}}),
    )


# --- p-values against an independent oracle ----------------------------------------------------------------------


def test_sign_flip_p_value_of_three_documents_by_hand():
    # Per-document differences -3, -1, +2 (sum -2). The 8 sign patterns give sums
    #   -3-1+2=-2  -3-1-2=-6  -3+1+2=0  -3+1-2=-4  +3-1+2=4  +3-1-2=0  +3+1+2=6  +3+1-2=2,
    # of which -2, -6 and -4 are at most the observed -2: p = 3/8. The most extreme, -6, alone: 1/8.
    base, cand = f1_runs([50.0, 50.0, 50.0], [47.0, 49.0, 52.0])
    row = one_row(compare_runs(base, cand), "f1")
    assert row.test == "permutation" and row.p_value == 3 / 8
    assert row.smallest_p == 1 / 8 and row.differing == 3
    assert row.verdict == "INCONCLUSIVE" and not row.regression and not row.failed


def test_swapped_corpus_statistics_of_two_documents_by_hand():
    # word_perplexity rows are [loglikelihood, words], 10 words a run; both documents differ. A swap moves a
    # document's loglikelihood to the other run: the candidate's total is -12-21 (no swap), -10-21 (doc 0 swapped),
    # -12-20 (doc 1), -10-20 (both); the baseline's is the rest of -63.
    base_rows = [[-10.0, 5.0], [-20.0, 5.0]]
    cand_rows = [[-12.0, 5.0], [-21.0, 5.0]]
    total = -63.0
    cand_totals = {(): -33.0, (0,): -31.0, (1,): -32.0, (0, 1): -30.0}
    deltas = {k: math.exp(-(total - c) / 10) - math.exp(-c / 10) for k, c in cand_totals.items()}
    observed = deltas[()]  # baseline - candidate perplexity: worse is negative
    p = sum(d <= observed for d in deltas.values()) / 4
    assert p == 1 / 4  # the observed swap is the most extreme one
    base = make_run("base", {"wikitext2": {"word_perplexity": base_rows}})
    cand = make_run("cand", {"wikitext2": {"word_perplexity": cand_rows}})
    row = one_row(compare_runs(base, cand), "word_perplexity")
    assert row.delta == pytest.approx(observed)
    assert (row.test, row.p_value, row.smallest_p, row.verdict) == ("permutation", p, 1 / 4, "INCONCLUSIVE")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sign_flip_p_value_equals_scipys_exact_permutation_test(seed):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 100, size=11)
    cand = base + rng.normal(-8, 12, size=11)
    exact = scipy_stats.permutation_test(
        (cand, base),
        lambda x, y, axis: np.mean(x - y, axis=axis),
        permutation_type="samples",
        alternative="less",
        n_resamples=np.inf,
    )
    row = one_row(compare_runs(*f1_runs(list(base), list(cand))), "f1")
    assert row.test == "permutation" and row.p_value == pytest.approx(exact.pvalue, abs=1e-12)


def test_mcnemar_equals_scipys_exact_binomial_test():
    for worse, better in [(1, 0), (3, 0), (4, 0), (5, 0), (7, 1), (2, 5), (0, 3), (9, 9)]:
        oracle = scipy_stats.binomtest(worse, worse + better, 0.5, alternative="greater").pvalue
        assert mcnemar_p(worse, better) == pytest.approx(oracle, abs=1e-15)


def test_the_sign_flip_enumeration_lists_every_pattern_once_ours_vs_itertools():
    # Our enumeration against a naive one: the p-value over itertools.product of the signs.
    d = np.array([-4.0, 1.5, -2.0, -0.5, 3.0, -1.0])
    sums = [sum(s * x for s, x in zip(signs, d, strict=True)) for signs in itertools.product((1, -1), repeat=len(d))]
    naive = sum(total <= d.sum() + 1e-12 for total in sums) / len(sums)
    test = paired_permutation(get_metric("f1").aggregate, np.zeros((6, 1)), d[:, np.newaxis])
    assert test.p_value == naive and test.smallest_p == 1 / 64


# --- verdicts -----------------------------------------------------------------------------------------------------


def test_one_worse_document_is_inconclusive_not_a_regression_with_no_interval():
    row = one_row(compare_runs(*f1_runs([80.0], [20.0])), "f1")
    assert row.delta == -60.0 and row.p_value == 0.5 and row.smallest_p == 0.5
    assert row.verdict == "INCONCLUSIVE" and not row.regression and not row.failed
    assert math.isnan(row.ci_low) and math.isnan(row.ci_high)  # a bootstrap of one document has no spread
    text = format_comparisons([row], 0.05, [])
    assert "INCONCLUSIVE: squad/f1 on 1 document(s), 1 differing" in text and "PASS" not in text


def test_one_wrong_answer_is_inconclusive_under_mcnemar():
    base = make_run("base", {"squad": {"exact_match": em_rows([1, 1, 1, 1, 1, 1])}})
    cand = make_run("cand", {"squad": {"exact_match": em_rows([1, 1, 0, 1, 0, 0])}})
    row = one_row(compare_runs(base, cand), "exact_match")
    # 3 discordant documents, all worse: p = P(X >= 3), X ~ Bin(3, 1/2) = 1/8, the smallest 3 can give.
    assert (row.test, row.p_value, row.smallest_p, row.verdict) == ("mcnemar", 1 / 8, 1 / 8, "INCONCLUSIVE")


def test_five_worse_documents_can_show_a_regression_four_cannot():
    f1 = [40.0, 60.0, 80.0, 20.0, 50.0]
    row = one_row(compare_runs(*f1_runs(f1, [v - 5 for v in f1])), "f1")
    assert (row.p_value, row.verdict) == (1 / 32, "REGRESSION")  # 1/2^5 < 0.05
    row = one_row(compare_runs(*f1_runs(f1[:4], [v - 5 for v in f1[:4]])), "f1")
    assert (row.p_value, row.verdict) == (1 / 16, "INCONCLUSIVE")  # 1/2^4 >= 0.05
    row = one_row(compare_runs(*f1_runs(f1[:4], [v - 5 for v in f1[:4]]), alpha=0.1), "f1")
    assert row.verdict == "REGRESSION"  # 1/16 < 0.1


def test_no_drop_beyond_the_allowed_one_is_ok_however_few_the_documents():
    base, cand = f1_runs([50.0], [51.0])
    assert one_row(compare_runs(base, cand), "f1").verdict == "ok"
    base, cand = f1_runs([50.0], [49.0])
    assert one_row(compare_runs(base, cand, max_drops={"f1": _drop(2)}), "f1").verdict == "ok"


def test_more_differing_documents_than_enumerated_take_the_bootstrap():
    n = EXACT_MAX_DIFFERING + 1
    row = one_row(compare_runs(*f1_runs([50.0] * n, [45.0] * n)), "f1")
    assert row.test == "bootstrap" and row.regression
    # Identical documents change nothing when swapped: 1000 documents of which 2 differ are still exact.
    row = one_row(compare_runs(*f1_runs([50.0] * 1000, [45.0, 45.0] + [50.0] * 998)), "f1")
    assert (row.test, row.p_value, row.differing, row.verdict) == ("permutation", 1 / 4, 2, "INCONCLUSIVE")


def test_check_exits_0_with_the_inconclusive_verdict_and_junit_skips_it(tmp_path, capsys):
    base, cand = f1_runs([80.0], [20.0])
    store = RunStore.in_dir(tmp_path)
    for run in (base, cand):
        store.add(run, write_run(run, tmp_path))
    junit = tmp_path / "check.xml"
    argv = ["check", "--output-dir", str(tmp_path), "--baseline", base.manifest.run_id]
    assert main([*argv, "--candidate", cand.manifest.run_id, "--junit", str(junit)]) == 0
    out = capsys.readouterr().out
    assert "INCONCLUSIVE: squad/f1 on 1 document(s)" in out and "PASS" not in out and "REGRESSION" not in out
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("failures"), suite.get("skipped")) == ("0", "1")
    (skipped,) = suite.iter("skipped")
    assert skipped.get("message").startswith("inconclusive: 1 document(s), 1 differing")


def test_check_help_documents_the_inconclusive_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    assert "INCONCLUSIVE" in " ".join(capsys.readouterr().out.split())


def _drop(amount: float):
    from llamabench.analysis.check import MaxDrop

    return MaxDrop(amount)
