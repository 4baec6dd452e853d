"""Run store round-trips, the paired regression check (p-values by hand, CLI exit codes) and the report files."""

import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import torch
from builders import em_rows, make_run
from conftest import byte_tokenizer, save_tiny_model, tiny_llama

from llamabench.analysis.check import compare_runs, parse_max_drops
from llamabench.analysis.report import build_leaderboard, checkpoint_step, to_markdown, write_report
from llamabench.backends.hf.backend import HFBackend
from llamabench.cli.app import main
from llamabench.config import RunConfig
from llamabench.errors import LlamabenchError
from llamabench.metrics import get_metric
from llamabench.metrics.uncertainty import mcnemar_p, paired_bootstrap
from llamabench.pipeline import Evaluation
from llamabench.records.results import RunResult, read_run, results_frame, write_run
from llamabench.records.store import RunStore


def one_row(comparisons, metric):
    (row,) = [c for c in comparisons if c.metric == metric]
    return row


# --- p-values by hand -------------------------------------------------------------------------------------------


def test_mcnemar_exact_tail_by_hand():
    # X ~ Bin(8, 1/2) discordant pairs; p = P(X >= 7) = (C(8,7) + C(8,8)) / 2^8 = (8 + 1) / 256.
    assert mcnemar_p(7, 1) == 9 / 256
    assert mcnemar_p(1, 7) == 1 - 1 / 256  # P(X >= 1) = 1 - C(8,0) / 2^8
    assert mcnemar_p(3, 0) == 1 / 8
    assert mcnemar_p(0, 0) == 1.0


def test_check_uses_mcnemar_on_exact_match():
    # 20 documents: 7 only the baseline gets right, 1 only the candidate, 12 both.
    base = make_run("base", {"squad": {"exact_match": em_rows([1] * 7 + [0] + [1] * 12)}})
    cand = make_run("cand", {"squad": {"exact_match": em_rows([0] * 7 + [1] + [1] * 12)}})
    row = one_row(compare_runs(base, cand), "exact_match")
    assert (row.baseline, row.candidate, row.delta) == (95.0, 65.0, -30.0)  # (7+12)/20, (1+12)/20, in percent
    assert row.test == "mcnemar" and row.p_value == 9 / 256 and row.regression
    # A drop of 30 points is not larger than an allowed 30 points, nor than 40 % of the baseline (38 points).
    assert not one_row(
        compare_runs(base, cand, max_drops=parse_max_drops(["exact_match=30"])), "exact_match"
    ).regression
    assert not one_row(
        compare_runs(base, cand, max_drops=parse_max_drops(["exact_match=40%"])), "exact_match"
    ).regression
    assert one_row(compare_runs(base, cand, max_drops=parse_max_drops(["exact_match=29.9"])), "exact_match").regression
    assert not one_row(compare_runs(base, cand, alpha=0.01), "exact_match").regression  # 0.035 > 0.01


def test_bootstrap_of_a_constant_per_document_shift():
    f1 = [40.0, 60.0, 80.0, 20.0, 50.0] * 4  # 20 documents: more than the permutation test enumerates
    base = make_run("base", {"squad": {"f1": [[v] for v in f1]}})
    worse = make_run("worse", {"squad": {"f1": [[v - 5] for v in f1]}})
    better = make_run("better", {"squad": {"f1": [[v + 5] for v in f1]}})
    # Every resample of a constant shift has the same delta: never >= 0 (p 0), or always (p 1).
    row = one_row(compare_runs(base, worse), "f1")
    assert row.test == "bootstrap" and row.p_value == 0.0 and row.regression
    assert row.delta == pytest.approx(-5) and row.ci_low == pytest.approx(-5) and row.ci_high == pytest.approx(-5)
    row = one_row(compare_runs(base, better), "f1")
    assert row.p_value == 1.0 and row.delta == pytest.approx(5) and not row.regression
    row = one_row(compare_runs(base, base), "f1")
    assert (row.delta, row.p_value, row.regression) == (0.0, 1.0, False)


def test_bootstrap_signs_lower_is_better_metrics_and_resamples_corpus_statistics():
    # word_perplexity rows are [loglikelihood, words]; the candidate loses 3 nats on every one of 18 documents.
    base_rows = [[-100.0, 10], [-200.0, 20], [-150.0, 15]] * 6
    cand_rows = [[ll - 3, words] for ll, words in base_rows]
    base = make_run("base", {"wikitext2": {"word_perplexity": base_rows}})
    cand = make_run("cand", {"wikitext2": {"word_perplexity": cand_rows}})
    row = one_row(compare_runs(base, cand), "word_perplexity")
    assert row.baseline == pytest.approx(math.exp(450 / 45)) and row.candidate == pytest.approx(math.exp(459 / 45))
    assert row.delta == pytest.approx(math.exp(10) - math.exp(10.2))  # baseline - candidate: worse is negative
    assert row.test == "bootstrap" and row.p_value == 0.0 and row.regression  # every resample loses loglikelihood


