"""Faults and hostile files: bounded task YAML, crash-consistent run folders, stale temporary folders."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from builders import GOOD_TASK, make_run, run_cli_error, write_qa_workspace

from llamabench.backends.loading.stale import remove_stale_temporaries
from llamabench.cli.app import main
from llamabench.errors import LlamabenchError
from llamabench.records.results import write_run
from llamabench.records.store import RunStore
from llamabench.tasks.task_file import MAX_TASK_FILE_BYTES, MAX_TASK_NODES, load_task_file


@pytest.fixture
def workspace(tmp_path):
    return write_qa_workspace(tmp_path)


def billion_laughs(levels: int = 9, width: int = 9) -> str:
    """A task whose description nests ``levels`` anchors each aliasing the previous one ``width`` times:
    width**levels strings once expanded (9**9 = 387 million), from a file of about a kilobyte."""
    items = ['&a0 "lol"'] + [f"&a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return GOOD_TASK + "description: [" + ",\n  ".join(items) + "]\n"


def test_billion_laughs_task_file_is_refused_quickly(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs())
    start = time.monotonic()
    with pytest.raises(LlamabenchError) as error:
        load_task_file(path)
    assert time.monotonic() - start < 5  # the old loader built the document and hashed it for minutes
    assert str(error.value) == (
        f"task file {path}: its YAML aliases expand to more than {MAX_TASK_NODES} values; "
        "write the values out instead of repeating anchors (*alias)"
    )


def test_billion_laughs_is_one_cli_line(capsys, workspace):
    (workspace / "tasks" / "laughs.yaml").write_text(billion_laughs())
    # Asked for by its file's name: a broken file that the run does not ask for is a warning, not an error.
    assert "laughs.yaml: its YAML aliases expand to more than" in run_cli_error(capsys, workspace, "--tasks", "laughs")


def test_modest_aliases_still_load(tmp_path):
    # 3 levels of 3: 1 + 3 + 9 + 27 expanded values, far below the bound.
    path = tmp_path / "ok.yaml"
    path.write_text(billion_laughs(levels=3, width=3))
    with pytest.raises(LlamabenchError, match="description must be text"):  # read in full, refused for its type
        load_task_file(path)


def test_deeply_nested_task_file_is_one_line(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(GOOD_TASK + "description: " + "[" * 50_000 + "]" * 50_000 + "\n")  # 100 kB
    with pytest.raises(LlamabenchError) as error:
        load_task_file(path)
    assert str(error.value) == f"task file {path} nests its values too deeply to read; flatten them"


def test_oversized_task_file_is_refused_before_parsing(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(GOOD_TASK + "description: " + "x" * MAX_TASK_FILE_BYTES + "\n")
    size = path.stat().st_size
    with pytest.raises(LlamabenchError) as error:
        load_task_file(path)
    assert str(error.value) == (
        f"task file {path} is {size} bytes, more than the {MAX_TASK_FILE_BYTES} a task file may have; "
        "keep documents in a data file under --data-dir"
    )


# --- crash-consistent run folders --------------------------------------------------------------------------------


def stats_run(model: str, started: str):
    return make_run(model, {"squad": {"f1": [[10.0], [30.0]]}}, started=started)


def test_write_run_renames_a_complete_folder_into_place(tmp_path, monkeypatch):
    run = stats_run("ckpt-step100", "2025-01-01T00:00:00+00:00")
    written = []
    real_replace = os.replace

    def replace(source, target):  # what the folder holds at the moment it gets its final name
        written.append((Path(source).name, sorted(p.name for p in Path(source).iterdir())))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    folder = write_run(run, tmp_path)
    ((temporary, files),) = written
    assert temporary == f".{folder.name}.tmp-{os.getpid()}"
    assert files == sorted(
        ["manifest.json", "results.csv", "results.parquet", "samples_squad.csv", "samples_squad.parquet"]
    )
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


def test_a_failed_write_leaves_no_folder(tmp_path, monkeypatch):
    run = stats_run("ckpt-step100", "2025-01-01T00:00:00+00:00")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", fail)
    with pytest.raises(LlamabenchError, match="No space left on device"):
        write_run(run, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def killed_before_store(tmp_path):
    """Results dir with one stored run, one run killed between its folder rename and the store insert, a
    temporary folder of a run killed while writing, and a folder whose manifest lacks run_id."""
    stored, unstored = stats_run("ckpt-step100", "2025-01-01T00:00:00+00:00"), stats_run("ckpt-step200", "2025-01-02")
    RunStore.in_dir(tmp_path).add(stored, write_run(stored, tmp_path))
    folder = write_run(unstored, tmp_path)  # ... and the process died before RunStore.add
    killed = tmp_path / f".ckpt-step300-x.tmp-{dead_pid()}"  # its writer is gone: removed by the next listing
    killed.mkdir()
    (tmp_path / ".ipynb_checkpoints").mkdir()  # someone else's hidden folder: ignored
    (killed / "results.csv").write_text("half")
    ten_minutes_ago = time.time() - 600  # the kill was a while ago: nothing is writing to it
    for path in (killed / "results.csv", killed):
        os.utime(path, (ten_minutes_ago, ten_minutes_ago))
    broken = tmp_path / "broken-run"
    broken.mkdir()
    (broken / "manifest.json").write_text(json.dumps({"model": "m", "started": "2025-01-03"}))
    return tmp_path, stored, unstored, folder


def test_runs_lists_a_complete_folder_the_store_lacks(killed_before_store, capsys):
    results_dir, stored, unstored, folder = killed_before_store
    killed = list(results_dir.glob(".*.tmp-*"))
    assert main(["runs", "--output-dir", str(results_dir)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split()[:2] == ["run_id", "model"]
    assert [line.split()[0] for line in lines[1:]] == [stored.manifest["run_id"], unstored.manifest["run_id"]]
    assert captured.err.splitlines() == [
        f"llamabench: note: {folder} is not in the run store {results_dir / 'llamabench.sqlite'} "
        "(its run stopped before recording it, or it was copied here); read from its files",
        f"llamabench: note: removed {next(iter(killed))}: a temporary folder of a run killed while writing it",
        f"llamabench: note: skipped {results_dir / 'broken-run'}: its manifest.json lacks run_id",
    ]
    assert not any(path.exists() for path in killed)


def test_report_includes_a_complete_folder_the_store_lacks(killed_before_store, capsys):
    results_dir, stored, unstored, folder = killed_before_store
    out = results_dir.parent / "report"
    assert main(["report", "--output-dir", str(results_dir), "--out", str(out)]) == 0
    assert pd.read_csv(out / "leaderboard.csv").run_id.tolist() == [
        stored.manifest["run_id"],
        unstored.manifest["run_id"],
    ]
    assert len(capsys.readouterr().err.splitlines()) == 3
    # Named as folders (`report runs/*/`): the incomplete one is skipped with a note, the others reported.
    folders = [str(results_dir / "broken-run"), str(folder), str(next(results_dir.glob("ckpt-step100-*")))]
    assert main(["report", "--output-dir", str(results_dir), "--out", str(out), *folders]) == 0
    assert pd.read_csv(out / "leaderboard.csv").model.tolist() == ["ckpt-step100", "ckpt-step200"]
    assert capsys.readouterr().err.splitlines() == [
        f"llamabench: note: skipped {results_dir / 'broken-run'}: its manifest.json lacks run_id"
    ]


def test_corrupt_results_file_is_one_line_naming_the_folder(killed_before_store, capsys):
    results_dir, _, unstored, folder = killed_before_store
    (folder / "results.parquet").write_bytes(b"not parquet")
    assert main(["report", "--output-dir", str(results_dir), "--out", str(results_dir.parent / "r"), str(folder)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(
        f"llamabench: error: {folder} is not a complete llamabench run"
    )


# --- stale temporary GGUF conversion folders ---------------------------------------------------------------------


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_stale_dense_conversion_folders_are_removed(tmp_path):
    dense = tmp_path / "dense"
    dense.mkdir()
    live = dense / f"abc.tmp{os.getpid()}"
    dead = dense / f"def.tmp{dead_pid()}"
    old = dense / "ghi.tmp1"  # pid 1 is alive (init), but the folder is two days old
    finished = dense / "abc"
    for folder in (live, dead, old, finished):
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    assert remove_stale_temporaries(dense) == [dead, old]
    assert sorted(p.name for p in dense.iterdir()) == ["abc", live.name]
    assert remove_stale_temporaries(tmp_path / "missing") == []
