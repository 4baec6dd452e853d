"""More bad input: broken checkpoints, empty documents, unwritable output, conflicting flags, hostile names."""

import json

import pytest
from builders import PPL_TASK

from llamabench.cli.app import main
from llamabench.config import RunConfig
from llamabench.escaping import safe_name
from llamabench.pipeline import Evaluation
from llamabench.records.results import RunResult, results_frame, write_run


@pytest.fixture
def ppl_workspace(tmp_path, monkeypatch):
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_ppl.yaml").write_text(PPL_TASK)
    rows = [{"text": "The cat sat on the mat."}, {"text": ""}, {"text": "   "}, {"text": "Dogs bark at night."}]
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def run_cli(capsys, workspace, *args) -> str:
    argv = [
        "run",
        "--tasks",
        "tiny_ppl",
        "--tasks-dir",
        str(workspace / "tasks"),
        "--data-dir",
        str(workspace),
        "--output-dir",
        str(workspace / "out"),
        *args,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("llamabench: error: ")
    return err[-1]


def test_empty_documents_are_skipped_and_counted(tiny_backend, ppl_workspace):
    config = RunConfig(tasks=["tiny_ppl"], tasks_dir=[ppl_workspace / "tasks"], data_dir=ppl_workspace)
    run = Evaluation.prepare(config).run_backend(tiny_backend())
    notes = run.manifest["tasks"]["tiny_ppl"]
    assert (notes["documents"], notes["skipped_empty"], notes["task_hash"]) == (2, 2, run.results.task_hash.iloc[0])
    assert run.results.n.tolist() == [2, 2]
    assert run.samples["tiny_ppl"].n_tokens.tolist() == [len("The cat sat on the mat."), len("Dogs bark at night.")]


def test_corrupt_gguf_file(capsys, ppl_workspace):
    bad = ppl_workspace / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    err = run_cli(capsys, ppl_workspace, "--model", str(bad))
    assert "GGUF file" in err and "broken.gguf could not be read" in err and "corrupt" in err


def test_truncated_safetensors_checkpoint(capsys, ppl_workspace):
    from conftest import tiny_llama

    folder = ppl_workspace / "ckpt"
    tiny_llama().save_pretrained(folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    err = run_cli(capsys, ppl_workspace, "--model", str(folder))
    assert "model ckpt could not be loaded" in err


def test_unwritable_output_dir_fails_before_any_work(capsys, ppl_workspace):
    blocker = ppl_workspace / "a-file"
    blocker.write_text("")
    err = run_cli(capsys, ppl_workspace, "--output-dir", str(blocker / "results"))
    assert "is not writable" in err and "--output-dir" in err


def test_conflicting_cache_flags(capsys, ppl_workspace):
    assert "--no-cache and --refresh conflict" in run_cli(capsys, ppl_workspace, "--no-cache", "--refresh")


def test_output_names_cannot_escape_the_output_dir(tmp_path):
    assert safe_name("../../etc/passwd") == "_.._etc_passwd"  # no separator, no leading dot
    assert safe_name("..") == "unnamed"
    run = RunResult(results_frame([]), {"../../evil": results_frame([])}, {"model": "../../../outside", "run_id": "r1"})
    folder = write_run(run, tmp_path / "out")
    assert folder.resolve().parent == (tmp_path / "out").resolve()
    assert all(p.resolve().is_relative_to(folder.resolve()) for p in folder.iterdir())
