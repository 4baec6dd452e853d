"""Faults and hostile files: bounded task YAML, crash-consistent run folders, stale temporary folders."""

import time

import pytest
from test_cli_errors import GOOD_TASK, run_cli, workspace  # noqa: F401 (the fixture)

from llamabench.errors import LlamabenchError
from llamabench.tasks.spec import MAX_TASK_FILE_BYTES, MAX_TASK_NODES, load_task_file


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


def test_billion_laughs_is_one_cli_line(capsys, workspace):  # noqa: F811
    (workspace / "tasks" / "laughs.yaml").write_text(billion_laughs())
    assert "laughs.yaml: its YAML aliases expand to more than" in run_cli(capsys, workspace, "--tasks", "tiny_qa")


def test_modest_aliases_still_load(tmp_path):
    # 3 levels of 3: 1 + 3 + 9 + 27 expanded values, far below the bound.
    path = tmp_path / "ok.yaml"
    path.write_text(billion_laughs(levels=3, width=3))
    assert load_task_file(path).name == "tiny_qa"


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
