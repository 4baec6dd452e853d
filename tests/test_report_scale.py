"""The report and the store stay bounded as runs pile up: the store keeps each document text once, however many
runs show it; `report` reads one run at a time and keeps only what it shows (aggregates and the first rows);
`watch` reads one stored run per checkpoint, not all of them. Values are checked against hand computation."""

import gc
import json
import sqlite3
import weakref

import numpy as np
import pandas as pd
import pytest
from builders import make_run

import llamabench.records.store as store_module
from llamabench.cli.app import main
from llamabench.records.results import write_run
from llamabench.records.store import RunStore

PASSAGE_CHARS = 3000
MAX_SAMPLE_ROWS = 50  # the report shows each task's first 50 documents per run


def passages(n: int) -> list[str]:
    """Reading passages as a SQuAD prompt holds them: long, one per document, the same in every run."""
    return [(f"Passage {i}: the tide came in at noon. " * 200)[:PASSAGE_CHARS] for i in range(n)]


def hits(step: int, n: int) -> list[float]:
    return [float((i * 7 + step) % 3 == 0) for i in range(n)]


def training_run(step: int, n: int):
    texts = {"doc_id": [f"d{i}" for i in range(n)], "prompt": passages(n)}
    started = f"2025-01-01T00:{step:02d}:00+00:00"
    return make_run(
        f"ckpt-step{step}", {"squad": {"exact_match": [[h] for h in hits(step, n)]}}, started=started, texts=texts
    )


def test_the_store_keeps_each_document_text_once_and_gives_back_equal_tables(tmp_path):
    store = RunStore.in_dir(tmp_path)
    runs = [training_run(step, 40) for step in range(1, 6)]
    store.add(runs[0])
    one = store.path.stat().st_size
    for run in runs[1:]:
        store.add(run)
    per_further_run = (store.path.stat().st_size - one) / 4
    text_bytes = 40 * PASSAGE_CHARS
    assert per_further_run < text_bytes / 4, (per_further_run, text_bytes)  # the passages are not stored again
    for run in runs:  # and every run reads back as it was added (the run itself is the oracle)
        loaded = store.load(run.manifest["run_id"])
        pd.testing.assert_frame_equal(loaded.samples["squad"], run.samples["squad"])
        pd.testing.assert_frame_equal(loaded.results, run.results)


def test_a_store_written_before_texts_were_shared_still_reads(tmp_path):
    """Records holding their texts, in a store without the texts table (the previous version's layout)."""
    run = training_run(1, 3)
    path = tmp_path / "llamabench.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, model TEXT, fingerprint TEXT, tasks TEXT, started TEXT, "
            "folder TEXT, manifest TEXT NOT NULL);"
            "CREATE TABLE results (run_id TEXT NOT NULL, task TEXT, metric TEXT, value REAL, record TEXT NOT NULL);"
            "CREATE TABLE samples (run_id TEXT NOT NULL, task TEXT, doc_id TEXT, record TEXT NOT NULL);"
        )
        run_id = run.manifest["run_id"]
        db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run_id, "ckpt-step1", "fp", "squad", run.manifest["started"], None, json.dumps(run.manifest.to_dict())),
        )
        for r in run.results.to_dict("records"):
            db.execute(
                "INSERT INTO results VALUES (?, ?, ?, ?, ?)",
                (run_id, r["task"], r["metric"], r["value"], json.dumps(r, default=str)),
            )
        for row in run.samples["squad"].to_dict("records"):
            db.execute("INSERT INTO samples VALUES (?, ?, ?, ?)", (run_id, "squad", row["doc_id"], json.dumps(row)))
    store = RunStore(path)
    pd.testing.assert_frame_equal(store.load(run_id).samples["squad"], run.samples["squad"])
    store.add(training_run(2, 3))  # adding to it makes the texts table
    assert store.load(run_id).samples["squad"].prompt.tolist() == passages(3)


def test_report_reads_only_the_rows_it_shows_and_its_numbers_are_the_hand_means(tmp_path, monkeypatch):
    n, steps = 300, [1, 2, 3, 4, 5, 6]
    store = RunStore.in_dir(tmp_path / "runs")
    for step in steps:
        store.add(training_run(step, n))
    decoded: list[int] = []
    real = pd.DataFrame.from_records

    def from_records(data, *args, **kwargs):
        data = list(data)
        decoded.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "from_records", from_records)
    assert main(["report", "--output-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "report")]) == 0
    assert decoded and max(decoded) <= MAX_SAMPLE_ROWS  # no run's full sample table was ever built
    board = pd.read_csv(tmp_path / "report" / "leaderboard.csv")
    assert board.step.tolist() == steps
    np.testing.assert_allclose(board["squad/exact_match"], [np.mean(hits(step, n)) for step in steps], rtol=1e-12)
    html = (tmp_path / "report" / "leaderboard.html").read_text()
    assert html.count(f"first {MAX_SAMPLE_ROWS} of {n} documents") == len(steps)


def test_report_over_run_folders_holds_one_run_at_a_time(tmp_path, monkeypatch):
    """Folders the store lacks (copied in, or runs killed before recording) are read one after another, each
    dropped before the next is read."""
    results = tmp_path / "runs"
    for step in (1, 2, 3, 4):
        write_run(training_run(step, 60), results)
    alive: list[weakref.ref] = []
    real = store_module.read_run

    def read_run(folder):
        gc.collect()
        assert all(ref() is None for ref in alive), "an earlier run's full tables are still held"
        run = real(folder)
        alive.append(weakref.ref(run.samples["squad"]))
        return run

    monkeypatch.setattr(store_module, "read_run", read_run)
    assert main(["report", "--output-dir", str(results), "--out", str(tmp_path / "report")]) == 0
    assert len(alive) == 4
    board = pd.read_csv(tmp_path / "report" / "leaderboard.csv")
    np.testing.assert_allclose(board["squad/exact_match"], [np.mean(hits(step, 60)) for step in (1, 2, 3, 4)])


@pytest.fixture
def counted_loads(monkeypatch) -> list[str]:
    loads: list[str] = []
    real = RunStore.load

    def load(self, ref):
        loads.append(str(ref))
        return real(self, ref)

    monkeypatch.setattr(RunStore, "load", load)
    return loads


def test_watch_reads_one_stored_run_per_checkpoint_not_all_of_them(tmp_path, data_dir, counted_loads):
    from builders import watch_argv, write_checkpoint

    (tmp_path / "notes.txt").write_text("the cat sat on the mat\n")
    root = tmp_path / "train"
    root.mkdir()
    for step in (100, 200, 300, 400):
        write_checkpoint(root / f"checkpoint-{step}", 1.0)
    assert main(watch_argv(root, tmp_path, data_dir, "--every", "0.01", "--once")) == 0
    assert len(counted_loads) <= 3  # the previous checkpoint's run, for each check; 1+2+3+4 before
    assert len(pd.read_csv(tmp_path / "reports" / "leaderboard.csv")) == 4
