"""Scores by contamination subset against hand computations on a run's per-sample values (exact match by hand,
BLEU by sacrebleu on the subset's sentences), the paper's Z_n and verdict by hand and against the published
figures of Table 51 (Touvron et al. 2023), the random-subset comparison of a corpus metric against an exhaustive
enumeration, and ``check --exclude-contaminated``."""

from __future__ import annotations

import itertools
import json
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
from llamabench.contamination.verdict import (
    SubsetTest,
    binary_sigma,
    contaminated,
    largest_benefiting,
    mean_test,
    sampling_sigma,
)
from llamabench.errors import LlamabenchError
from llamabench.metrics import get_metric
from llamabench.metrics.base import Outcome
from llamabench.records.results import write_run


def _contamination(folder, fractions_by_task: dict[str, list[float] | dict[int, list[float]]]):
    """A contamination folder with the given fractions per task (a list: at L = 10; a dict: per L)."""
    tables = {}
    for task, fractions in fractions_by_task.items():
        by_length = fractions if isinstance(fractions, dict) else {10: fractions}
        rows = [
            {"doc_id": f"doc{i}", "min_length": length, "detectable": True, "form": "prompt", "n_tokens": 100}
            | {"contaminated_fraction": f, "longest_span": 0, **subsets(f)}
            for length, values in by_length.items()
            for i, f in enumerate(values)
        ]
        tables[task] = pd.DataFrame(rows, columns=COLUMNS)
    manifest = {"kind": KIND, "tasks": {task: {"documents": len(t)} for task, t in tables.items()}}
    return write_contamination(tables, manifest, folder)


CORRECT = [1, 0, 1, 1, 0, 1]
FRACTIONS = [0.9, 0.0, 0.1, 0.85, 0.5, 0.0]  # clean 1, 2, 5; not clean 0, 3, 4; not dirty 1, 2, 4, 5; dirty 0, 3


def test_exact_match_by_subset_by_hand(tmp_path):
    run = make_run("m", {"t": {"exact_match": em_rows(CORRECT)}})
    scores = subset_scores(run, _contamination(tmp_path, {"t": FRACTIONS})).set_index("subset")
    expected = {"all": (6, 400 / 6), "clean": (3, 200 / 3), "not_clean": (3, 200 / 3), "not_dirty": (4, 50.0)}
    expected["dirty"] = (2, 100.0)
    for subset, (n, value) in expected.items():
        assert (scores.loc[subset, "n"], scores.loc[subset, "value"]) == (n, pytest.approx(value))
    # The paper's Z_n by hand: p = 4/6, sigma = 100 sqrt(p (1 - p)) = 100 sqrt(2) / 3, mu_n = 66.67.
    sigma = 100 * math.sqrt(2) / 3
    assert scores.loc["dirty", "sigma_n"] == pytest.approx(sigma / math.sqrt(2))
    assert scores.loc["dirty", "z"] == pytest.approx(1.0)  # (100 - 66.67) / 33.33
    assert scores.loc["clean", "z"] == pytest.approx(0.0)
    assert scores.loc["not_dirty", "z"] == pytest.approx(-1 / math.sqrt(2))  # (50 - 66.67) / (sigma / 2)
    assert np.allclose(scores.mu_n, 400 / 6) and (scores.sigma_from == "analytic").all()
    assert math.isnan(scores.loc["all", "z"])
    assert not scores.contaminated.any() and scores.largest_length.isna().all()


