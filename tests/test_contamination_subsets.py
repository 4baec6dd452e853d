"""Scores by contamination subset against hand computations on a run's per-sample values (exact match by hand,
BLEU by sacrebleu on the subset's sentences), the random-subset comparison against an exhaustive enumeration, and
``check --exclude-contaminated``."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import sacrebleu
from builders import em_rows, make_run

from llamabench.analysis.subsets import clean_only, subset_scores
from llamabench.cli.app import main
from llamabench.contamination.criterion import subsets
from llamabench.contamination.result import COLUMNS, KIND, write_contamination
from llamabench.metrics import get_metric
from llamabench.metrics.base import Outcome
from llamabench.records.results import write_run


def _contamination(folder, fractions_by_task: dict[str, list[float]]):
    tables = {}
    for task, fractions in fractions_by_task.items():
        rows = [
            {"doc_id": f"doc{i}", "n_tokens": 100, "contaminated_fraction": f, "longest_span": 0, **subsets(f)}
            for i, f in enumerate(fractions)
        ]
        tables[task] = pd.DataFrame(rows, columns=COLUMNS)
    manifest = {"kind": KIND, "tasks": {task: {"documents": len(t)} for task, t in tables.items()}}
    return write_contamination(tables, manifest, folder)


CORRECT = [1, 0, 1, 1, 0, 1]
FRACTIONS = [0.9, 0.0, 0.1, 0.85, 0.5, 0.0]  # clean 1, 2, 5; not clean 0, 3, 4; not dirty 1, 2, 4, 5; dirty 0, 3


def test_exact_match_by_subset_by_hand(tmp_path):
    run = make_run("m", {"t": {"exact_match": em_rows(CORRECT)}})
    scores = subset_scores(run, _contamination(tmp_path, {"t": FRACTIONS}), draws=2000).set_index("subset")
    expected = {"all": (6, 400 / 6), "clean": (3, 200 / 3), "not_clean": (3, 200 / 3), "not_dirty": (4, 50.0)}
    expected["dirty"] = (2, 100.0)
    for subset, (n, value) in expected.items():
        assert (scores.loc[subset, "n"], scores.loc[subset, "value"]) == (n, pytest.approx(value))
    # The paper's comparison for "dirty" (2 documents): every pair of the 6, enumerated.
    pairs = np.array([np.mean(pair) for pair in itertools.combinations([100.0 * c for c in CORRECT], 2)])
    dirty = scores.loc["dirty"]
    assert dirty.random_mean == pytest.approx(pairs.mean(), abs=2.0)
    assert dirty.random_std == pytest.approx(pairs.std(), rel=0.1)
    assert dirty.z == pytest.approx((100 - pairs.mean()) / pairs.std(), rel=0.1)
    assert dirty.percentile == 100.0  # no pair beats two right answers
    assert math.isnan(scores.loc["all", "z"])


def test_bleu_by_subset_is_corpus_bleu_of_the_subset(tmp_path):
    predictions = ["the cat sat on the mat", "a dog", "hello there my friend", "it is raining today", "yes"]
    references = ["the cat sat on a mat", "a dog barked", "hello my friend", "it rains today", "no"]
    outcomes = [
        Outcome(doc_id=str(i), targets=[r], prediction=p)
        for i, (p, r) in enumerate(zip(predictions, references, strict=True))
    ]
    stats = get_metric("bleu").stats(outcomes).tolist()
    run = make_run("m", {"t": {"bleu": stats}})
    fractions = [1.0, 0.0, 0.95, 0.0, 0.0]
    scores = subset_scores(run, _contamination(tmp_path, {"t": fractions}), draws=50).set_index("subset")
    for subset, docs in {"all": [0, 1, 2, 3, 4], "clean": [1, 3, 4], "dirty": [0, 2]}.items():
        bleu = sacrebleu.corpus_bleu([predictions[i] for i in docs], [[references[i] for i in docs]]).score
        assert scores.loc[subset, "value"] == pytest.approx(bleu)


def test_documents_without_a_result_are_refused(tmp_path):
    run = make_run("m", {"t": {"exact_match": em_rows(CORRECT)}})
    with pytest.raises(Exception, match="have no contamination result"):
        subset_scores(run, _contamination(tmp_path, {"t": FRACTIONS[:4]}))


def test_check_exclude_contaminated_gates_on_clean_documents(tmp_path, capsys):
    # The candidate loses exactly the 8 dirty documents: a regression on all, none on the clean 12.
    baseline = make_run("base", {"t": {"exact_match": em_rows([1] * 20)}})
    candidate = make_run("cand", {"t": {"exact_match": em_rows([0] * 8 + [1] * 12)}})
    folders = [write_run(run, tmp_path / "runs") for run in (baseline, candidate)]
    contamination = _contamination(tmp_path / "contamination", {"t": [0.9] * 8 + [0.0] * 12})
    argv = ["check", "--baseline", str(folders[0]), "--candidate", str(folders[1])]
    argv += ["--output-dir", str(tmp_path / "store")]
    assert main(argv) == 1
    assert main([*argv, "--exclude-contaminated", str(contamination)]) == 0
    out = capsys.readouterr().out
    assert "clean documents only" in out and "PASS" in out
    assert len(clean_only(candidate, contamination).samples["t"]) == 12


def test_report_writes_scores_by_subset(tmp_path, capsys):
    run = make_run("m", {"t": {"exact_match": em_rows(CORRECT)}})
    folder = write_run(run, tmp_path / "runs")
    contamination = _contamination(tmp_path / "contamination", {"t": FRACTIONS})
    argv = ["report", str(folder), "--output-dir", str(tmp_path / "store"), "--out", str(tmp_path / "report")]
    assert main([*argv, "--contamination", str(contamination)]) == 0
    assert "by contamination subset" in capsys.readouterr().out
    (written,) = (tmp_path / "report").glob("subsets_*.csv")
    table = pd.read_csv(written).set_index("subset")
    assert table.loc["dirty", "value"] == 100.0 and table.loc["not_dirty", "value"] == 50.0


def test_run_with_contamination_shows_scores_by_subset(tmp_path, monkeypatch, capsys):
    from builders import TEXTS, cli_run, write_run_workspace
    from conftest import save_tiny_model

    workspace = write_run_workspace(tmp_path, monkeypatch)
    model = save_tiny_model(tmp_path / "model")
    (tmp_path / "corpus.txt").write_text("unrelated words\n" + TEXTS[0] + "\nmore unrelated words\n")
    scan = ["contamination", "--corpus", str(tmp_path / "corpus.txt"), "--tasks", "tiny_ppl", "--model", str(model)]
    scan += ["--tasks-dir", str(workspace / "tasks"), "--data-dir", str(workspace), "--output-dir", str(tmp_path / "c")]
    assert main(scan) == 0
    (folder,) = (tmp_path / "c").iterdir()
    run = cli_run(workspace, model, "out", "--tasks", "tiny_ppl", "--no-cache", "--contamination", str(folder))
    assert "by contamination subset" in capsys.readouterr().out
    scores = subset_scores(run, folder).set_index(["metric", "subset"])
    # The first text (in the corpus) is the dirty subset, the second the clean one: each one document.
    own = run.samples["tiny_ppl"].set_index("doc_id").token_perplexity
    assert scores.loc[("token_perplexity", "dirty"), "value"] == pytest.approx(own["0"])
    assert scores.loc[("token_perplexity", "clean"), "value"] == pytest.approx(own["1"])
