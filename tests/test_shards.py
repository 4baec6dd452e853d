"""--shard I/N and `llamabench merge`: shards run anywhere, in any order, then merged, give the unsharded run.

The sharded-and-merged run is compared with the unsharded run of the same model (two paths of our code): the
per-sample rows must be equal in content (few-shot prompts included), the aggregates and standard errors equal to
1e-9 relative. Both run at batch size 1, so a document's numbers do not depend on the documents batched with it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from builders import cli_error
from conftest import save_tiny_model

from llamabench.cli.app import main
from llamabench.config import RunConfig
from llamabench.records.results import read_run

# Multiple choice on real data: which of WMT22's two human references is the translation (both are).
CHOICE_TASK = """\
name: wmt_choice
kind: multiple_choice
dataset: {local: wmt22_generaltest_de-en/test.jsonl}
doc_id: "{{ id }}"
prompt: "German: {{ source }}\\nEnglish:"
choices: "{{ [reference, reference_B] }}"
label: "0"
metrics: [acc, acc_norm]
"""
# ppl, bleu (and chrF), rouge and qa are the built-in tasks' aliases; squad draws two few-shot examples per document.
TASKS = "ppl,bleu,rouge,qa,wmt_choice"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("shards")
    (root / "tasks").mkdir()
    (root / "tasks" / "wmt_choice.yaml").write_text(CHOICE_TASK)
    save_tiny_model(root / "tiny", max_positions=4096)
    save_tiny_model(root / "other", seed=1, max_positions=4096)
    saved = os.environ.get("LLAMABENCH_CACHE")
    os.environ["LLAMABENCH_CACHE"] = str(root / "cache")
    yield root
    if saved is None:
        del os.environ["LLAMABENCH_CACHE"]
    else:
        os.environ["LLAMABENCH_CACHE"] = saved


def run(root: Path, data_dir: Path, out: str, *flags: str, model: str = "tiny", tasks: str = TASKS) -> Path:
    """``llamabench run`` on the real data at batch size 1 into ``root/out``; the new run folder."""
    before = set((root / out).glob("tiny-*")) | set((root / out).glob("other-*"))
    argv = ["run", "--model", str(root / model), "--tasks", tasks, "--tasks-dir", str(root / "tasks")]
    argv += ["--data-dir", str(data_dir), "--device", "cpu", "--batch-size", "1", "--output-dir", str(root / out)]
    assert main([*argv, *flags]) == 0
    (folder,) = (set((root / out).glob("tiny-*")) | set((root / out).glob("other-*"))) - before
    return folder


def merge(root: Path, out: str, *runs: Path | str) -> Path:
    """``llamabench merge`` of ``runs`` into ``root/out``: the merged run's folder."""
    before = set((root / out).iterdir()) if (root / out).is_dir() else set()
    assert main(["merge", "--output-dir", str(root / out), *map(str, runs)]) == 0
    (folder,) = {path for path in (root / out).iterdir() if path.is_dir()} - before
    return folder


@pytest.fixture(scope="module")
def sharded(workspace, data_dir):
    """The unsharded run (cache off), and shards 2, 0, 1 of 3 run in that order, shard 1 twice (from the cache)."""
    full = run(workspace, data_dir, "full", "--limit", "4", "--no-cache")
    shards = {index: run(workspace, data_dir, "shards", "--limit", "4", "--shard", f"{index}/3") for index in (2, 0, 1)}
    again = run(workspace, data_dir, "shards", "--limit", "4", "--shard", "1/3")
    return full, shards, again


def test_sharded_and_merged_run_equals_the_unsharded_run(workspace, sharded):
    full, shards, _ = sharded
    merged = read_run(merge(workspace, "merged", *(shards[i] for i in (1, 2, 0))))
    unsharded = read_run(full)
    assert (
        list(merged.samples) == list(unsharded.samples) == ["wikitext2", "wmt22-de-en", "cnndm", "squad", "wmt_choice"]
    )
    for task, samples in unsharded.samples.items():
        pd.testing.assert_frame_equal(merged.samples[task], samples, check_dtype=False)
    columns = ["model", "model_fingerprint", "task", "task_hash", "metric", "n", "signature", "num_fewshot", "seed"]
    pd.testing.assert_frame_equal(merged.results[columns], unsharded.results[columns])
    for column in ("value", "stderr"):
        assert merged.results[column].tolist() == pytest.approx(unsharded.results[column].tolist(), rel=1e-9)
    assert unsharded.value("wmt22-de-en", "chrf") > 0  # a corpus figure that is not 0 on both sides
    for task in unsharded.samples:
        assert merged.manifest.settings(task) == unsharded.manifest.settings(task)
        assert merged.manifest.tasks[task]["documents"] == 4
    assert [part["shard"] for part in merged.manifest.sections["merged_from"]] == ["0/3", "1/3", "2/3"]
    assert "shard" not in merged.manifest.sections and merged.manifest.config["shard"] is None


def test_a_shard_holds_its_part_and_a_rerun_is_served_by_the_cache(sharded):
    _, shards, again = sharded
    parts = [read_run(shards[i]).manifest.sections["shard"] for i in range(3)]
    for task in parts[0]["documents"]:
        positions = sorted(p for part in parts for p in part["positions"][task])
        assert positions == list(range(parts[0]["documents"][task]))  # every document once
    first, rerun = read_run(shards[1]), read_run(again)
    assert rerun.manifest.sections["shard"] == first.manifest.sections["shard"]  # the same split again
    for task, samples in first.samples.items():
        pd.testing.assert_frame_equal(rerun.samples[task], samples, check_dtype=False)
    cache = rerun.manifest.backend["cache"]
    assert cache["computed"] == 0 and cache["hits"] > 0, cache


