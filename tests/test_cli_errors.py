"""Bad input gets one clear error line and exit code 2, before any model is loaded."""

import pytest
from builders import GOOD_TASK, run_cli_error, write_qa_workspace

from llamabench.cli.app import main


@pytest.fixture
def workspace(tmp_path):
    return write_qa_workspace(tmp_path)


def test_unknown_task(capsys, workspace):
    assert "unknown task 'nope'; known tasks:" in run_cli_error(capsys, workspace, "--tasks", "nope")


def test_missing_data_file(capsys, workspace):
    (workspace / "data" / "tiny" / "qa.jsonl").unlink()
    err = run_cli_error(capsys, workspace, "--tasks", "tiny_qa")
    assert "data file" in err and "qa.jsonl not found" in err


def test_dataset_without_declared_field(capsys, workspace):
    (workspace / "data" / "tiny" / "qa.jsonl").write_text('{"query": "2+2?", "answer": "4"}\n')
    err = run_cli_error(capsys, workspace, "--tasks", "tiny_qa")
    assert "'question' is undefined" in err and "its fields are answer, query" in err


def test_model_path_that_does_not_exist(capsys, workspace):
    err = run_cli_error(capsys, workspace, "--tasks", "tiny_qa", "--model", str(workspace / "no-such-model"))
    assert "does not exist" in err and "no-such-model" in err


def test_directory_that_is_not_a_model(capsys, workspace):
    err = run_cli_error(capsys, workspace, "--tasks", "tiny_qa", "--model", str(workspace / "data"))
    assert "has no config.json" in err


def test_malformed_yaml(capsys, workspace):
    (workspace / "tasks" / "broken.yaml").write_text("name: broken\nkind: [generate\n")
    err = run_cli_error(
        capsys, workspace, "--tasks", "broken"
    )  # asking for another task only warns (test_task_files.py)
    assert "broken.yaml is not valid YAML at line" in err


def test_unknown_yaml_key_is_named(capsys, workspace):
    (workspace / "tasks" / "tiny_qa.yaml").write_text(GOOD_TASK + "promt: typo\n")
    assert "unknown key(s) promt" in run_cli_error(capsys, workspace, "--tasks", "tiny_qa")


def test_unknown_metric(capsys, workspace):
    (workspace / "tasks" / "tiny_qa.yaml").write_text(GOOD_TASK.replace("exact_match", "exact_matsch"))
    assert "unknown metric 'exact_matsch'" in run_cli_error(capsys, workspace, "--tasks", "tiny_qa")


def test_non_utf8_data(capsys, workspace):
    (workspace / "data" / "tiny" / "qa.jsonl").write_bytes(b'{"question": "caf\xe9", "answer": "4"}\n')
    assert "is not UTF-8 text" in run_cli_error(capsys, workspace, "--tasks", "tiny_qa")


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_non_positive_limit(capsys, workspace, limit):
    assert f"--limit {limit} must be a positive number" in run_cli_error(
        capsys, workspace, "--tasks", "tiny_qa", "--limit", limit
    )


def test_tasks_lists_builtin_tasks_with_metrics(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "wikitext2 (alias: ppl)  [loglikelihood_rolling]  metrics: word_perplexity" in out
    assert "squad (alias: qa)" in out and "arc_easy  [multiple_choice]  metrics: acc, acc_norm" in out


def test_empty_data_file(capsys, workspace):
    (workspace / "data" / "tiny" / "qa.jsonl").write_text("\n \n")
    assert "qa.jsonl is empty" in run_cli_error(capsys, workspace, "--tasks", "tiny_qa")


def test_task_yaml_cannot_run_code(capsys, workspace, tmp_path):
    marker = tmp_path / "pwned"
    (workspace / "tasks" / "evil.yaml").write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\n')
    assert "evil.yaml is not valid YAML" in run_cli_error(capsys, workspace, "--tasks", "evil")
    assert not marker.exists()


def test_runs_folder_has_one_name_and_the_old_one_is_an_alias(tmp_path, capsys):
    from llamabench.cli.app import main

    assert main(["runs", "--output-dir", str(tmp_path)]) == 0
    assert main(["runs", "--results-dir", str(tmp_path)]) == 0
    assert main(["runs", "--output-dir", str(tmp_path), "--results-dir", str(tmp_path / "other")]) == 2
    assert "name two folders" in capsys.readouterr().err
