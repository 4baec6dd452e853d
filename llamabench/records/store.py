"""The run store: every finished run's manifest, aggregate table and per-sample tables in one SQLite file.

Tables (one transaction per run, so concurrent ``llamabench run`` processes append safely):

- ``runs``: ``run_id``, ``model``, ``fingerprint``, ``tasks``, ``started``, ``folder``, ``manifest`` (JSON)
- ``results``: ``run_id``, ``task``, ``metric``, ``value``, ``record`` (the full row as JSON)
- ``samples``: ``run_id``, ``task``, ``doc_id``, ``record`` (the full row as JSON, ``stats`` included)
- ``texts``: ``hash``, ``text``: each long text of a sample row (a prompt holding a reading passage, a long
  target) once, by its SHA-256. Every run of a task shows the model the same documents, so a record names its
  long texts by hash (under ``TEXT_REFS``) instead of holding them: the store grows by each run's numbers and
  predictions, not by another copy of the data set. Records written before hold their texts and read as they are.

Rows keep their order, and records hold Python values (JSON floats round-trip exactly), so
``load(add(run))`` gives back equal tables whatever columns they have.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from llamabench.errors import LlamabenchError
from llamabench.records.manifest import Manifest
from llamabench.records.results import (
    TEMPORARY_MARK,
    RunResult,
    read_run,
    remove_killed_run_folders,
    results_frame,
    run_folder_problem,
)
from llamabench.records.summary import MAX_SAMPLE_ROWS, RunSummary, sample_head, summarize

STORE_NAME = "llamabench.sqlite"
LIST_COLUMNS = ["run_id", "model", "fingerprint", "tasks", "started", "folder"]
# A sample record's key naming its texts kept in the ``texts`` table ({column: hash}); no table column is named so.
TEXT_REFS = "\u0000texts"
# Texts at least this long are kept once in ``texts``; shorter ones (ids, answers) cost less than their hash.
SHARED_TEXT_CHARS = 128
# The folder ``--log-to tensorboard`` writes beside the runs by default: not a run, and not noted as one.
TENSORBOARD_FOLDER = "tensorboard"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, model TEXT, fingerprint TEXT, tasks TEXT, started TEXT, folder TEXT,
    manifest TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_id TEXT NOT NULL REFERENCES runs, task TEXT, metric TEXT, value REAL, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL REFERENCES runs, task TEXT, doc_id TEXT, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS texts (hash TEXT PRIMARY KEY, text TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS results_run ON results (run_id);
CREATE INDEX IF NOT EXISTS samples_run ON samples (run_id, task);
"""


@dataclass
class FolderScan:
    """The folders of a results dir that its store lacks: complete runs (read from their files, one at a time,
    and kept as what the report shows of them; a run killed between writing its folder and recording it leaves
    one), the folders skipped, with why, and the temporary folders of killed runs, removed."""

    unstored: dict[Path, RunSummary]
    skipped: dict[Path, str]
    removed: list[Path]

    def notes(self, store: Path) -> list[str]:
        """One line per folder read from its files, skipped or removed."""
        lines = [
            f"{folder} is not in the run store {store} (its run stopped before recording it, or it was copied "
            "here); read from its files"
            for folder in self.unstored
        ]
        lines += [f"removed {folder}: a temporary folder of a run killed while writing it" for folder in self.removed]
        return lines + [f"skipped {folder}: {why}" for folder, why in self.skipped.items()]