def test_bad_merges_are_refused_with_one_line(workspace, data_dir, sharded, capsys):
    _, shards, again = sharded
    folder = str(workspace / "shards")
    assert "merge: shard(s) 1/3 missing (2 of 3 given)" in cli_error(
        capsys, "merge", "--output-dir", folder, str(shards[0]), str(shards[2])
    )
    assert "merge: shard 1/3 is given twice" in cli_error(
        capsys, "merge", "--output-dir", folder, *map(str, shards.values()), str(again)
    )
    full = workspace / "full"
    (unsharded,) = full.glob("tiny-*")
    assert "is not a shard" in cli_error(capsys, "merge", "--output-dir", folder, str(unsharded))
    # A shard of another model, one of other settings, and (edited, as no other llamabench is installed) one
    # recorded by another llamabench version.
    tasks = "wmt_choice"
    small = [run(workspace, data_dir, "small", "--limit", "4", "--shard", f"{i}/2", tasks=tasks) for i in (0, 1)]
    other_model = run(workspace, data_dir, "odd", "--limit", "4", "--shard", "1/2", tasks=tasks, model="other")
    other_length = run(workspace, data_dir, "odd", "--limit", "4", "--shard", "1/2", "--max-length", "512", tasks=tasks)
    older = workspace / "odd" / "older"
    shutil.copytree(small[1], older)
    manifest = json.loads((older / "manifest.json").read_text())
    (older / "manifest.json").write_text(json.dumps({**manifest, "run_id": "older", "llamabench_version": "0.0.1"}))
    for odd, what in [
        (other_model, "differ in model fingerprint"),
        (other_length, "differ in the settings of task wmt_choice (max_length"),
        (older, "differ in llamabench version"),
    ]:
        error = cli_error(capsys, "merge", "--output-dir", str(workspace / "small"), str(small[0]), str(odd))
        assert what in error, error
    assert "differ in tasks or document counts" in cli_error(
        capsys,
        "merge",
        "--output-dir",
        folder,
        str(small[0]),
        str(run(workspace, data_dir, "odd", "--limit", "3", "--shard", "1/2", tasks=tasks)),
    )


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("3/2", "--shard 3/2 must be I/N with 0 <= I < N"),
        ("0/0", "--shard 0/0 must be I/N with 0 <= I < N"),
        ("1-3", "--shard 1-3 must be I/N"),
        ("auto", "--shard auto reads SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT of a Slurm array job"),
    ],
)
def test_a_bad_shard_is_one_line_naming_the_flag(capsys, monkeypatch, flag, message):
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.delenv("SLURM_ARRAY_TASK_COUNT", raising=False)
    assert message in cli_error(capsys, "run", "--tasks", "ppl", "--shard", flag)


def test_shard_auto_reads_the_slurm_array_from_its_first_task(monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")  # sbatch --array=1-4
    assert RunConfig(tasks=["ppl"], shard="auto").validate().shard == "2/4"
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "9")
    with pytest.raises(Exception, match="not one of 4 consecutive tasks"):
        RunConfig(tasks=["ppl"], shard="auto").validate()


SPLIT = """
from llamabench.config import RunConfig
from llamabench.pipeline import Evaluation
evaluation = Evaluation.prepare(RunConfig(tasks=["qa", "ppl"], limit=60, data_dir={data!r}, shard="1/4", no_cache=True))
print([task.positions for task in evaluation.native])
"""


def test_the_split_is_the_same_in_every_process_whatever_its_hash_seed(data_dir):
    """Each process hashes strings with its own seed: the split must not depend on it."""
    splits = []
    for seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", SPLIT.format(data=str(data_dir))], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        splits.append(done.stdout)
    squad, wikitext = eval(splits[0])  # noqa: S307  (our own printed lists)
    assert splits[0] == splits[1]
    assert 12 <= len(squad) <= 18 and 0 < len(wikitext) < 60  # about a quarter of each task


def test_the_split_of_the_module_docstring():
    """The worked example in scale/shards.py, by hand: sizes 5, 2, 4, 3 over two shards, longest first to the
    shard with less work: 5 -> 0, 4 -> 1, 3 -> 1 (4 < 5), 2 -> 0 (5 < 7)."""
    import doctest

    from llamabench.scale import shards

    assert doctest.testmod(shards).failed == 0
    assert shards.split_documents([[5, 2, 4, 3]], 2) == [[[0, 1]], [[2, 3]]]


def test_shards_that_differ_only_in_flags_that_change_no_number_merge(workspace, data_dir):
    """``--log-to``, the server's request flags and the like change no number (records/settings.NO_NUMBER_FLAGS):
    shards run with other values of them (edited in, as a server and a tracker are not at hand here) merge."""
    tasks = "wmt_choice"
    parts = [run(workspace, data_dir, "relogged", "--limit", "4", "--shard", f"{i}/2", tasks=tasks) for i in (0, 1)]
    edited = workspace / "relogged" / "edited"
    shutil.copytree(parts[1], edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    flags = {"log_to": ["mlflow"], "request_timeout": 30.0, "max_concurrent_requests": 2, "request_retries": 1}
    config = {**manifest["config"], **flags}
    (edited / "manifest.json").write_text(json.dumps({**manifest, "run_id": "edited", "config": config}))
    merged = read_run(merge(workspace, "relogged-merged", parts[0], edited))
    unedited = read_run(merge(workspace, "relogged-merged", *parts))
    for metric in ("acc", "acc_norm"):
        assert merged.value(tasks, metric) == unedited.value(tasks, metric)
