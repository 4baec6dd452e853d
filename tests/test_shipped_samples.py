"""The data samples shipped inside llamabench: each is rows of its full data file byte for byte, runs under its own
task name, is what the aliases run when no data folder is given, and travels in the wheel."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from llamabench.config import RunConfig
from llamabench.errors import LlamabenchError
from llamabench.native import prepare_tasks
from llamabench.tasks import registry
from llamabench.tasks.data import load_documents, read_wikitext_documents, samples_dir
from llamabench.tasks.task_file import parse_task

ROOT = Path(__file__).resolve().parents[1]
# alias -> (the full task, its shipped sample, the sample's document count)
SAMPLES = {
    "ppl": ("wikitext2", "wikitext2-sample", 5),
    "bleu": ("wmt22-de-en", "wmt22-de-en-sample", 50),
    "rouge": ("cnndm", "cnndm-sample", 10),
    "qa": ("squad", "squad-sample", 40),
}


def resolved(names: list[str], data_dir_given: bool) -> list[str]:
    specs = registry.resolve(names, registry.task_dirs(), data_dir_given=data_dir_given)
    return [spec.name for spec in specs]


def test_aliases_run_the_samples_without_a_data_folder_and_the_full_sets_with_one():
    aliases = list(SAMPLES)
    assert resolved(aliases, data_dir_given=False) == [sample for _, sample, _ in SAMPLES.values()]
    assert resolved(aliases, data_dir_given=True) == [full for full, _, _ in SAMPLES.values()]


def test_a_task_name_always_means_its_own_data():
    names = [name for pair in SAMPLES.values() for name in pair[:2]]
    assert resolved(names, data_dir_given=False) == names
    assert resolved(names, data_dir_given=True) == names


def test_each_sample_scores_as_its_full_task_does():
    """Same kind, prompt-relevant settings and metrics: the sample differs from the full task in its data only."""
    known = registry.discover(registry.task_dirs())
    for full_name, sample_name, _ in SAMPLES.values():
        full, sample = known[full_name], known[sample_name]
        assert (sample.kind, sample.prompt, sample.metrics) == (full.kind, full.prompt, full.metrics)
        assert (sample.generation, sample.num_fewshot, sample.units) == (full.generation, full.num_fewshot, full.units)
        assert sample.dataset.shipped and not (sample.dataset.local or sample.dataset.hub_path)


def test_every_builtin_task_has_a_hub_source_or_says_it_has_none():
    """The README's task table names the tasks without a hub source; the others have one."""
    readme = (ROOT / "README.md").read_text()
    known = registry.discover(registry.task_dirs())
    for spec in {spec.name: spec for spec in known.values()}.values():
        if spec.dataset.shipped or spec.dataset.hub_path:
            continue
        assert any(f"`{spec.name}` has no hub source" in line for line in readme.splitlines()), spec.name


def test_the_run_says_once_which_data_it_used(capsys):
    tasks = prepare_tasks(RunConfig(tasks=list(SAMPLES), limit=5).validate())
    assert [(task.spec.name, len(task.docs), task.available) for task in tasks] == [
        (sample, 5, count) for _, sample, count in SAMPLES.values()
    ]
    lines = [line for line in capsys.readouterr().err.splitlines() if "data:" in line]
    assert len(lines) == 1
    assert "wikitext2-sample: shipped sample (5 documents)" in lines[0]
    assert "no --data-dir given" in lines[0]


def test_samples_are_rows_of_the_full_files(data_dir):
    """Byte for byte, in the full file's order; the WikiText sample gives exactly those articles."""
    folder = samples_dir()
    for shipped, full in [
        ("wmt22-de-en/test.first50.jsonl", "wmt22_generaltest_de-en/test.jsonl"),
        ("cnndm/test.first10.jsonl", "cnndm_realsumm_100/test.jsonl"),
        ("squad/dev.first40.jsonl", "squad_v1.1_dev/dev.jsonl"),
    ]:
        sample_lines = (folder / shipped).read_bytes().splitlines()
        assert sample_lines == (data_dir / full).read_bytes().splitlines()[: len(sample_lines)], shipped
    articles = read_wikitext_documents(folder / "wikitext2/wiki.test.short5.raw")
    full = read_wikitext_documents(data_dir / "wikitext2_raw_test/wiki.test.raw")
    assert articles == [full[index] for index in (0, 12, 14, 17, 42)]


def test_samples_are_small_and_recorded():
    folder = samples_dir()
    files = [path for path in folder.rglob("*") if path.is_file() and path.name != "PROVENANCE.md"]
    assert sum(path.stat().st_size for path in files) < 200_000
    provenance = (folder / "PROVENANCE.md").read_text()
    for path in files:
        assert f"`{path.relative_to(folder).as_posix()}`" in provenance
    squad = [json.loads(line) for line in (folder / "squad/dev.first40.jsonl").read_text().splitlines()]
    assert len(squad) == 40 and all(row["answers"] for row in squad)


def test_a_shipped_path_outside_the_samples_folder_is_refused():
    spec = parse_task(
        {
            "name": "escape",
            "kind": "generate",
            "dataset": {"shipped": "../squad.yaml"},
            "prompt": "{{ q }}",
            "target": "{{ a }}",
            "metrics": ["exact_match"],
        },
        "escape.yaml",
    )
    with pytest.raises(LlamabenchError, match="not a sample shipped with llamabench"):
        load_documents(spec.dataset, spec.name, None)


def test_a_shipped_sample_is_its_tasks_only_data():
    raw = {
        "name": "both",
        "kind": "generate",
        "dataset": {"shipped": "squad/dev.first40.jsonl", "local": "squad_v1.1_dev/dev.jsonl"},
        "prompt": "{{ question }}",
        "target": "{{ answers }}",
        "metrics": ["exact_match"],
    }
    with pytest.raises(LlamabenchError, match="dataset.shipped names a sample"):
        parse_task(raw, "both.yaml")


def test_the_wheel_carries_the_samples(tmp_path):
    """What a fresh `pip install` gets: the task files and every sample with its provenance."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("llamabench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"llamabench/builtin_tasks/samples/{path.relative_to(samples_dir()).as_posix()}"
        for path in samples_dir().rglob("*")
        if path.is_file()
    }
    assert expected <= names
    assert "llamabench/builtin_tasks/squad-sample.yaml" in names