def test_verdict_and_the_largest_length_by_hand(tmp_path):
    # 50 clean documents 20 right, 50 dirty ones all right: p = 0.7, sigma_n = sqrt(0.21 / 50) = 0.0648,
    # Z clean = (0.4 - 0.7) / 0.0648 = -4.63, Z dirty = +4.63 (and not dirty = clean, not clean = dirty).
    correct = [1] * 20 + [0] * 30 + [1] * 50
    fractions = {10: [0.0] * 50 + [0.9] * 50, 20: [0.0] * 50 + [0.85] * 50, 30: [0.0] * 100}
    run = make_run("m", {"t": {"exact_match": em_rows(correct)}})
    scores = subset_scores(run, _contamination(tmp_path, {"t": fractions})).set_index(["min_length", "subset"])
    z = -0.3 / math.sqrt(0.21 / 50)
    for length in (10, 20):
        assert scores.loc[(length, "clean"), "z"] == pytest.approx(z)
        assert scores.loc[(length, "not_dirty"), "z"] == pytest.approx(z)
        assert scores.loc[(length, "dirty"), "z"] == pytest.approx(-z)
        assert scores.loc[(length, "not_clean"), "z"] == pytest.approx(-z)
        assert scores.loc[(length, "dirty"), "contaminated"]
    # At L = 30 nothing is dirty: no Z for it, no verdict; the largest length that benefits is 20.
    assert scores.loc[(30, "dirty"), "n"] == 0 and not scores.loc[(30, "dirty"), "contaminated"]
    assert (scores.largest_length == 20).all()
    # The direction condition: the same sizes with the clean documents better is no contamination.
    flipped = make_run("m", {"t": {"exact_match": em_rows(correct[50:] + correct[:50])}})
    flipped_scores = subset_scores(flipped, _contamination(tmp_path / "again", {"t": fractions}))
    assert (flipped_scores.z.abs().dropna() > 2).sum() == 8 and not flipped_scores.contaminated.any()


# Table 51 (Touvron et al. 2023, 70B): subset, n, X̄, µ_n and the printed Z_n, each rounded as printed. The
# clean row is the issue's; the other three were transcribed from the table where this offline machine cannot
# check them against the paper (their sizes add up to the benchmark's 10,042 and each Z agrees to its rounding).
TABLE_51 = {
    "HellaSwag (L=40)": [
        ("clean", 7391, 80.0, 82.5, -5.73),
        ("not_clean", 2651, 89.5, 82.4, 9.56),
        ("not_dirty", 9194, 81.6, 82.5, -2.27),
        ("dirty", 848, 92.2, 82.5, 7.42),
    ],
}


@pytest.mark.parametrize("benchmark", sorted(TABLE_51))
def test_z_reproduces_table_51_within_its_rounding(benchmark):
    """Z_n = (X̄ - µ_n) / sqrt(µ_n (1 - µ_n) / n), no finite-population correction: the printed Z lies within the
    range of Z over the rounding interval of the printed X̄ and µ_n (±0.05 points), and so does ours."""
    rows = TABLE_51[benchmark]
    assert rows[0][1] + rows[1][1] == rows[2][1] + rows[3][1]  # the subsets split the benchmark twice
    z = {}
    for subset, n, mean, mu, printed in rows:
        test = SubsetTest(n, mean / 100, mu / 100, sampling_sigma(binary_sigma(mu / 100), n))
        corners = [
            SubsetTest(n, (mean + a) / 100, (mu + b) / 100, sampling_sigma(binary_sigma((mu + b) / 100), n)).z
            for a in (-0.05, 0.05)
            for b in (-0.05, 0.05)
        ]
        assert min(corners) <= printed <= max(corners), subset
        assert min(corners) <= test.z <= max(corners)
        assert test.z == pytest.approx(printed, abs=0.12)
        z[subset] = test.z
    assert contaminated(z)  # all four |Z| > 2, clean below and dirty above the mean
    assert not contaminated(z, higher_is_better=False)


def test_the_hellaswag_clean_row_of_the_issue():
    test = SubsetTest(7391, 0.800, 0.825, sampling_sigma(binary_sigma(0.825), 7391))
    assert test.sigma_n == pytest.approx(math.sqrt(0.825 * 0.175 / 7391))
    assert test.z == pytest.approx(-5.657, abs=0.001)


