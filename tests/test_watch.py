"""`llamabench watch` on a folder this test writes three checkpoints into while it runs, the last one degraded;
and `llamabench run` over several checkpoints at once."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
from builders import watch_argv, write_checkpoint

from llamabench.backends.loading.model_source import fingerprint, resolve_model
from llamabench.cli.app import main
from llamabench.records.store import RunStore
from llamabench.training.checkpoints import snapshot

REPO = Path(__file__).resolve().parents[1]
# lm_head scaled: 1 is the random model (near-uniform predictions), 25 makes confident random guesses (far worse).
HEAD_SCALES = {100: 1.0, 200: 1.0, 300: 25.0}
# The notes have three documents: even all three worse give the exact test p = 1/8, a regression only at an alpha
# above it (at the default 0.05 the check is INCONCLUSIVE).
ALPHA = ("--alpha", "0.2")


def stored_runs(results: Path) -> list[dict]:
    return RunStore.in_dir(results).manifests() if (results / "llamabench.sqlite").exists() else []


def wait_for_checks(lines: list[str], count: int, watcher: subprocess.Popen, timeout: float = 120) -> None:
    """Until the watch has printed ``count`` check verdicts (it checks each checkpoint after the first)."""
    deadline = time.monotonic() + timeout
    while sum(line.startswith(("PASS:", "FAIL:", "INCONCLUSIVE:")) for line in lines) < count:
        assert watcher.poll() is None, watcher.communicate()[1][-2000:]
        assert time.monotonic() < deadline, f"watch printed {count} verdicts in {timeout} s: " + "\n".join(lines)
        time.sleep(0.2)


def test_watch_evaluates_each_checkpoint_once_as_it_completes_and_flags_the_degraded_one(
    tmp_path, data_dir, notes_file
):
    root = tmp_path / "train"
    root.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "llamabench", *watch_argv(root, tmp_path, data_dir, "--every", "0.3", *ALPHA)]
    watcher = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: [lines.append(line) for line in watcher.stdout], daemon=True)
    reader.start()
    try:
        for count, (step, scale) in enumerate(HEAD_SCALES.items()):
            # Weights written 1.5 s after the rest: several polls see a folder without them.
            write_checkpoint(root / f"checkpoint-{step}", scale, weights_after=1.5 if step == 200 else 0.0)
            wait_for_checks(lines, count, watcher)
        wait_for_checks(lines, 2, watcher)
    finally:
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout=60)
        reader.join(timeout=10)
    out = "".join(lines)
    runs = stored_runs(tmp_path / "runs")
    assert [run["step"] for run in runs] == [100, 200, 300]
    for run in runs:  # each evaluated the checkpoint's final files, not a half-written one
        folder = Path(run["config"]["model"])
        assert run["backend"]["fingerprint"] == fingerprint(resolve_model(str(folder)))
    board = pd.read_csv(tmp_path / "reports" / "leaderboard.csv")
    assert len(board) == 3 and board.filter(like="word_perplexity").notna().all().all()
    regressions = [line for line in out.splitlines() if line.startswith("REGRESSION")]
    assert len(regressions) == 1 and regressions[0].startswith("REGRESSION at step 300:"), out[-3000:]
    assert f"text:{notes_file}".replace("/", "_") + "/word_perplexity" in regressions[0]

    # Restarted, it evaluates nothing again; a new degraded checkpoint fails `--once` with exit 1.
    assert main(watch_argv(root, tmp_path, data_dir, "--every", "0.1", "--once", *ALPHA)) == 0
    assert len(stored_runs(tmp_path / "runs")) == 3
    write_checkpoint(root / "step400", 60.0)
    assert main(watch_argv(root, tmp_path, data_dir, "--every", "0.1", "--once", *ALPHA)) == 1
    assert [run["step"] for run in stored_runs(tmp_path / "runs")] == [100, 200, 300, 400]


def test_watch_once_on_three_documents_is_inconclusive_and_exits_0(tmp_path, data_dir, notes_file, capsys):
    root = tmp_path / "train"
    root.mkdir()
    for step in (100, 300):
        write_checkpoint(root / f"checkpoint-{step}", HEAD_SCALES[step])
    assert main(watch_argv(root, tmp_path, data_dir, "--every", "0.1", "--once")) == 0
    out = capsys.readouterr().out
    assert "REGRESSION" not in out and "PASS:" not in out
    (line,) = [line for line in out.splitlines() if line.startswith("INCONCLUSIVE at step 300:")]
    assert "/word_perplexity" in line
    assert "on 3 document(s), 3 differing: the smallest p they can give is 0.125, not below alpha 0.05" in out


def test_a_checkpoint_is_complete_once_its_weights_are_there_and_its_files_stop_changing(tmp_path):
    folder = tmp_path / "checkpoint-5"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert snapshot(folder) is None  # no weights yet
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    first = snapshot(folder)
    assert first is not None and snapshot(folder) == first
    with open(folder / "model.safetensors", "ab") as weights:
        weights.write(b"y")
    assert snapshot(folder) != first
    index = {"weight_map": {"a": "model.safetensors", "b": "model-2.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert snapshot(folder) is None  # a shard the index names is not there yet
    (folder / "model-2.safetensors").write_bytes(b"z")
    assert snapshot(folder) is not None


def test_run_evaluates_several_checkpoints_and_check_takes_their_runs(tmp_path, notes_file, capsys):
    (tmp_path / "train").mkdir()
    for step in (300, 200):
        write_checkpoint(tmp_path / "train" / f"checkpoint-{step}", HEAD_SCALES[step])
    settings = ["--text", str(notes_file), "--text-format", "lines", "--no-cache", "--batch-size", "1"]
    argv = [
        "run",
        "--model",
        str(tmp_path / "train" / "checkpoint-*"),
        *settings,
        "--output-dir",
        str(tmp_path / "runs"),
    ]
    assert main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("runs: ")
    first_id, second_id = last.removeprefix("runs: ").split(" (")[0].split()
    runs = RunStore.in_dir(tmp_path / "runs")
    assert [runs.load(i).manifest["model"] for i in (first_id, second_id)] == ["checkpoint-200", "checkpoint-300"]
    for step, run_id in ((200, first_id), (300, second_id)):  # each equals a run of that checkpoint alone
        alone = tmp_path / f"alone-{step}"
        single = [
            "run",
            "--model",
            str(tmp_path / "train" / f"checkpoint-{step}"),
            *settings,
            "--output-dir",
            str(alone),
        ]
        assert main(single) == 0
        (folder,) = [p for p in alone.iterdir() if p.is_dir()]
        expected = pd.read_csv(folder / "results.csv").value.tolist()
        assert runs.load(run_id).results.value.tolist() == expected
    check = ["check", "--output-dir", str(tmp_path / "runs"), "--baseline", first_id, "--candidate", second_id]
    assert main([*check, *ALPHA]) == 1  # the degraded checkpoint regresses
    assert main(["report", "--output-dir", str(tmp_path / "runs"), first_id, second_id, "--out", str(tmp_path)]) == 0


def test_bad_watch_and_model_glob_input_is_one_line_before_any_model_loads(tmp_path, data_dir, capsys):
    common = ["--tasks", "ppl", "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "runs")]
    cases = {
        ("watch", str(tmp_path / "nowhere"), *common): "watch folder",
        ("watch", str(tmp_path), "--every", "0", *common): "--every 0.0 must be a positive number",
        ("run", "--model", str(tmp_path / "checkpoint-*"), *common): "matches no file or folder",
    }
    for argv, expected in cases.items():
        assert main(list(argv)) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], lines
