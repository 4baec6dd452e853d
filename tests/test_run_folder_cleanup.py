"""Temporary run folders (``.<name>.tmp-<pid>``) of killed runs are removed by the next run, `runs` or `report`
over their results folder; a live writer's folder (another process's, or this one's) is never touched, and a pid
reused by a process that started after the folder was written does not keep it alive. A folder written to in
the last two minutes is kept whatever its pid (a writer on another machine sharing the folder)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from builders import make_run

import llamabench.records.results
from llamabench.cli.app import main
from llamabench.records.results import write_run


@pytest.fixture
def live_child():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield child
    child.kill()
    child.wait()


def killed_child() -> int:
    """The pid of a process killed mid-way (SIGKILL, as an out-of-memory kill is) and reaped."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    child.kill()
    child.wait()
    return child.pid


def temporary(results: Path, name: str, pid: int) -> Path:
    folder = results / f".{name}.tmp-{pid}"
    folder.mkdir(parents=True)
    (folder / "results.csv").write_text("half written")
    return folder


def folders(results: Path, live_child) -> dict[str, Path]:
    killed = temporary(results, "ckpt-step1-a", killed_child())
    live = temporary(results, "ckpt-step2-b", live_child.pid)
    own = temporary(results, "ckpt-step3-c", os.getpid())
    # The pid of a live process, but the folder was last written an hour before that process started: the pid
    # was reused after the folder's writer died.
    reused = temporary(results, "ckpt-step4-d", live_child.pid)
    an_hour_ago = time.time() - 3600
    os.utime(reused, (an_hour_ago, an_hour_ago))
    zombie = subprocess.Popen([sys.executable, "-c", ""])  # exited, not yet reaped by us
    deadline = time.monotonic() + 30
    while Path(f"/proc/{zombie.pid}").exists() and "Z" not in Path(f"/proc/{zombie.pid}/stat").read_text()[-200:]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    dead_unreaped = temporary(results, "ckpt-step5-e", zombie.pid)
    return {"killed": killed, "live": live, "own": own, "reused": reused, "zombie": dead_unreaped}


@pytest.mark.parametrize("how", ["run", "runs", "report"])
def test_killed_runs_folders_go_and_live_writers_folders_stay(how, tmp_path, live_child, capsys, monkeypatch):
    results = tmp_path / "runs"
    made = folders(results, live_child)
    monkeypatch.setattr(llamabench.records.results, "RUN_WRITE_QUIET_S", 0.0)  # the folders were all written just now
    if how == "run":  # what `llamabench run` and `watch` do after each evaluation
        write_run(make_run("ckpt-step9", {"squad": {"f1": [[10.0], [30.0]]}}), results)
    else:
        argv = [how, "--output-dir", str(results)] + (["--out", str(tmp_path / "report")] if how == "report" else [])
        main(argv)
    left = {name for name, folder in made.items() if folder.exists()}
    assert left == {"live", "own"}
    if how != "run":
        err = capsys.readouterr().err
        for name in ("killed", "reused", "zombie"):
            assert f"removed {made[name]}" in err, err


def test_a_folder_written_to_moments_ago_is_kept_whatever_its_pid(tmp_path):
    results = tmp_path / "runs"
    elsewhere = temporary(results, "ckpt-step1-a", killed_child())  # as a writer on another machine looks here
    write_run(make_run("ckpt-step9", {"squad": {"f1": [[10.0], [30.0]]}}), results)
    assert elsewhere.exists()
    three_minutes_ago = time.time() - 180
    for path in [*elsewhere.iterdir(), elsewhere]:
        os.utime(path, (three_minutes_ago, three_minutes_ago))
    write_run(make_run("ckpt-step10", {"squad": {"f1": [[10.0], [30.0]]}}), results)
    assert not elsewhere.exists()