def test_bootstrap_on_two_documents():
    # Per-document deltas +1 and -3: a resample holds doc 0 twice (1/4, mean +1), doc 1 twice (1/4, -3) or
    # both (1/2, -1), so P(delta >= 0) = 1/4 and the 5th / 95th percentiles are -3 and +1. The p-value of
    # two documents is the exact sign flip's: sums -2 (observed), +4, -4, +2, of which two are <= -2.
    base = make_run("base", {"squad": {"f1": [[50.0], [50.0]]}})
    cand = make_run("cand", {"squad": {"f1": [[51.0], [47.0]]}})
    row = one_row(compare_runs(base, cand, iters=20000, seed=1), "f1")
    assert (row.test, row.p_value) == ("permutation", 0.5)
    assert (row.ci_low, row.ci_high) == (-3.0, 1.0) and row.delta == -1.0 and not row.regression
    deltas = paired_bootstrap(
        get_metric("f1").aggregate, np.array([[50.0], [50.0]]), np.array([[51.0], [47.0]]), iters=20000, seed=1
    )
    assert (deltas >= 0).mean() == pytest.approx(0.25, abs=0.015)


def test_max_drop_and_alpha_validation():
    assert parse_max_drops(["f1=2", "bleu=5%"]) == {
        "f1": parse_max_drops(["f1=2"])["f1"],
        "bleu": parse_max_drops(["bleu=5%"])["bleu"],
    }
    assert parse_max_drops(["bleu=5%"])["bleu"].allowed(40.0) == 2.0
    for bad in ["f1", "f1=x", "f1=-1", "=2"]:
        with pytest.raises(LlamabenchError, match="METRIC=VALUE"):
            parse_max_drops([bad])
    run = make_run("base", {"squad": {"f1": [[1.0], [2.0]]}})
    with pytest.raises(LlamabenchError, match="--max-drop names bleu"):
        compare_runs(run, run, max_drops=parse_max_drops(["bleu=1"]))
    with pytest.raises(LlamabenchError, match="--alpha"):
        compare_runs(run, run, alpha=1.5)


# --- refusing incomparable runs --------------------------------------------------------------------------------


