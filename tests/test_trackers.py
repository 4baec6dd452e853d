"""`--log-to mlflow|wandb|tensorboard` against the real tools: an MLflow tracking server on 127.0.0.1 (SQLite store)
read back with MlflowClient, W&B offline run files read back with W&B's own record reader, TensorBoard event files
read back with TensorBoard's EventAccumulator. What they hold is compared with the run store's results.csv; a
server stopped mid-watch costs no run."""

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from builders import watch_argv, write_checkpoint
from conftest import NOTES, byte_tokenizer, tiny_llama

from llamabench.cli.app import main
from llamabench.records.store import RunStore

REPO = Path(__file__).resolve().parents[1]
# lm_head scaled: 1 is the random model, 25 makes confident random guesses (far worse): step 300 regresses.
HEAD_SCALES = {100: 1.0, 200: 1.0, 300: 25.0}
SECRET = "s3cret-pw"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_mlflow_server(folder: Path) -> tuple[subprocess.Popen, str]:
    """`mlflow server` on a free port of 127.0.0.1 with a SQLite store under ``folder``; returns it and its URI."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--workers", "1"]
    argv += ["--artifacts-destination", str(folder / "artifacts")]
    log = open(folder / "server.log", "w")  # noqa: SIM115  (the server writes it while it runs)
    server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert server.poll() is None, (folder / "server.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    return server, uri
        except OSError:
            pass
        assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
        time.sleep(0.5)


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    server, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    yield uri
    stop(server)


def run_folder(runs_dir: Path, manifest) -> Path:
    """The folder of a stored run, as the store lists it."""
    runs = RunStore.in_dir(runs_dir).list()
    return Path(runs.folder[runs.run_id == manifest.run_id].iloc[0])


def expected_figures(runs_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Each figure of the store's runs as (step, value) by `<task>/<metric>`, stderr as `..._stderr`, from each
    run's results.csv."""
    figures: dict[str, list[tuple[int, float]]] = {}
    for manifest in RunStore.in_dir(runs_dir).manifests():
        folder = run_folder(runs_dir, manifest)
        for row in pd.read_csv(folder / "results.csv").itertuples():
            key = f"{row.task}/{row.metric}"
            figures.setdefault(key, []).append((manifest.step, float(row.value)))
            if not np.isnan(row.stderr):
                figures.setdefault(f"{key}_stderr", []).append((manifest.step, float(row.stderr)))
    return {key: sorted(points) for key, points in figures.items()}


@pytest.fixture(scope="module")
def watched(tmp_path_factory, mlflow_uri, data_dir):
    """`llamabench watch --once` over three checkpoints, logging to all three trackers; its folders, exit code
    and output."""
    tmp = tmp_path_factory.mktemp("watched")
    (tmp / "notes.txt").write_text(NOTES)
    root = tmp / "train"
    root.mkdir()
    for step, scale in HEAD_SCALES.items():
        write_checkpoint(root / f"checkpoint-{step}", scale)
    environment = {
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "MLFLOW_EXPERIMENT_NAME": "watch",
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(tmp),
        "WANDB_PROJECT": "llamabench-test",
        "WANDB_SILENT": "true",
    }
    # --alpha 0.2: three documents, all worse at step 300, give the exact test p = 1/8 (INCONCLUSIVE at 0.05).
    flags = ("--every", "0.1", "--once", "--alpha", "0.2")
    flags += ("--log-to", "mlflow", "--log-to", "wandb", "--log-to", "tensorboard")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        patch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
        code, stdout, stderr = run_captured(lambda: main(watch_argv(root, tmp, data_dir, *flags)))
    return tmp, code, stdout, stderr


