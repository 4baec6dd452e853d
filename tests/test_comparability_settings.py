"""``check`` refuses a settings difference iff it can change a number of the task: a seed on a greedy task with no
bootstrap-dependent figure, or a --limit at or above the task's document count, cannot. Oracle: what the runs'
numbers are (equal, by hand) and whether the seed/limit enters any computation of the task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import save_tiny_model

from llamabench.cli.app import main


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "ckpt")


def evaluate(checkpoint: Path, notes_file: Path, runs: Path, *flags: str) -> str:
    """The folder of a run of the notes perplexity task with ``flags`` (each run in a folder of its own)."""
    out = runs / f"run{len(list(runs.glob('run*')))}"
    argv = ["run", "--model", str(checkpoint), "--text", str(notes_file), "--text-format", "lines", "--no-cache"]
    assert main([*argv, "--output-dir", str(out), *flags]) == 0
    (folder,) = [p for p in out.iterdir() if (p / "manifest.json").is_file()]
    return str(folder)


def check(runs: Path, baseline: str, candidate: str) -> int:
    return main(["check", "--output-dir", str(runs), "--baseline", baseline, "--candidate", candidate])


def check_seeds_0_and_7(checkpoint: Path, notes_file: Path, runs: Path, capsys, bootstrap_iters: str):
    """``check`` of a seed-0 run against a seed-7 run, both with ``bootstrap_iters``: its exit code and output."""
    first = evaluate(checkpoint, notes_file, runs, "--seed", "0", "--bootstrap-iters", bootstrap_iters)
    second = evaluate(checkpoint, notes_file, runs, "--seed", "7", "--bootstrap-iters", bootstrap_iters)
    capsys.readouterr()
    return check(runs, first, second), capsys.readouterr()


def test_a_seed_that_changes_no_number_does_not_make_runs_incomparable(checkpoint, notes_file, tmp_path, capsys):
    # Greedy perplexity, no few-shot examples, no bootstrap: the seed enters no computation.
    code, captured = check_seeds_0_and_7(checkpoint, notes_file, tmp_path, capsys, "0")
    assert code == 0
    assert "PASS" in captured.out


def test_a_seed_that_changes_the_bootstrap_stderr_is_refused(checkpoint, notes_file, tmp_path, capsys):
    code, captured = check_seeds_0_and_7(checkpoint, notes_file, tmp_path, capsys, "50")
    assert code == 2
    assert "seed 0 vs 7" in captured.err


def test_a_limit_at_or_above_the_document_count_is_no_limit(checkpoint, notes_file, tmp_path, capsys):
    whole = evaluate(checkpoint, notes_file, tmp_path)
    at_count = evaluate(checkpoint, notes_file, tmp_path, "--limit", "3")  # the notes file has 3 documents
    above = evaluate(checkpoint, notes_file, tmp_path, "--limit", "100")
    capsys.readouterr()
    assert check(tmp_path, whole, at_count) == 0 and check(tmp_path, above, whole) == 0
    manifest = json.loads((Path(above) / "manifest.json").read_text())
    (settings,) = [task["settings"] for task in manifest["tasks"].values()]
    assert settings["limit"] == 100 and "limit" in settings["no_effect"]  # recorded, and recorded as inert
    fewer = evaluate(checkpoint, notes_file, tmp_path, "--limit", "2")
    capsys.readouterr()
    assert check(tmp_path, whole, fewer) == 2  # a limit below the count scores other documents
