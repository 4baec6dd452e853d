"""The manifest record: built once, written with a schema version beside the keys it always had, and manifests
written before the version existed (tests/data/manifest_v0.json, written by llamabench 0.2.0 before this change:
a --text run of a tiny checkpoint) still read, store and compare."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from conftest import NOTES, save_tiny_model

from llamabench.cli.app import main
from llamabench.records import comparability
from llamabench.records.manifest import SCHEMA_VERSION, Manifest
from llamabench.records.results import read_run
from llamabench.records.store import RunStore

OLD = json.loads((Path(__file__).parent / "data" / "manifest_v0.json").read_text())
TASK = "text:notes.txt"


@pytest.fixture
def new_run(tmp_path, monkeypatch) -> Path:
    """A run folder written now, of the same task and checkpoint as the old manifest's run."""
    monkeypatch.chdir(tmp_path)
    save_tiny_model(Path("ckpt"))
    Path("notes.txt").write_text(NOTES)
    argv = ["run", "--model", "ckpt", "--text", "notes.txt", "--text-format", "lines", "--device", "cpu"]
    assert main([*argv, "--batch-size", "1", "--no-cache", "--output-dir", "runs", "--bootstrap-iters", "0"]) == 0
    (folder,) = [path for path in Path("runs").iterdir() if path.is_dir()]
    return tmp_path / folder


def _old_run(new_run: Path) -> Path:
    """The new run's tables under the old manifest (its sample file names are the same)."""
    folder = new_run.with_name("ckpt-" + OLD["run_id"])
    shutil.copytree(new_run, folder)
    (folder / "manifest.json").write_text(json.dumps(OLD))
    return folder


def test_a_manifest_is_written_with_the_keys_it_always_had_and_a_schema_version(new_run):
    written = json.loads((new_run / "manifest.json").read_text())
    assert set(written) == set(OLD) | {"schema_version"}
    assert written["schema_version"] == SCHEMA_VERSION == 1
    assert set(written["backend"]) == set(OLD["backend"]) | {"engine_name"}  # added: the engine that ran
    assert written["backend"]["engine_name"] == "hf"
    settings = written["tasks"][TASK]["settings"]
    assert set(settings) == set(OLD["tasks"][TASK]["settings"]) | {"format", "kv_cache", "engine"}
    assert settings["engine"] == "hf"  # added with the engine registry: what computed the numbers


def test_a_manifest_written_before_the_schema_version_reads_as_version_0(new_run):
    run = read_run(_old_run(new_run))
    manifest = run.manifest
    assert manifest.schema_version == 0
    assert (manifest.run_id, manifest.model, manifest.started) == (OLD["run_id"], "ckpt", OLD["started"])
    assert manifest.backend_info.max_length == 256 and manifest.backend_info.tokenizer == "00342d93fa90910b"
    assert manifest.settings(TASK).num_fewshot == 0 and manifest.settings(TASK).no_effect == {"limit", "seed"}
    assert manifest.sample_files == OLD["sample_files"] and list(run.samples) == [TASK]
    assert manifest.to_dict() == {**OLD, "schema_version": 0}  # nothing lost, nothing invented
    assert manifest["config"] == OLD["config"]  # scripts that read the JSON keys still work


def test_an_old_run_stores_and_compares_with_a_new_one_as_before(new_run, capsys):
    old = _old_run(new_run)
    new = read_run(new_run).manifest
    assert comparability.differences(OLD["tasks"][TASK]["settings"], new.settings(TASK)) == []
    assert comparability.same_tokenizer(OLD, new)
    store = RunStore.in_dir(new_run.parent)
    store.add(read_run(old), old)
    assert sorted(manifest.schema_version for manifest in store.manifests()) == [0, 1]
    argv = ["check", "--output-dir", str(new_run.parent), "--baseline", str(old), "--candidate", str(new_run)]
    assert main([*argv, "--bootstrap-iters", "10"]) == 0, capsys.readouterr()
    # Another old run (not in the store: read from its folder) that recorded another context window.
    changed = json.loads(json.dumps({**OLD, "run_id": "20250101T000000-aaaaaa"}))
    changed["tasks"][TASK]["settings"]["max_length"] = 128
    other = shutil.copytree(old, old.with_name("ckpt-" + changed["run_id"]))
    (other / "manifest.json").write_text(json.dumps(changed))
    argv[argv.index(str(old))] = str(other)
    assert main([*argv, "--bootstrap-iters", "10"]) == 2
    assert "max_length 128 vs 256" in capsys.readouterr().err


def test_a_run_manifest_is_built_once_and_never_edited(new_run, tmp_path):
    from llamabench.records.results import write_run

    run = read_run(new_run)
    before = run.manifest.to_dict()
    write_run(run, tmp_path / "again")
    assert run.manifest.to_dict() == before
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.manifest.step = 3  # type: ignore[misc]
    assert isinstance(Manifest.from_dict(before), Manifest)