def run_captured(call) -> tuple[int, str, str]:
    """``call()``'s exit code with what it printed on stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = call()
    return code, out.getvalue(), err.getvalue()


def regressed_count(stdout: str) -> int:
    """How many metrics the watch printed as regressed at step 300."""
    line = next(line for line in stdout.splitlines() if line.startswith("REGRESSION at step 300:"))
    return len(line.split(":", 1)[1].split(","))


def test_watch_logs_to_mlflow_the_store_figures_at_their_steps_with_settings_and_files(watched, mlflow_uri):
    from mlflow import MlflowClient

    tmp, code, stdout, stderr = watched
    assert code == 1 and "llamabench: warning" not in stderr, stderr[-2000:]  # step 300 regressed
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("watch").experiment_id])
    assert run.info.run_name == "llamabench train" and run.info.status == "FINISHED"
    expected = expected_figures(tmp / "runs")
    logged = {key for key in run.data.metrics if not key.startswith("check/")}
    assert logged == set(expected)
    for key, points in expected.items():
        assert sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)) == points, key
    verdict = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "check/passed"))
    assert verdict == [(200, 1.0), (300, 0.0)]
    (regressed,) = [m for m in client.get_metric_history(run.info.run_id, "check/regressed_metrics") if m.step == 300]
    assert regressed.value == regressed_count(stdout) > 0

    manifests = RunStore.in_dir(tmp / "runs").manifests()
    task = manifests[0].tasks and next(iter(manifests[0].tasks))
    params = run.data.params
    assert params["model_fingerprint"] == manifests[0].backend_info.fingerprint
    assert params["step300/model_fingerprint"] == manifests[2].backend_info.fingerprint  # 200's is 100's
    assert params[f"{task}/task_hash"] == manifests[0].settings(task).task_hash
    assert params[f"{task}/data_hash"] == manifests[0].settings(task).data_hash
    for manifest in manifests:
        folder = run_folder(tmp / "runs", manifest)
        names = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, f"llamabench/step-{manifest.step}")}
        assert {"results.csv", "manifest.json", "report.html"} <= names
        assert {path.name for path in folder.glob("samples_*.csv")} <= names
        copy = client.download_artifacts(run.info.run_id, f"llamabench/step-{manifest.step}/results.csv", str(tmp))
        assert Path(copy).read_bytes() == (folder / "results.csv").read_bytes()


def wandb_records(folder: Path) -> list:
    """The records of the one offline W&B run under ``folder``, read with W&B's own reader of `.wandb` files."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    (path,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    store = datastore.DataStore()
    store.open_for_scan(str(path))
    records = []
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        records.append(record)
    return records


