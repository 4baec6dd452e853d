"""ROUGE against rouge-score figures on REALSumm (CNN/DM) and published per-summary values on XSum."""

import json
import re
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from llamabench.metrics import Outcome, get_metric
from llamabench.metrics.rouge import split_sentences

# output file under original/abs/ -> rouge-score R1 / R2 / RLsum (x100) from cnndm_realsumm_100/PROVENANCE.md,
# restricted to the systems whose files have no formatting artefacts (bart and bottom_up are left out).
REALSUMM = {
    "fast_abs_rl/out_rerank.txt": (39.79, 17.45, 37.28),
    "presumm/out_abs.txt": (43.39, 19.98, 40.38),
    "presumm/out_ext_abs.txt": (42.65, 19.21, 39.46),
    "presumm/out_trans_abs.txt": (39.63, 16.26, 36.31),
    "ptr_generator/out_pointer_gen_cov.txt": (39.26, 16.27, 27.01),
    "semsim/out.txt": (47.26, 23.02, 43.98),
    "t5/out_11B.txt": (46.41, 22.14, 43.16),
    "t5/out_base.txt": (43.77, 20.26, 40.71),
    "t5/out_large.txt": (45.14, 21.96, 42.05),
    "two_stage_rl/out.txt": (43.32, 20.15, 40.61),
    "unilm/out_v1.txt": (44.87, 20.58, 41.85),
    "unilm/out_v2.txt": (45.30, 21.83, 42.16),
}
SENTENCE_TAG = re.compile(r"<t>(.*?)</t>")


def _tagged_sentences(line: str) -> str:
    return "\n".join(sentence.strip() for sentence in SENTENCE_TAG.findall(line))


def _mean_x100(name: str, outcomes: list[Outcome]) -> float:
    metric = get_metric(name)
    return 100 * metric.aggregate(metric.stats(outcomes))


@pytest.mark.parametrize("output", sorted(REALSUMM))
def test_realsumm_matches_rouge_score(data_dir: Path, output: str):
    system_dir = data_dir / "cnndm_realsumm_100" / "original" / "abs" / output.split("/")[0]
    predictions = (system_dir / output.split("/")[1]).read_text(encoding="utf-8").splitlines()
    references = (system_dir / "ref.txt").read_text(encoding="utf-8").splitlines()
    outcomes = [
        Outcome(doc_id=str(i), targets=[_tagged_sentences(ref)], prediction=_tagged_sentences(pred))
        for i, (pred, ref) in enumerate(zip(predictions, references, strict=True))
    ]
    assert len(outcomes) == 100
    observed = tuple(round(_mean_x100(name, outcomes), 2) for name in ("rouge1", "rouge2", "rougeLsum"))
    assert observed == REALSUMM[output]


def test_xsum_equals_rouge_score_on_every_summary_and_its_published_values_where_rouge_score_does(data_dir: Path):
    """Every one of the 1972 summaries scores exactly what rouge-score (Porter stemmer) gives; the published
    per-summary values (Maynez et al. 2020) agree within 1e-4 on exactly the 1783 summaries where rouge-score's do.

    The other 189 are not ours to match: the authors' ROUGE tokenised some texts otherwise (rows 9, 10 and 13
    differ from rouge-score by one unigram or LCS token) and truncated rather than rounded a few values
    (PROVENANCE.md of the data set), so the tolerance is per document: exact against rouge-score, 1e-4 against
    the published value on the rows rouge-score itself reproduces."""
    with open(data_dir / "xsum_maynez2020_rouge" / "pairs.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 1972
    outcomes = [
        Outcome(doc_id=str(i), targets=[row["reference"]], prediction=row["prediction"]) for i, row in enumerate(rows)
    ]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    oracle = [scorer.score(row["reference"], row["prediction"]) for row in rows]
    published_agree = [True] * len(rows)
    for name, key in (("rouge1", "R1"), ("rouge2", "R2"), ("rougeL", "RL")):
        values = get_metric(name).per_sample(get_metric(name).stats(outcomes))
        assert [float(v) for v in values] == [o[name].fmeasure for o in oracle], name
        published_agree = [
            ok and abs(o[name].fmeasure - row[key]) <= 1e-4
            for ok, o, row in zip(published_agree, oracle, rows, strict=True)
        ]
    assert sum(published_agree) == 1783


def test_sentence_splitter_and_multiple_targets():
    assert split_sentences("It rained. Then? It stopped!  Ok") == "It rained.\nThen?\nIt stopped!\nOk"
    assert split_sentences("kept as is.\nalready split. here") == "kept as is.\nalready split. here"
    outcome = Outcome("d", targets=["the cat sat", "a dog ran"], prediction="the cat sat")
    assert get_metric("rouge1").stats([outcome])[0, 0] == 1.0  # best of the two targets
    assert get_metric("rouge2").stats([Outcome("e", targets=["a dog ran"], prediction="the cat sat")])[0, 0] == 0.0
