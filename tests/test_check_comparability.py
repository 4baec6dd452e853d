"""`llamabench check` and `report` refuse or mark runs whose settings, prompts, data or tokenizers differ."""

import json
from pathlib import Path

import pytest
from builders import cli_run, make_run, write_run_workspace
from conftest import save_tiny_model

from llamabench.cli.app import main
from llamabench.records.results import RunResult, write_run


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    return write_run_workspace(tmp_path, monkeypatch)


def check(workspace: Path, baseline: RunResult, candidate: RunResult, capsys) -> tuple[int, str]:
    folders = [write_run(run, workspace / "check-runs") for run in (baseline, candidate)]
    argv = ["check", "--output-dir", str(workspace), "--baseline", str(folders[0]), "--candidate", str(folders[1])]
    code = main(argv)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    ("baseline_flags", "candidate_flags", "difference"),
    [
        (["--num-fewshot", "2"], ["--num-fewshot", "0"], "num_fewshot 2 vs 0"),
        (["--max-length", "64"], ["--max-length", "128"], "max_length 64 vs 128"),
        # The seed draws the few-shot examples (with none drawn, it changes no number: test_comparability_settings).
        (["--seed", "1", "--num-fewshot", "1"], ["--seed", "2", "--num-fewshot", "1"], "seed 1 vs 2"),
    ],
)
def test_check_refuses_runs_with_different_settings(workspace, capsys, baseline_flags, candidate_flags, difference):
    model = save_tiny_model(workspace / "m")
    runs = [
        cli_run(workspace, model, f"out-{i}", "--tasks", "tiny_qa", "--no-cache", *flags)
        for i, flags in enumerate((baseline_flags, candidate_flags))
    ]
    capsys.readouterr()
    code, err = check(workspace, *runs, capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert f"task tiny_qa: the runs are not comparable ({difference}, baseline vs candidate)" in err


def test_check_refuses_runs_whose_prompts_differ(workspace, capsys):
    model = save_tiny_model(workspace / "m")
    base = cli_run(workspace, model, "out-a", "--tasks", "tiny_qa", "--no-cache")
    cand = cli_run(workspace, model, "out-b", "--tasks", "tiny_qa", "--no-cache")
    samples = cand.samples["tiny_qa"].copy()
    samples.loc[3, "prompt_hash"] = "0" * 12
    capsys.readouterr()
    code, err = check(workspace, base, RunResult(cand.results, {"tiny_qa": samples}, cand.manifest), capsys)
    assert code == 2 and "1 document(s) were given different prompts (first: doc_id 3)" in err


def test_data_change_makes_runs_incomparable(workspace, capsys):
    model = save_tiny_model(workspace / "m")
    base = cli_run(workspace, model, "out-a", "--tasks", "tiny_ppl", "--no-cache", "--limit", "1")
    with (workspace / "texts.jsonl").open("a") as handle:  # a document past --limit: same prompts, other data
        handle.write(json.dumps({"text": "A third text."}) + "\n")
    cand = cli_run(workspace, model, "out-b", "--tasks", "tiny_ppl", "--no-cache", "--limit", "1")
    capsys.readouterr()
    code, err = check(workspace, base, cand, capsys)
    assert code == 2 and "data_hash" in err


def test_token_perplexity_is_not_compared_across_tokenizers(tmp_path, capsys):
    from llamabench.analysis.report import build_leaderboard
    from llamabench.records.store import RunStore

    stats = {"corpus": {"word_perplexity": [[-50.0, 10], [-40.0, 8]], "token_perplexity": [[-50.0, 20], [-40.0, 16]]}}
    base = make_run("llama2", stats)
    other = make_run("llama3", stats, started="2025-01-02T00:00:00+00:00", other_tokenizer=True)
    same = make_run("llama2-ft", stats, started="2025-01-03T00:00:00+00:00")
    store = RunStore.in_dir(tmp_path)
    for run in (base, other, same):
        store.add(run)
    argv = ["check", "--output-dir", str(tmp_path), "--baseline", base.manifest["run_id"], "--candidate"]
    assert main([*argv, other.manifest["run_id"]]) == 0
    out = capsys.readouterr().out
    assert "not checked: corpus/token_perplexity (the runs' tokenizers differ)" in out
    assert "word_perplexity" in out and "token_perplexity  " not in out.split("\n\n")[0]
    assert main([*argv, same.manifest["run_id"]]) == 0
    assert "not checked" not in capsys.readouterr().out
    marks = {column.metric: column.marks for column in build_leaderboard([base, other]).columns}
    assert marks == {"word_perplexity": " ↓", "token_perplexity": " ↓ ≠"}