class RunStore:
    """Runs recorded in the SQLite file at ``path`` (created, with its folder, by the first ``add``)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @classmethod
    def in_dir(cls, results_dir: Path | str) -> RunStore:
        """The store of a results folder (``--output-dir`` of ``llamabench run``)."""
        return cls(Path(results_dir) / STORE_NAME)

    def add(self, run: RunResult, folder: Path | str | None = None) -> str:
        """Record ``run`` (and the folder its files went to); returns its run_id."""
        run_id = run.manifest.run_id
        runs_row = (*_list_row(run, folder), json.dumps(run.manifest.to_dict(), default=str))
        results = [(run_id, r["task"], r["metric"], r["value"], _dumps(r)) for r in run.results.to_dict("records")]
        texts: dict[str, str] = {}
        samples = [
            (run_id, task, str(row["doc_id"]), _dumps(_share_texts(row, texts)))
            for task, frame in run.samples.items()
            for row in frame.to_dict("records")
        ]
        with self._connect(create=True) as db:
            if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                raise LlamabenchError(f"run {run_id} is already in {self.path}")
            db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)", runs_row)
            db.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?)", results)
            db.executemany("INSERT OR IGNORE INTO texts VALUES (?, ?)", texts.items())
            db.executemany("INSERT INTO samples VALUES (?, ?, ?, ?)", samples)
        return run_id

    def list(self) -> pd.DataFrame:
        """One row per stored run, oldest first: run_id, model, fingerprint, tasks, started, folder."""
        if not self.path.exists():
            return pd.DataFrame(columns=LIST_COLUMNS)
        with self._connect() as db:
            rows = db.execute(f"SELECT {', '.join(LIST_COLUMNS)} FROM runs ORDER BY started, rowid").fetchall()
        return pd.DataFrame(rows, columns=LIST_COLUMNS)

    def manifests(self) -> list[Manifest]:
        """Every stored run's manifest, oldest first (without loading its tables)."""
        if not self.path.exists():
            return []
        with self._connect() as db:
            rows = db.execute("SELECT manifest FROM runs ORDER BY started, rowid").fetchall()
        return [Manifest.from_dict(json.loads(manifest)) for (manifest,) in rows]

    def listing(self) -> tuple[pd.DataFrame, list[str]]:
        """:meth:`list` plus the complete run folders the store lacks, by start time; and :meth:`scan`'s notes."""
        scan = self.scan()
        rows = self.list().to_dict("records")
        rows += [dict(zip(LIST_COLUMNS, _list_row(run, folder), strict=True)) for folder, run in scan.unstored.items()]
        rows.sort(key=lambda row: str(row["started"]))
        return pd.DataFrame(rows, columns=LIST_COLUMNS), scan.notes(self.path)

    def scan(self) -> FolderScan:
        """The folders beside the store (its results dir) holding runs it lacks, and those that are not runs."""
        stored = set(self.list().run_id)
        unstored, skipped = {}, {}
        results_dir = self.path.parent
        removed = remove_killed_run_folders(results_dir)
        for folder in sorted(results_dir.iterdir()) if results_dir.is_dir() else []:
            if not folder.is_dir() or folder.name.startswith(".") and TEMPORARY_MARK not in folder.name:
                continue  # files, and hidden folders that are not ours (.ipynb_checkpoints, ...)
            if folder.name == TENSORBOARD_FOLDER:
                continue
            problem = run_folder_problem(folder)
            if problem:
                skipped[folder] = problem
            elif _folder_run_id(folder) not in stored:
                try:
                    unstored[folder] = summarize(read_run(folder))
                except LlamabenchError:
                    skipped[folder] = "its result tables cannot be read (`llamabench report FOLDER` says why)"
        return FolderScan(unstored, skipped, removed)

    def gather(self, refs: Sequence[str | Path]) -> tuple[list[RunSummary], list[str]]:
        """What a report shows of the runs ``refs`` name, skipping folders that are not complete runs; without
        ``refs``, of every stored run and every complete run folder the store lacks. Runs are read one at a time
        and only their summaries kept, so memory does not grow with the runs' sample tables. Returns them and
        one note per folder skipped, read or removed."""
        if not refs:
            scan = self.scan()
            runs = [self._stored_summary(run_id) for run_id in self.list().run_id] + list(scan.unstored.values())
            return runs, scan.notes(self.path)
        runs, notes = [], []
        for ref in refs:
            problem = run_folder_problem(Path(ref)) if Path(ref).is_dir() else None
            if problem:
                notes.append(f"skipped {ref}: {problem}")
            else:
                runs.append(self.summary(ref))
        return runs, notes

    def resolve(self, ref: str | Path) -> str:
        """The run_id of a run folder (stored or not), or of the stored run with that run_id or unique prefix."""
        folder_id = _folder_run_id(ref)
        if folder_id is not None:
            return folder_id
        ref = str(ref)
        if self._stored(ref):  # an exact run_id: one lookup, not a listing of every run
            return ref
        ids = self.list().run_id
        matches = ids[ids.str.startswith(ref)].tolist()
        if ref in matches:
            return ref
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise LlamabenchError(f"run '{ref}' is ambiguous in {self.path}: it matches {', '.join(matches)}")
        raise LlamabenchError(f"no run '{ref}' in {self.path}; `llamabench runs --output-dir DIR` lists them")

    def load(self, ref: str | Path) -> RunResult:
        """A run by run_id, unique run_id prefix, or output folder (read from its files if it is not stored)."""
        run_id = self.resolve(ref)
        if not self._stored(run_id):
            return read_run(Path(ref))
        query = "SELECT task, record FROM samples WHERE run_id = ? ORDER BY rowid"
        manifest, results, samples = self._read(run_id, query, (run_id,))
        return RunResult(results, samples, manifest)

    def summary(self, ref: str | Path, rows: int = MAX_SAMPLE_ROWS) -> RunSummary:
        """What a report shows of a run (see :meth:`load` for ``ref``): its tables' aggregates and each task's
        first ``rows`` sample rows, read without the rest of its samples."""
        run_id = self.resolve(ref)
        if not self._stored(run_id):
            return summarize(read_run(Path(ref)), rows)
        return self._stored_summary(run_id, rows)

    def _stored_summary(self, run_id: str, rows: int = MAX_SAMPLE_ROWS) -> RunSummary:
        first_rows = (
            "SELECT task, record FROM (SELECT task, record, rowid AS position, ROW_NUMBER() OVER "
            "(PARTITION BY task ORDER BY rowid) AS k FROM samples WHERE run_id = ?) WHERE k <= ? ORDER BY position"
        )
        manifest, results, samples = self._read(run_id, first_rows, (run_id, rows))
        with self._connect() as db:
            query = "SELECT task, COUNT(*) FROM samples WHERE run_id = ? GROUP BY task"
            counts = dict(db.execute(query, (run_id,)).fetchall())
        heads = {task: sample_head(frame, results, task) for task, frame in samples.items()}
        return RunSummary(results, manifest, heads, {task: counts[task] for task in samples})

    def _stored(self, run_id: str) -> bool:
        if not self.path.exists():
            return False
        with self._connect() as db:
            return db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is not None

    def _read(self, run_id: str, samples_query: str, parameters: tuple) -> tuple[Manifest, pd.DataFrame, dict]:
        """A stored run's manifest, results table and the sample rows ``samples_query`` selects (task, record),
        by task, their shared texts filled in."""
        with self._connect() as db:
            (manifest,) = db.execute("SELECT manifest FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            rows = db.execute("SELECT record FROM results WHERE run_id = ? ORDER BY rowid", (run_id,))
            results = results_frame([json.loads(record) for (record,) in rows])
            records: dict[str, list[dict]] = {}
            for task, record in db.execute(samples_query, parameters):
                records.setdefault(task, []).append(json.loads(record))
            _fill_texts(db, [row for task_rows in records.values() for row in task_rows])
        samples = {task: pd.DataFrame.from_records(task_rows) for task, task_rows in records.items()}
        return Manifest.from_dict(json.loads(manifest)), results, samples

    @contextmanager
    def _connect(self, create: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection that commits on success and rolls back on error; ``create`` makes file and schema."""
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.path, timeout=60)) as db, db:
                if create:
                    db.executescript(_SCHEMA)
                yield db
        except sqlite3.Error as exc:
            raise LlamabenchError(f"run store {self.path}: {exc}") from exc
        except OSError as exc:
            raise LlamabenchError(f"cannot create the run store {self.path} ({exc.strerror})") from exc


def _list_row(run: RunResult, folder: Path | str | None) -> tuple:
    """The run's row of :meth:`RunStore.list` (LIST_COLUMNS)."""
    return (
        run.manifest.run_id,
        run.manifest.model,
        run.manifest.backend_info.fingerprint,
        ",".join(run.samples),
        run.manifest.started,
        None if folder is None else str(Path(folder).resolve()),
    )


def _folder_run_id(ref: str | Path) -> str | None:
    """The run_id in the manifest of a run folder, or None when ``ref`` is not one."""
    manifest = Path(ref) / "manifest.json"
    if not manifest.is_file():
        return None
    try:
        return json.loads(manifest.read_text())["run_id"]
    except (OSError, ValueError, KeyError) as exc:
        raise LlamabenchError(f"{manifest} is not a llamabench manifest ({exc!r})") from exc


def _share_texts(record: dict, texts: dict[str, str]) -> dict:
    """``record`` with each long text replaced by a reference (its hash under TEXT_REFS), the text added to
    ``texts`` by hash."""
    refs = {}
    for column, value in record.items():
        if isinstance(value, str) and len(value) >= SHARED_TEXT_CHARS:
            digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
            texts[digest] = value
            refs[column] = digest
    if not refs:
        return record
    # The column keeps its place (None) so the loaded table has the columns in their order.
    return {**{k: None if k in refs else v for k, v in record.items()}, TEXT_REFS: refs}


def _fill_texts(db: sqlite3.Connection, records: list[dict]) -> None:
    """Put each record's shared texts back in their columns (records from before texts were shared hold
    them already)."""
    wanted = {digest for record in records for digest in record.get(TEXT_REFS, {}).values()}
    if not wanted:
        return
    texts: dict[str, str] = {}
    ordered = sorted(wanted)
    for start in range(0, len(ordered), 500):  # SQLite caps the parameters of one statement
        chunk = ordered[start : start + 500]
        query = f"SELECT hash, text FROM texts WHERE hash IN ({', '.join('?' * len(chunk))})"
        texts.update(db.execute(query, chunk).fetchall())
    for record in records:
        refs = record.pop(TEXT_REFS, None)
        if refs:
            record.update({column: texts[digest] for column, digest in refs.items()})


def _dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, default=str)
