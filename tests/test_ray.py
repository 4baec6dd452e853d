"""--ray on a real local Ray cluster (2 CPUs on 127.0.0.1, started once for the module).

Each Ray run is compared with the single-process run of the same model and tasks (two paths of our code): per-sample
rows equal (texts exactly, numbers to 1e-6 relative), aggregates to 1e-6 relative. Both run at batch size 1, but
a multiple-choice document's choices may be answered by two replicas instead of together, which moves a
log-likelihood by float rounding (about 1e-9 relative), as the backend contract allows. Faults are real: a
worker process killed with SIGKILL while it holds a batch, and a driver process killed with SIGKILL and started again.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import save_tiny_model

from llamabench.config import RunConfig
from llamabench.pipeline import Evaluation
from llamabench.records.results import read_run

ray = pytest.importorskip("ray")

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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, data_dir):
    """A local Ray cluster with two CPU slots, a tiny model and a task folder; the cluster's address."""
    root = tmp_path_factory.mktemp("ray")
    (root / "tasks").mkdir()
    (root / "tasks" / "wmt_choice.yaml").write_text(CHOICE_TASK)
    save_tiny_model(root / "tiny", max_positions=4096)
    saved = os.environ.get("LLAMABENCH_CACHE")
    os.environ["LLAMABENCH_CACHE"] = str(root / "cache")  # inherited by the workers Ray starts
    context = ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield root, context.address_info["gcs_address"]
    ray.shutdown()
    if saved is None:
        del os.environ["LLAMABENCH_CACHE"]
    else:
        os.environ["LLAMABENCH_CACHE"] = saved


def config(root: Path, data_dir: Path, tasks: list[str], **flags) -> RunConfig:
    values = {"limit": 4, "batch_size": 1, "device": "cpu", "data_dir": data_dir, "tasks_dir": [root / "tasks"]}
    return RunConfig(tasks=tasks, **{**values, **flags})


def assert_same_run(ray_run, single) -> None:
    for task, samples in single.samples.items():
        numbers = ["loglikelihood", "stats"]
        pd.testing.assert_frame_equal(
            ray_run.samples[task].drop(columns=numbers), samples.drop(columns=numbers), check_dtype=False, rtol=1e-6
        )
        for column in numbers:
            assert flat(ray_run.samples[task][column]) == pytest.approx(flat(samples[column]), rel=1e-6, nan_ok=True)
    for column in ("value", "stderr"):
        assert ray_run.results[column].tolist() == pytest.approx(single.results[column].tolist(), rel=1e-6)
    assert ray_run.results.metric.tolist() == single.results.metric.tolist()


def test_a_ray_run_of_the_tiny_model_equals_the_single_process_run(cluster, data_dir):
    root, address = cluster
    tasks = ["ppl", "bleu", "wmt_choice"]
    single = Evaluation.prepare(config(root, data_dir, tasks, no_cache=True)).run_checkpoint(str(root / "tiny"))
    on_ray = Evaluation.prepare(config(root, data_dir, tasks, no_cache=True, ray=address)).run_checkpoint(
        str(root / "tiny")
    )
    assert_same_run(on_ray, single)
    assert on_ray.manifest.backend["ray"]["replicas"] == 2
    assert on_ray.manifest.backend["fingerprint"] == single.manifest.backend["fingerprint"]


def test_a_ray_run_of_smollm2_equals_the_single_process_run(cluster, data_dir):
    root, address = cluster
    tasks = ["wmt_choice", "bleu"]
    single = Evaluation.prepare(config(root, data_dir, tasks, limit=2, no_cache=True)).run_checkpoint(None)
    on_ray = Evaluation.prepare(config(root, data_dir, tasks, limit=2, no_cache=True, ray=address)).run_checkpoint(None)
    assert_same_run(on_ray, single)
    assert single.value("wmt22-de-en", "chrf") > 10  # SmolLM2 translates some of it: real text compared


def test_a_worker_killed_mid_run_still_gives_the_full_correct_run(cluster, data_dir):
    from llamabench.scale.ray_backend import RayBackend

    root, address = cluster
    tasks = ["ppl"]
    single = Evaluation.prepare(config(root, data_dir, tasks, limit=6, no_cache=True)).run_checkpoint(
        str(root / "tiny")
    )
    evaluation = Evaluation.prepare(config(root, data_dir, tasks, limit=6, ray=address, refresh=True))
    backend = RayBackend.start(evaluation.config, str(root / "tiny"))
    pids = backend.pids()
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(run=evaluation.run_backend(backend, layout="single")))
    worker.start()
    deadline = time.monotonic() + 120
    while backend.batches < 1 and time.monotonic() < deadline:  # one batch answered: the run is under way
        time.sleep(0.05)
    os.kill(pids[1], signal.SIGKILL)
    worker.join(timeout=180)
    try:
        assert "run" in outcome, "the run did not finish after a worker was killed"
        assert backend.pids()[1] != pids[1]  # Ray restarted the killed replica
        assert_same_run(outcome["run"], single)
        cache = outcome["run"].manifest.backend["cache"]
        assert cache["computed"] == 6  # every document's request counted once, the retried one too
    finally:
        backend.close()