def test_check_refuses_runs_that_are_not_comparable(tmp_path, capsys):
    stats = {"squad": {"f1": [[10.0], [20.0], [30.0]]}}
    base = make_run("base", stats)
    other_hash = make_run("new-prompt", stats, started="2025-01-02T00:00:00+00:00", task_hash="changed")
    fewer_docs = make_run("fewer", {"squad": {"f1": [[10.0], [20.0]]}}, started="2025-01-03T00:00:00+00:00")
    other_task = make_run("other", {"cnndm": {"rouge1": [[0.1], [0.2], [0.3]]}}, started="2025-01-04T00:00:00+00:00")
    store = RunStore.in_dir(tmp_path)
    for run in (base, other_hash, fewer_docs, other_task):
        store.add(run)
    expected = [
        (other_hash, "task squad: the runs are not comparable (task_hash hash vs changed, baseline vs candidate)"),
        (
            fewer_docs,
            "task squad: the runs scored different documents (1 only in the baseline, 0 only in the candidate)",
        ),
        (other_task, "runs cover different tasks (only baseline: squad; only candidate: cnndm)"),
    ]
    for candidate, message in expected:
        argv = ["check", "--output-dir", str(tmp_path), "--baseline", base.manifest["run_id"]]
        assert main([*argv, "--candidate", candidate.manifest["run_id"]]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err


def with_lm_eval_task(run, acc):
    """``run`` plus an lm-eval-style task: per-document values but no stats column, direction unknown."""
    row = {**run.results.iloc[0].to_dict(), "task": "lm_eval:x", "metric": "acc,none", "value": acc}
    results = results_frame([*run.results.to_dict("records"), {**row, "higher_is_better": None}])
    samples = {**run.samples, "lm_eval:x": pd.DataFrame({"doc_id": ["a", "b"], "acc,none": [acc, acc]})}
    return RunResult(results, samples, run.manifest)


def test_check_skips_tasks_without_statistics_and_report_leaves_them_unranked(tmp_path, capsys):
    stats = {"squad": {"f1": [[10.0], [20.0]]}}
    base = with_lm_eval_task(make_run("base", stats), 1.0)
    cand = with_lm_eval_task(make_run("cand", stats, started="2025-01-02T00:00:00+00:00"), 0.0)
    store = RunStore.in_dir(tmp_path)
    for run in (base, cand):
        store.add(run)
    argv = ["check", "--output-dir", str(tmp_path), "--junit", str(tmp_path / "check.xml")]
    assert main([*argv, "--baseline", base.manifest["run_id"], "--candidate", cand.manifest["run_id"]]) == 0
    out = capsys.readouterr().out
    assert "PASS: no regression in 1 task-metric comparisons" in out
    assert "not checked: lm_eval:x (no per-sample statistics)" in out
    suite = ET.parse(tmp_path / "check.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("skipped"), suite.get("failures")) == ("2", "1", "0")
    board = build_leaderboard([base, cand])
    assert [(c.key, c.arrow) for c in board.columns] == [("squad/f1", " ↑"), ("lm_eval:x/acc,none", "")]
    assert board.best_rows(1) == set()


# --- real runs on the tiny model: store round-trip, check on a degraded model, the run command ----------------


QUESTION_PPL = """\
name: question_ppl
kind: loglikelihood_rolling
dataset: {local: squad_v1.1_dev/dev.jsonl}
doc_id: "{{ id }}"
prompt: "{{ question }}"
metrics: [word_perplexity, byte_perplexity, bits_per_byte, token_perplexity]
"""


@pytest.fixture(scope="module")
def tiny_runs(data_dir, tmp_path_factory):
    """Baseline, identical re-run and noise-degraded tiny model: perplexity of the first 8 SQuAD questions."""
    tasks_dir = tmp_path_factory.mktemp("tasks")
    (tasks_dir / "question_ppl.yaml").write_text(QUESTION_PPL)
    config = RunConfig(tasks=["question_ppl"], limit=8, data_dir=data_dir, tasks_dir=[tasks_dir])
    evaluation = Evaluation.prepare(config)
    baseline = HFBackend(tiny_llama(0), byte_tokenizer(), model_id="tiny-0", progress=False, max_length=128)
    noisy = tiny_llama(0)
    torch.manual_seed(1)
    with torch.no_grad():
        noisy.lm_head.weight.add_(0.5 * torch.randn_like(noisy.lm_head.weight))
    degraded = HFBackend(noisy, byte_tokenizer(), model_id="tiny-noisy", progress=False, max_length=128)
    return evaluation.run_backend(baseline), evaluation.run_backend(baseline), evaluation.run_backend(degraded)


def assert_same_run(loaded, original):
    pd.testing.assert_frame_equal(loaded.results, original.results)
    assert list(loaded.samples) == list(original.samples)
    for task, samples in original.samples.items():
        pd.testing.assert_frame_equal(loaded.samples[task], samples)
    assert loaded.manifest.to_dict() == json.loads(json.dumps(original.manifest.to_dict(), default=str))


def test_store_round_trip(tiny_runs, tmp_path):
    base, rerun, _ = tiny_runs
    store = RunStore.in_dir(tmp_path / "runs")
    assert store.list().empty and not store.path.exists()  # reading does not create the file
    folder = write_run(base, tmp_path / "runs")
    assert store.add(base, folder) == base.manifest["run_id"]
    store.add(rerun)
    listed = store.list()
    assert listed.run_id.tolist() == [base.manifest["run_id"], rerun.manifest["run_id"]]
    assert listed.model.tolist() == ["tiny-0", "tiny-0"] and listed.tasks.tolist() == ["question_ppl"] * 2
    assert listed.fingerprint.tolist() == [base.results.model_fingerprint[0]] * 2
    assert listed.started[0] == base.manifest["started"] and listed.folder[0] == str(folder.resolve())
    assert_same_run(store.load(base.manifest["run_id"]), base)
    assert_same_run(store.load(rerun.manifest["run_id"][:-1]), rerun)  # unique prefix
    assert_same_run(store.load(folder), base)
    # A folder that is not in the store is read from its files.
    assert_same_run(RunStore(tmp_path / "other.sqlite").load(folder), base)
    with pytest.raises(LlamabenchError, match="is ambiguous"):
        store.load(base.manifest["run_id"][:4])
    with pytest.raises(LlamabenchError, match="no run 'nope'"):
        store.load("nope")
    with pytest.raises(LlamabenchError, match="already in"):
        store.add(base)


def test_check_flags_the_degraded_model_and_passes_the_rerun(tiny_runs, tmp_path, capsys):
    base, rerun, degraded = tiny_runs
    store = RunStore.in_dir(tmp_path)
    for run in tiny_runs:
        store.add(run)
    argv = ["check", "--output-dir", str(tmp_path), "--baseline", base.manifest["run_id"], "--bootstrap-iters", "200"]

    assert main([*argv, "--candidate", rerun.manifest["run_id"], "--junit", str(tmp_path / "same.xml")]) == 0
    out = capsys.readouterr().out
    assert "PASS: no regression in 4 task-metric comparisons" in out and "REGRESSION" not in out
    suite = ET.parse(tmp_path / "same.xml").getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("4", "0")

    assert main([*argv, "--candidate", degraded.manifest["run_id"], "--junit", str(tmp_path / "bad.xml")]) == 1
    assert "FAIL: 4 regression(s) at alpha 0.05" in capsys.readouterr().out
    cases = ET.parse(tmp_path / "bad.xml").getroot().findall("testsuite/testcase")
    names = {"word_perplexity", "byte_perplexity", "bits_per_byte", "token_perplexity"}
    assert {case.get("name") for case in cases if case.find("failure") is not None} == names
    assert {case.get("classname") for case in cases} == {"llamabench.question_ppl"}

    # The figures are the runs' own; an allowed drop just above (below) the bits-per-byte drop passes (fails) it.
    rows = {row.metric: row for row in compare_runs(base, degraded, iters=200)}
    drop = degraded.value("question_ppl", "bits_per_byte") - base.value("question_ppl", "bits_per_byte")
    assert rows["bits_per_byte"].baseline == base.value("question_ppl", "bits_per_byte")
    assert rows["bits_per_byte"].delta == pytest.approx(-drop) and drop > 1
    assert main([*argv, "--candidate", degraded.manifest["run_id"], "--max-drop", f"bits_per_byte={drop * 1.01}"]) == 1
    assert "FAIL: 3 regression(s)" in capsys.readouterr().out
    assert main([*argv, "--candidate", degraded.manifest["run_id"], "--max-drop", f"bits_per_byte={drop * 0.99}"]) == 1
    assert "FAIL: 4 regression(s)" in capsys.readouterr().out


def test_run_command_records_the_run_in_the_store(data_dir, tmp_path, monkeypatch, capsys):
    model_dir = save_tiny_model(tmp_path / "checkpoint-1000")
    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "runs"
    argv = ["run", "--model", str(model_dir), "--tasks", "ppl", "--limit", "1", "--max-length", "128"]
    assert main([*argv, "--data-dir", str(data_dir), "--output-dir", str(out), "--device", "cpu"]) == 0
    (folder,) = [path for path in out.iterdir() if path.is_dir()]
    capsys.readouterr()
    assert main(["runs", "--output-dir", str(out)]) == 0
    listing = capsys.readouterr().out
    stored = RunStore.in_dir(out).load(folder)
    assert stored.manifest["run_id"] in listing and "checkpoint-1000" in listing and "wikitext2" in listing
    assert_same_run(stored, read_run(folder))


# --- report -----------------------------------------------------------------------------------------------------


def checkpoint_runs():
    """Three checkpoints, started in a different order than their steps; f1 per document [a, b]."""
    f1 = {"ckpt-step200": [60.0, 80.0], "ckpt-step100": [40.0, 60.0], "ckpt-step300": [50.0, 70.0]}
    ppl = {"ckpt-step200": -90.0, "ckpt-step100": -100.0, "ckpt-step300": -80.0}
    return [
        make_run(
            model,
            {
                "squad": {"f1": [[v] for v in f1[model]], "exact_match": em_rows([1, 0])},
                "wikitext2": {"word_perplexity": [[ppl[model], 10.0], [ppl[model], 10.0]]},
            },
            started=f"2025-01-0{i + 1}T00:00:00+00:00",
        )
        for i, model in enumerate(f1)
    ]


def test_checkpoint_steps_from_names():
    names = ["step1000", "checkpoint-1000", "ckpt_1000", "1000", "run3/global_step1000", "model-iter1000"]
    assert [checkpoint_step(name) for name in names] == [1000] * 6
    assert checkpoint_step("llama-7b") is None and checkpoint_step("smollm2-135m") is None


def test_leaderboard_orders_by_step_and_writes_csv_and_markdown(tmp_path):
    runs = checkpoint_runs()
    board = build_leaderboard(runs)
    assert board.labels == ["ckpt-step100", "ckpt-step200", "ckpt-step300"] and board.x == [100, 200, 300]
    assert [c.key for c in board.columns] == ["squad/f1", "squad/exact_match", "wikitext2/word_perplexity"]
    assert board.best_rows(0) == {1} and board.best_rows(1) == {0, 1, 2} and board.best_rows(2) == {2}

    paths = write_report(runs, tmp_path)
    csv = pd.read_csv(paths[0])
    assert csv.label.tolist() == board.labels and csv.step.tolist() == [100, 200, 300]
    assert csv["squad/f1"].tolist() == [50.0, 70.0, 60.0]
    assert csv["squad/f1 stderr"].tolist() == pytest.approx([10.0, 10.0, 10.0])  # sd(a, b) / sqrt 2 = |a - b| / 2
    assert csv["wikitext2/word_perplexity"].tolist() == pytest.approx([math.exp(10), math.exp(9), math.exp(8)])

    # Written out by hand. f1 per run: mean of [40, 60], [60, 80], [50, 70] ± sd / sqrt 2 = |a - b| / 2 = 10.
    # EM of [100, 0] is 50 ± 50 (sd 70.71 / sqrt 2) for every run: a tie, all bold. "_" is escaped (emphasis).
    # Perplexity exp(-sum ll / sum words): exp(10), exp(9), exp(8); two equal documents: bootstrap stderr 0.
    expected = """\
## llamabench leaderboard

3 runs, ordered by step; best value per column in **bold** (↑ higher is better, ↓ lower is better); ± is the \
standard error.

### squad

| model | step | f1 ↑ | exact\\_match ↑ |
|---|---:|---:|---:|
| ckpt-step100 | 100 | 50.00 ± 10.00 | **50.00** ± 50.00 |
| ckpt-step200 | 200 | **70.00** ± 10.00 | **50.00** ± 50.00 |
| ckpt-step300 | 300 | 60.00 ± 10.00 | **50.00** ± 50.00 |

### wikitext2

| model | step | word\\_perplexity ↓ |
|---|---:|---:|
| ckpt-step100 | 100 | 22026.47 ± 0.0000 |
| ckpt-step200 | 200 | 8103.08 ± 0.0000 |
| ckpt-step300 | 300 | **2980.96** ± 0.0000 |
"""
    assert paths[1].read_text() == expected
    assert "<html" in paths[2].read_text()[:100]


def test_labels_set_names_and_steps_and_runs_without_steps_come_first(tmp_path, capsys):
    runs = checkpoint_runs()
    store = RunStore.in_dir(tmp_path)
    for run in runs:
        store.add(run)
    first = runs[0].manifest["run_id"]
    out = tmp_path / "report"
    assert main(["report", "--output-dir", str(tmp_path), "--out", str(out), "--label", f"{first}=step50"]) == 0
    assert pd.read_csv(out / "leaderboard.csv").label.tolist() == ["step50", "ckpt-step100", "ckpt-step300"]

    unnamed = make_run("final-model", {"squad": {"f1": [[1.0], [2.0]]}}, started="2025-01-09T00:00:00+00:00")
    board = build_leaderboard([unnamed, *runs])
    assert board.x_title == "step" and board.x == [None, 100, 200, 300]  # a run without a step first, no x
    assert board.labels == ["final-model", "ckpt-step100", "ckpt-step200", "ckpt-step300"]
    with pytest.raises(LlamabenchError, match="--label names run"):
        build_leaderboard(runs, {"nope": "x"})


def test_report_marks_tasks_whose_runs_differ_in_settings():
    runs = checkpoint_runs()
    assert build_leaderboard(runs).incomparable_tasks() == {}
    changed = make_run("ckpt-step400", {"squad": {"f1": [[1.0], [2.0]]}}, task_hash="new", started="2025-02-01")
    board = build_leaderboard([*runs, changed])
    assert board.incomparable_tasks() == {"squad": ["task_hash hash vs new"]}
    markdown = to_markdown(board)
    warning = r"Warning: columns marked ≠ compare runs with different settings: squad \(task\_hash hash vs new\)."
    assert warning in markdown
    assert "f1 ↑ ≠" in markdown
    assert board.best_rows(0) == set()  # no "best" among runs that are not comparable
    shots = make_run("ckpt-step500", {"squad": {"f1": [[1.0], [2.0]]}}, num_fewshot=2, started="2025-03-01")
    assert build_leaderboard([*runs, shots]).incomparable_tasks() == {"squad": ["num_fewshot 0 vs 2"]}
