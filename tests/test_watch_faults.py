"""`llamabench watch --once` over a training folder where one checkpoint is deleted, corrupted or only half
written at each moment the watch touches it (listed, snapshotted, fingerprinted, loaded, evaluated): one note
line names it, and every other checkpoint is evaluated and recorded with the numbers a run of it alone gives
(two of our own paths compared: the point is that the fault does not leak into the other checkpoints' runs)."""

import json
import shutil
from pathlib import Path

import pytest
from builders import watch_argv, write_checkpoint

import llamabench.backends.hf.backend as hf
import llamabench.training.checkpoints as checkpoints
from llamabench.backends.loading.model_source import fingerprint, resolve_model
from llamabench.cli.app import main
from llamabench.pipeline import Evaluation
from llamabench.records.store import RunStore

# Improving checkpoints (a smaller lm_head scale is a better random model here), so no check regresses and
# `--once` exits 0; distinct weights, so a run recorded under the wrong checkpoint shows.
SCALES = {100: 3.0, 200: 2.0, 300: 1.0}
VICTIM = "checkpoint-200"


@pytest.fixture(scope="module")
def alone(tmp_path_factory, data_dir) -> dict[int, list[float]]:
    """Each checkpoint's values from `llamabench run` on it alone."""
    base = tmp_path_factory.mktemp("alone")
    notes = base / "notes.txt"
    notes.write_text("the cat sat on the mat\nlow tide at noon\n")
    values = {}
    for step, scale in SCALES.items():
        write_checkpoint(base / f"checkpoint-{step}", scale)
        out = base / f"runs-{step}"
        argv = ["run", "--model", str(base / f"checkpoint-{step}"), "--text", str(notes), "--text-format", "lines"]
        assert (
            main([*argv, "--batch-size", "1", "--no-cache", "--data-dir", str(data_dir), "--output-dir", str(out)]) == 0
        )
        (run,) = RunStore.in_dir(out).manifests()
        values[step] = RunStore.in_dir(out).load(run["run_id"]).results.value.tolist()
    return values


@pytest.fixture
def training(tmp_path) -> Path:
    (tmp_path / "notes.txt").write_text("the cat sat on the mat\nlow tide at noon\n")
    root = tmp_path / "train"
    root.mkdir()
    for step, scale in SCALES.items():
        write_checkpoint(root / f"checkpoint-{step}", scale)
    return root


def watch_once(root: Path, tmp_path: Path, data_dir: Path) -> int:
    return main(watch_argv(root, tmp_path, data_dir, "--every", "0.01", "--once"))


def assert_others_evaluated(tmp_path: Path, alone: dict, expected_steps: list[int]) -> None:
    store = RunStore.in_dir(tmp_path / "runs")
    manifests = sorted(store.manifests(), key=lambda manifest: manifest["step"])
    assert [m["step"] for m in manifests] == expected_steps
    for manifest in manifests:
        folder = Path(manifest["config"]["model"])
        assert folder.name == f"checkpoint-{manifest['step']}"
        assert manifest["backend"]["fingerprint"] == fingerprint(resolve_model(str(folder)))
        assert store.load(manifest["run_id"]).results.value.tolist() == alone[manifest["step"]]


def victim_notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("llamabench:") and VICTIM in line]


def delete_victim_once(path) -> None:
    path = Path(path)
    folder = path if path.name == VICTIM else next((p for p in path.parents if p.name == VICTIM), None)
    if folder is not None and folder.exists():
        shutil.rmtree(folder)


def hooked(real, before=None, after=None):
    """``real`` with ``before(first argument)`` run ahead of it and ``after(first argument)`` behind it."""

    def call(*args, **kwargs):
        if before:
            before(args[0] if args else next(iter(kwargs.values())))
        result = real(*args, **kwargs)
        if after:
            after(args[0] if args else next(iter(kwargs.values())))
        return result

    return call