DRIVER = [sys.executable, "-m", "llamabench", "run", "--tasks", "ppl", "--limit", "12", "--batch-size", "1"]


def test_a_driver_killed_and_restarted_redoes_no_finished_request(cluster, data_dir, tmp_path):
    root, address = cluster
    cache = root / "driver-cache"
    env = {**os.environ, "LLAMABENCH_CACHE": str(cache), "PYTHONPATH": str(Path(__file__).parents[1])}
    argv = [*DRIVER, "--model", str(root / "tiny"), "--data-dir", str(data_dir), "--device", "cpu"]
    argv += ["--ray", address, "--output-dir", str(tmp_path / "runs")]
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    database = cache / "requests.sqlite"
    stored, deadline = 0, time.monotonic() + 150
    while stored < 2 and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        stored = stored_results(database)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    before = stored_results(database)
    assert 2 <= before < 12, f"the driver was killed after {before} of 12 requests; the test needs it mid-run"
    assert subprocess.run(argv, env=env, capture_output=True).returncode == 0
    (folder,) = (tmp_path / "runs").glob("tiny-*")
    counted = read_run(folder).manifest.backend["cache"]
    assert (counted["hits"], counted["computed"]) == (before, 12 - before)


def flat(column: pd.Series) -> list[float]:
    """Every number of a column of numbers, lists of numbers or JSON statistics, in order."""
    values = []
    for cell in column:
        cell = json.loads(cell) if isinstance(cell, str) else cell
        cell = list(cell.values()) if isinstance(cell, dict) else cell
        values += [math.nan if x is None else float(x) for x in pd.core.common.flatten([cell])]
    return values


def stored_results(database: Path) -> int:
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(database, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


def test_checkpoints_run_in_parallel_over_the_free_slots(cluster, data_dir, tmp_path):
    from llamabench.cli.app import main

    root, address = cluster
    save_tiny_model(tmp_path / "ckpt" / "checkpoint-2", seed=2, max_positions=4096)
    save_tiny_model(tmp_path / "ckpt" / "checkpoint-3", seed=3, max_positions=4096)
    argv = ["run", "--model", str(tmp_path / "ckpt" / "checkpoint-*"), "--tasks", "wmt_choice", "--limit", "3"]
    argv += ["--tasks-dir", str(root / "tasks"), "--data-dir", str(data_dir), "--device", "cpu", "--batch-size", "1"]
    assert main([*argv, "--no-cache", "--ray", address, "--output-dir", str(tmp_path / "runs")]) == 0
    runs = {Path(run.manifest.model).name: run for run in map(read_run, (tmp_path / "runs").glob("*-*T*"))}
    assert sorted(runs) == ["checkpoint-2", "checkpoint-3"]
    for name, run in runs.items():
        assert run.manifest.backend["ray"]["replicas"] == 1  # two checkpoints share the two slots
        single = Evaluation.prepare(config(root, data_dir, ["wmt_choice"], limit=3, no_cache=True)).run_checkpoint(
            str(tmp_path / "ckpt" / name)
        )
        assert_same_run(run, single)


def test_a_replica_restarted_on_a_rewritten_checkpoint_stops_the_run_and_caches_none_of_it(cluster, data_dir, tmp_path):
    """The checkpoint folder is rewritten (other weights, files replaced by rename) and a replica dies mid-run: the
    restarted replica loads the new weights. The run stops in one line; a later plain (cached) run of the original
    weights gives the numbers of a --no-cache single-process run of them (the cache path against the uncached one)."""
    from llamabench.backends.base import IdentityChanged
    from llamabench.scale.ray_backend import RayBackend

    root, address = cluster
    model = save_tiny_model(tmp_path / "ckpt", seed=5, max_positions=4096)
    original = save_tiny_model(tmp_path / "original", seed=5, max_positions=4096)
    other = save_tiny_model(tmp_path / "other", seed=6, max_positions=4096)
    tasks, limit = ["ppl"], 16
    reference = Evaluation.prepare(config(root, data_dir, tasks, limit=limit, no_cache=True)).run_checkpoint(
        str(original)
    )
    evaluation = Evaluation.prepare(config(root, data_dir, tasks, limit=limit, ray=address))
    backend = RayBackend.start(evaluation.config, str(model))
    pids = backend.pids()
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["run"] = evaluation.run_backend(backend, layout="single")
        except Exception as exc:  # noqa: BLE001 (the test looks at it)
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 120
    while backend.batches < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    for file in other.iterdir():  # the folder now holds other weights (each file replaced whole, by rename)
        os.replace(file, model / file.name)
    answered = backend.batches
    os.kill(pids[1], signal.SIGKILL)
    worker.join(timeout=300)
    backend.close()
    assert answered < 8, "the run ended before the replica was killed; the test needs it mid-run"
    assert "run" not in outcome, "a run whose model changed under it was recorded"
    error = outcome["error"]
    assert isinstance(error, IdentityChanged) and "\n" not in str(error), error
    assert "computes with another model" in str(error) or "changed during the run" in str(error), error

    for file in original.iterdir():  # the original weights back: a plain run must give their numbers
        os.replace(file, model / file.name)
    plain = Evaluation.prepare(config(root, data_dir, tasks, limit=limit)).run_checkpoint(str(model))
    assert_same_run(plain, reference)
