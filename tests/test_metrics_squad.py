"""SQuAD v1.1 EM/F1 against the dev figures computed with the official script (PROVENANCE.md)."""

import json
from pathlib import Path

import pytest

from llamabench.metrics import Outcome, get_metric
from llamabench.metrics.squad import f1_score, normalize_answer

# file stem in predictions/ -> (dev EM, dev F1) from squad_v1.1_dev/PROVENANCE.md
DEV_FIGURES = {
    "BERT (ensemble) (Google AI Language)": (86.206, 92.196),
    "Logistic Regression Baseline (Stanford University)": (40.142, 50.982),
    "Match-LSTM with Ans-Ptr (Boundary+Ensemble) (Singapore Management University)": (67.635, 76.756),
    "SLQA+ (ensemble) (Alibaba iDST NLP)": (81.949, 88.384),
    "r-net+ (ensemble) (Microsoft Research Asia)": (82.469, 88.478),
}


@pytest.fixture(scope="module")
def dev(data_dir: Path) -> list[dict]:
    with open(data_dir / "squad_v1.1_dev" / "dev.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 10570
    return rows


@pytest.mark.parametrize("system", sorted(DEV_FIGURES))
def test_matches_official_dev_figures(data_dir, dev, system):
    predictions = json.loads((data_dir / "squad_v1.1_dev" / "predictions" / f"{system}.json").read_text("utf-8"))
    # Questions missing from the file get prediction None and score 0, as in the official script.
    outcomes = [Outcome(doc_id=row["id"], targets=row["answers"], prediction=predictions.get(row["id"])) for row in dev]
    expected_em, expected_f1 = DEV_FIGURES[system]
    em, f1 = get_metric("exact_match"), get_metric("f1")
    assert round(em.aggregate(em.stats(outcomes)), 3) == expected_em
    assert round(f1.aggregate(f1.stats(outcomes)), 3) == expected_f1


def test_normalisation():
    assert normalize_answer("The  State-of-the-Art, model!") == "stateoftheart model"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("“Theory” – x") == "“theory” – x"  # non-ASCII punctuation is kept
    assert normalize_answer("then there") == "then there"  # only whole words a/an/the go


def test_f1_by_hand():
    # pred tokens [denver, broncos, win], gold [denver, broncos]: P = 2/3, R = 1, F1 = 2PR/(P+R) = 0.8
    assert f1_score("the Denver Broncos win", "Denver Broncos") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert f1_score("", "Denver") == 0.0
    # "a" is an article and is dropped: pred [x, b, b] vs gold [b, b, c, d], P = 2/3, R = 2/4
    assert f1_score("x a b b", "b b c d") == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))


def test_max_over_gold_answers_on_0_100_scale():
    outcome = Outcome("q", targets=["Carolina Panthers", "the Panthers"], prediction="Panthers")
    em_row = get_metric("exact_match").stats([outcome])
    f1_row = get_metric("f1").stats([outcome])
    assert em_row.shape == (1, 1) and em_row[0, 0] == 100.0
    assert f1_row[0, 0] == 100.0
    miss = Outcome("q", targets=["Carolina Panthers"], prediction="Panthers")
    assert get_metric("exact_match").stats([miss])[0, 0] == 0.0
    assert get_metric("f1").stats([miss])[0, 0] == pytest.approx(100 * 2 * 1 * 0.5 / 1.5)