def wandb_history(records: list) -> list[dict]:
    """Each `log` call's values (JSON-decoded) by key."""
    return [
        {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
        for record in records
        if record.WhichOneof("record_type") == "history"
    ]


def wandb_figures(history: list[dict]) -> dict[str, list[tuple[int, float]]]:
    figures: dict[str, list[tuple[int, float]]] = {}
    for row in history:
        for key, value in row.items():
            if not key.startswith(("_", "samples/", "llamabench/step")):
                figures.setdefault(key, []).append((row["llamabench/step"], float(value)))
    return {key: sorted(points) for key, points in figures.items()}


def test_watch_logs_to_wandb_offline_the_store_figures_at_their_steps_with_tables_and_files(watched):
    tmp, code, stdout, _ = watched
    records = wandb_records(tmp)
    figures = wandb_figures(wandb_history(records))
    assert figures.pop("check/passed") == [(200, 1.0), (300, 0.0)]
    assert dict(figures.pop("check/regressed_metrics"))[300] == regressed_count(stdout)
    assert figures.pop("check/inconclusive_metrics") == [(200, 0.0), (300, 0.0)]
    assert figures == expected_figures(tmp / "runs")

    config = {
        item.key: json.loads(item.value_json)
        for record in records
        if record.WhichOneof("record_type") == "config"
        for item in record.config.update
    }
    manifests = RunStore.in_dir(tmp / "runs").manifests()
    assert config["model_fingerprint"] == manifests[0].backend_info.fingerprint
    assert config["step300/model_fingerprint"] == manifests[2].backend_info.fingerprint
    artifacts = [record.artifact for record in records if record.WhichOneof("record_type") == "artifact"]
    runs = [artifact for artifact in artifacts if artifact.type == "llamabench-run"]
    assert sorted(artifact.name for artifact in runs) == sorted(f"llamabench-{m.run_id}" for m in manifests)
    assert all({"results.csv", "report.html"} <= {entry.path for entry in a.manifest.contents} for a in runs)
    # Each step's per-sample table: a W&B table file with the run folder's sample rows.
    (run_dir,) = tmp.glob("wandb/offline-run-*")
    for manifest in manifests:
        folder = run_folder(tmp / "runs", manifest)
        for task, stem in manifest.sample_files.items():
            (row,) = [
                row
                for row in wandb_history(records)
                if row.get("llamabench/step") == manifest.step and any(key.startswith(f"samples/{task}") for key in row)
            ]
            assert row[f"samples/{task}/_type"] == "table-file"
            table = json.loads((run_dir / "files" / row[f"samples/{task}/path"]).read_text())
            assert len(table["data"]) == len(pd.read_csv(folder / f"{stem}.csv"))


def tensorboard_figures(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the one TensorBoard run under ``log_dir``."""
    (run_dir,) = [path for path in log_dir.iterdir() if path.is_dir()]
    return tensorboard_figures_in(run_dir)


def tensorboard_figures_in(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard run in ``run_dir``, read with TensorBoard's own event reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: sorted((e.step, e.value) for e in events.Scalars(tag)) for tag in events.Tags()["scalars"]}


def as_float32(figures: dict[str, list[tuple[int, float]]]) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard keeps scalars as float32."""
    return {key: [(step, float(np.float32(value))) for step, value in points] for key, points in figures.items()}


def test_watch_logs_to_tensorboard_the_store_figures_at_their_steps(watched):
    tmp, code, stdout, _ = watched
    figures = tensorboard_figures(tmp / "runs" / "tensorboard")
    assert figures.pop("check/passed") == [(200, 1.0), (300, 0.0)]
    assert dict(figures.pop("check/regressed_metrics"))[300] == regressed_count(stdout)
    assert figures.pop("check/inconclusive_metrics") == [(200, 0.0), (300, 0.0)]
    assert figures == as_float32(expected_figures(tmp / "runs"))
    # The tracker's folder beside the runs is not taken for a broken run folder.
    code, _, err = run_captured(lambda: main(["runs", "--output-dir", str(tmp / "runs")]))
    assert code == 0 and "tensorboard" not in err


def wait_until(condition, what: str, watcher: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert watcher.poll() is None, f"watch exited while waiting for {what}"
        assert time.monotonic() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.2)


def test_an_mlflow_server_stopped_mid_watch_costs_no_run_and_gives_one_warning_without_the_password(
    tmp_path, data_dir, notes_file
):
    from mlflow import MlflowClient

    server, uri = start_mlflow_server(tmp_path / "mlflow")
    secret_uri = uri.replace("http://", f"http://llama:{SECRET}@")
    root = tmp_path / "train"
    root.mkdir()
    write_checkpoint(root / "checkpoint-100", HEAD_SCALES[100])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": secret_uri}
    argv = [
        sys.executable,
        "-m",
        "llamabench",
        *watch_argv(root, tmp_path, data_dir, "--every", "0.3", "--alpha", "0.2"),
    ]
    stderr = open(tmp_path / "stderr.txt", "w")  # noqa: SIM115  (the watch writes it while it runs)
    watcher = subprocess.Popen([*argv, "--log-to", "mlflow"], env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: [lines.append(line) for line in watcher.stdout], daemon=True)
    reader.start()
    client = MlflowClient(uri)

    def logged() -> bool:
        runs = client.search_runs(["0"])
        return bool(runs) and bool(runs[0].data.metrics)

    try:
        wait_until(logged, "figures in MLflow", watcher)
        stop(server)
        for step in (200, 300):
            write_checkpoint(root / f"checkpoint-{step}", HEAD_SCALES[step])
        wait_until(lambda: any(line.startswith("REGRESSION at step 300") for line in lines), "check of 300", watcher)
    finally:
        watcher.send_signal(signal.SIGINT)
        code = watcher.wait(timeout=60)
        reader.join(timeout=10)
        stderr.close()
        if server.poll() is None:
            stop(server)
    assert code == 130  # interrupted, as a watch without a tracker
    assert [manifest.step for manifest in RunStore.in_dir(tmp_path / "runs").manifests()] == [100, 200, 300]
    err = (tmp_path / "stderr.txt").read_text()
    warnings = [line for line in err.splitlines() if line.startswith("llamabench: warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("llamabench: warning: --log-to mlflow: not logged"), err
    assert SECRET not in err + "".join(lines) and "Retrying" not in err  # urllib3's retries are not lines of their own
    for path in (tmp_path / "runs").rglob("*"):
        assert not path.is_file() or SECRET.encode() not in path.read_bytes(), path


def test_an_unknown_or_missing_tracker_is_one_line_and_exit_2_before_anything_runs(
    tmp_path, notes_file, monkeypatch, capsys
):
    argv = ["run", "--text", str(notes_file), "--output-dir", str(tmp_path / "runs"), "--log-to"]
    assert main([*argv, "comet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "llamabench: error: --log-to comet: unknown tracker; pick one of mlflow, wandb, tensorboard"
    monkeypatch.setitem(sys.modules, "wandb", None)  # what Python does with a package that is not there
    assert main([*argv, "wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "llamabench: error: --log-to wandb: wandb is not installed; install it with pip install 'llamabench[wandb]'"
    )
    assert not (tmp_path / "runs").exists()


def test_evaluate_checkpoint_logs_into_the_active_mlflow_run_at_its_step(
    mlflow_uri, tmp_path, monkeypatch, data_dir, notes_file
):
    import mlflow

    from llamabench.pipeline import evaluate_checkpoint

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    write_checkpoint(tmp_path / "checkpoint-7", 1.0)
    settings = {"text_format": "lines", "batch_size": 1, "no_cache": True, "data_dir": data_dir}
    with mlflow.start_run(run_name="training job") as training:
        evaluate_checkpoint(
            str(tmp_path / "checkpoint-7"),
            [],
            text=[str(notes_file)],
            step=7,
            output_dir=tmp_path / "runs",
            log_to=["mlflow"],
            **settings,
        )
        assert mlflow.active_run().info.run_id == training.info.run_id  # left running: it is the job's
    client = mlflow.MlflowClient(mlflow_uri)
    for key, points in expected_figures(tmp_path / "runs").items():
        assert [(m.step, m.value) for m in client.get_metric_history(training.info.run_id, key)] == points


def test_evaluate_model_logs_into_the_active_wandb_run_at_its_step(tmp_path, monkeypatch, data_dir, notes_file):
    import wandb

    from llamabench.training.in_memory import evaluate_model

    monkeypatch.setenv("WANDB_SILENT", "true")
    training = wandb.init(mode="offline", dir=str(tmp_path), project="llamabench-test")
    try:
        evaluate_model(
            tiny_llama(0),
            byte_tokenizer(),
            [],
            text=[str(notes_file)],
            text_format="lines",
            batch_size=1,
            no_cache=True,
            data_dir=data_dir,
            step=5,
            output_dir=tmp_path / "runs",
            log_to=["wandb"],
        )
        assert wandb.run is training  # left running: it is the job's
    finally:
        training.finish()
    assert wandb_figures(wandb_history(wandb_records(tmp_path))) == expected_figures(tmp_path / "runs")


class Rows(torch.utils.data.Dataset):
    """Eight random byte sequences to train on."""

    def __init__(self):
        self.rows = torch.randint(0, 256, (8, 24), generator=torch.Generator().manual_seed(7))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.rows[i], "labels": self.rows[i]}


def test_the_trainer_callback_logs_to_tensorboard_at_the_trainers_global_step(
    tmp_path, monkeypatch, data_dir, notes_file
):
    from transformers import Trainer, TrainingArguments

    from llamabench.training.trainer_callback import LlamabenchCallback

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    args = TrainingArguments(
        output_dir=str(tmp_path / "train"),
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=3e-2,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(model=tiny_llama(0).train(), args=args, train_dataset=Rows(), processing_class=byte_tokenizer())
    settings = {"batch_size": 1, "data_dir": data_dir, "no_cache": True, "output_dir": tmp_path / "runs"}
    trainer.add_callback(
        LlamabenchCallback(
            trainer, [], every=2, text=[str(notes_file)], text_format="lines", log_to=["tensorboard"], **settings
        )
    )
    trainer.train()
    expected = expected_figures(tmp_path / "runs")
    assert {step for points in expected.values() for step, _ in points} == {2, 3}
    assert tensorboard_figures(tmp_path / "runs" / "tensorboard") == as_float32(expected)


def test_run_over_two_models_logs_each_to_a_tracker_run_of_its_own(tmp_path, monkeypatch, data_dir, notes_file):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    for name, scale in (("base", 1.0), ("sharp", 25.0)):
        write_checkpoint(tmp_path / name, scale)
    argv = ["run", "--model", str(tmp_path / "base"), "--model", str(tmp_path / "sharp"), "--text", str(notes_file)]
    argv += ["--text-format", "lines", "--batch-size", "1", "--no-cache", "--data-dir", str(data_dir)]
    code, _, err = run_captured(
        lambda: main([*argv, "--output-dir", str(tmp_path / "runs"), "--log-to", "tensorboard"])
    )
    assert code == 0, err
    store = RunStore.in_dir(tmp_path / "runs")
    for manifest in store.manifests():
        (log_dir,) = (tmp_path / "runs" / "tensorboard").glob(
            f"llamabench_{manifest.config['model'].rsplit('/', 1)[1]}-*"
        )
        figures = {}
        for row in pd.read_csv(run_folder(tmp_path / "runs", manifest) / "results.csv").itertuples():
            figures[f"{row.task}/{row.metric}"] = [(0, float(np.float32(row.value)))]
            figures[f"{row.task}/{row.metric}_stderr"] = [(0, float(np.float32(row.stderr)))]
        assert tensorboard_figures_in(log_dir) == figures


def test_the_trainer_callback_logs_into_the_trainers_own_mlflow_run_beside_the_loss(
    mlflow_uri, tmp_path, monkeypatch, data_dir, notes_file
):
    from mlflow import MlflowClient
    from transformers import Trainer, TrainingArguments

    from llamabench.training.trainer_callback import LlamabenchCallback

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "training")
    args = TrainingArguments(
        output_dir=str(tmp_path / "train"),
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=3e-2,
        save_strategy="no",
        logging_steps=1,
        report_to=["mlflow"],
        use_cpu=True,
        seed=0,
    )
    trainer = Trainer(model=tiny_llama(0).train(), args=args, train_dataset=Rows(), processing_class=byte_tokenizer())
    settings = {"batch_size": 1, "data_dir": data_dir, "no_cache": True, "output_dir": tmp_path / "runs"}
    trainer.add_callback(
        LlamabenchCallback(
            trainer, [], every=2, text=[str(notes_file)], text_format="lines", log_to=["mlflow"], **settings
        )
    )
    trainer.train()
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("training").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
    for key, points in expected_figures(tmp_path / "runs").items():
        assert sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)) == points, key