@pytest.mark.parametrize("moment", ["listed", "snapshotted", "fingerprinted", "loaded", "evaluated"])
def test_a_checkpoint_deleted_at_any_moment_is_one_note_and_the_watch_goes_on(
    moment, training, tmp_path, data_dir, alone, monkeypatch, capsys
):
    victim = training / VICTIM
    if moment == "listed":  # deleted right after the second poll's folder listing named it
        real, calls = checkpoints.step_folders, []

        def listing(root):
            calls.append(root)
            found = real(root)
            if len(calls) == 2:
                delete_victim_once(victim)
            return found

        monkeypatch.setattr(checkpoints, "step_folders", listing)
    elif moment == "snapshotted":
        polls = []
        real = checkpoints.snapshot

        def snapshot(folder):
            if Path(folder) == victim:
                polls.append(folder)
                if len(polls) == 2:
                    delete_victim_once(victim)
            return real(folder)

        monkeypatch.setattr(checkpoints, "snapshot", snapshot)
    elif moment == "fingerprinted":
        monkeypatch.setattr(hf, "pin", hooked(hf.pin, before=lambda s: delete_victim_once(s.location)))
    elif moment == "loaded":
        real_load = hf.load_model_and_tokenizer
        monkeypatch.setattr(
            hf, "load_model_and_tokenizer", hooked(real_load, before=lambda s: delete_victim_once(s.location))
        )
    else:
        real_evaluate = Evaluation.evaluate

        def evaluate(evaluation, served, *, model, **kwargs):
            if Path(model) == victim:
                delete_victim_once(victim)
            return real_evaluate(evaluation, served, model=model, **kwargs)

        monkeypatch.setattr(Evaluation, "evaluate", evaluate)
    assert watch_once(training, tmp_path, data_dir) == 0
    err = capsys.readouterr().err
    assert len(victim_notes(err)) == 1, err
    assert "bug" not in err and "Traceback" not in err
    assert_others_evaluated(tmp_path, alone, [100, 300])


def truncate_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def break_config(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "llama", ')


@pytest.mark.parametrize("corrupt", [truncate_weights, break_config], ids=["truncated-weights", "bad-config-json"])
def test_a_corrupt_checkpoint_is_one_note_and_retried_only_when_its_files_change(
    corrupt, training, tmp_path, data_dir, alone, capsys
):
    corrupt(training / VICTIM)
    assert watch_once(training, tmp_path, data_dir) == 0
    err = capsys.readouterr().err
    assert len(victim_notes(err)) == 1 and "not evaluated" in victim_notes(err)[0], err
    assert "bug" not in err and "Traceback" not in err
    assert_others_evaluated(tmp_path, alone, [100, 300])
    # Rewritten whole (training saved it again), it is evaluated by the next watch.
    shutil.rmtree(training / VICTIM)
    write_checkpoint(training / VICTIM, SCALES[200])
    assert watch_once(training, tmp_path, data_dir) == 0
    assert_others_evaluated(tmp_path, alone, [100, 200, 300])


def test_a_checkpoint_changed_while_it_was_evaluated_is_not_recorded(training, tmp_path, data_dir, alone, capsys):
    """Files rewritten under the evaluation: the numbers may mix two checkpoints, so they are not recorded."""
    victim = training / VICTIM
    real_evaluate = Evaluation.evaluate
    rewritten = []

    def evaluate(evaluation, served, *, model, **kwargs):
        if Path(model) == victim and not rewritten:
            rewritten.append(victim)
            shutil.rmtree(victim)
            write_checkpoint(victim, SCALES[200])
        return real_evaluate(evaluation, served, model=model, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Evaluation, "evaluate", evaluate)
        assert watch_once(training, tmp_path, data_dir) == 0
    err = capsys.readouterr().err
    assert len(victim_notes(err)) == 1, err
    assert_others_evaluated(tmp_path, alone, [100, 300])
    assert watch_once(training, tmp_path, data_dir) == 0  # the files it has now are evaluated next time
    assert_others_evaluated(tmp_path, alone, [100, 200, 300])


def missing_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()  # config.json and tokenizer there, weights still being written


def missing_shard(folder: Path) -> None:
    index = {"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def temporary_name(folder: Path) -> None:
    folder.rename(folder.with_name(f"tmp-{VICTIM}"))  # a Trainer's save in progress, renamed when complete


@pytest.mark.parametrize("partial", [missing_weights, missing_shard, temporary_name])
def test_a_partly_written_checkpoint_waits_and_the_others_are_evaluated(
    partial, training, tmp_path, data_dir, alone, capsys
):
    partial(training / VICTIM)
    assert watch_once(training, tmp_path, data_dir) == 0
    err = capsys.readouterr().err
    assert "bug" not in err and "Traceback" not in err
    assert_others_evaluated(tmp_path, alone, [100, 300])