def test_mean_test_of_scores_by_hand():
    # F1-like scores: mean 0.5, population sd sqrt(((.5)^2 + (.3)^2 + (.1)^2 + (.1)^2 + (.5)^2 + (.3)^2) / 6).
    scores = np.array([0.0, 0.2, 0.4, 0.6, 1.0, 0.8])
    sd = math.sqrt((0.25 + 0.09 + 0.01 + 0.01 + 0.25 + 0.09) / 6)
    test = mean_test(scores, np.array([False, False, False, False, True, True]))
    assert (test.n, test.mean, test.mu_n) == (2, pytest.approx(0.9), pytest.approx(0.5))
    assert test.sigma_n == pytest.approx(sd / math.sqrt(2))
    assert test.z == pytest.approx(0.4 / (sd / math.sqrt(2)))
    assert largest_benefiting({10: True, 20: False, 30: True, 40: False}) == 30
    assert largest_benefiting({10: False}) is None


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
    scores = subset_scores(run, _contamination(tmp_path, {"t": fractions}), draws=2000).set_index("subset")

    def bleu(docs) -> float:
        return sacrebleu.corpus_bleu([predictions[i] for i in docs], [[references[i] for i in docs]]).score

    for subset, docs in {"all": [0, 1, 2, 3, 4], "clean": [1, 3, 4], "dirty": [0, 2]}.items():
        assert scores.loc[subset, "value"] == pytest.approx(bleu(docs))
    # BLEU is no mean of document scores: mu_n and sigma_n of the dirty pair are those of the corpus BLEU of
    # random pairs, here against all 10 pairs enumerated.
    pairs = np.array([bleu(pair) for pair in itertools.combinations(range(5), 2)])
    dirty = scores.loc["dirty"]
    assert dirty.sigma_from == "drawn"
    assert dirty.mu_n == pytest.approx(pairs.mean(), rel=0.05)
    assert dirty.sigma_n == pytest.approx(pairs.std(ddof=1), rel=0.1)
    assert dirty.z == pytest.approx((dirty.value - pairs.mean()) / pairs.std(ddof=1), rel=0.1, abs=0.05)


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
    scores = subset_scores(run, folder).query("min_length == 10").set_index(["metric", "subset"])
    # The first text (in the corpus) is the dirty subset, the second the clean one: each one document.
    own = run.samples["tiny_ppl"].set_index("doc_id").token_perplexity
    assert scores.loc[("token_perplexity", "dirty"), "value"] == pytest.approx(own["0"])
    assert scores.loc[("token_perplexity", "clean"), "value"] == pytest.approx(own["1"])


@pytest.mark.parametrize("outside", ["../elsewhere", "/tmp/elsewhere", "link"])
def test_a_contamination_folder_is_read_only_from_inside_it(tmp_path, outside):
    """A tampered manifest (or a table replaced by a link) naming a file outside the folder is refused in one line,
    as a run folder is: nothing outside the folder is read."""
    from llamabench.contamination.result import MANIFEST, read_contamination

    folder = _contamination(tmp_path / "scan", {"t": FRACTIONS})
    manifest = json.loads((folder / MANIFEST).read_text())
    stem = next(iter(manifest["tasks"]["t"]["files"].values()))
    elsewhere = tmp_path / "elsewhere.parquet"
    (folder / f"{stem}.parquet").rename(elsewhere)
    if outside == "link":
        (folder / f"{stem}.parquet").symlink_to(elsewhere)
    else:
        target = str(tmp_path / "elsewhere") if outside.startswith("/") else outside
        manifest["tasks"]["t"]["files"] = {key: target for key in manifest["tasks"]["t"]["files"]}
        (folder / MANIFEST).write_text(json.dumps(manifest))
        if outside.startswith("../"):
            (folder.parent / "elsewhere.parquet").write_bytes(elsewhere.read_bytes())
    with pytest.raises(LlamabenchError, match="outside") as caught:
        read_contamination(folder)
    assert "\n" not in str(caught.value)
