"""Results tables: the tidy aggregate table, per-sample tables, and writing a run to disk."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path

import pandas as pd

from llamabench import __version__, escaping
from llamabench.backends.base import Backend
from llamabench.digits import ascii_int
from llamabench.errors import LlamabenchError
from llamabench.records.manifest import Manifest

MANIFEST_KEYS = ("run_id", "model", "started")  # what listing and reporting a run folder need
TEMPORARY_MARK = ".tmp-"
RESULT_COLUMNS = [
    "model",
    "model_fingerprint",
    "task",
    "task_version",
    "task_hash",
    "metric",
    "value",
    "stderr",
    "n",
    "higher_is_better",
    "signature",
    "num_fewshot",
    "limit",
    "seed",
    "llamabench_version",
    "timestamp",
]


@dataclass
class RunResult:
    """A finished run: one row per model x task x metric, per-sample tables by task, and the manifest."""

    results: pd.DataFrame
    samples: dict[str, pd.DataFrame] = field(default_factory=dict)
    manifest: Manifest = field(default_factory=Manifest)

    def __post_init__(self) -> None:
        # A manifest read from disk (or given as a dict) becomes the record; it is never edited afterwards.
        self.manifest = Manifest.from_dict(self.manifest)

    def value(self, task: str, metric: str) -> float:
        row = self.results[(self.results.task == task) & (self.results.metric == metric)]
        if row.empty:
            raise KeyError(f"no result for task {task!r}, metric {metric!r}")
        return float(row.value.iloc[0])


@dataclass(frozen=True)
class MetricValue:
    """One aggregate figure for one task."""

    metric: str
    value: float
    stderr: float
    n: int
    higher_is_better: bool
    signature: str | None = None


def result_rows(values: list[MetricValue], context: dict) -> list[dict]:
    """Rows of the tidy table: ``context`` holds the model/task/run columns shared by every metric."""
    return [{**context, **asdict(value)} for value in values]


def results_frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def sample_file_stems(tasks: list[str]) -> dict[str, str]:
    """Each task's per-sample file stem, ``samples_<name>``, distinct for distinct tasks.

    A name that is not already file-name safe gets a hash of the original (``lm_eval:x`` and ``lm_eval_x``
    stay apart), and stems are kept distinct ignoring case, for case-insensitive file systems.
    """
    stems: dict[str, str] = {}
    taken: set[str] = set()
    for task in tasks:
        stem = escaping.safe_name(task)[:80]
        if stem != task:
            stem += "-" + hashlib.sha256(task.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        base, n = stem, 1
        while stem.casefold() in taken:
            n += 1
            stem = f"{base}-{n}"
        taken.add(stem.casefold())
        stems[task] = f"samples_{stem}"
    return stems


def ensure_writable(output_dir: Path) -> None:
    """Fail before any work is done if results could not be written to ``output_dir``."""
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        probe = Path(output_dir) / f".llamabench-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise LlamabenchError(
            f"output directory {output_dir} is not writable ({exc.strerror}); pick another --output-dir"
        ) from exc


def write_run(run: RunResult, output_dir: Path) -> Path:
    """Write results (CSV + parquet), per-sample tables and the JSON manifest under ``output_dir``.

    The files go to a temporary folder (``.<name>.tmp-<pid>``, hidden from ``runs/*/``) that is renamed into
    place once complete, so a run folder under its final name always holds every file; a kill leaves at most
    the temporary folder, which the next run, ``runs`` or ``report`` over the folder removes
    (:func:`remove_killed_run_folders`).
    """
    remove_killed_run_folders(Path(output_dir))
    manifest = run.manifest
    folder = Path(output_dir) / f"{escaping.safe_name(manifest.model or 'unknown')[:80]}-{manifest.run_id}"
    stems = manifest.sample_files or sample_file_stems(list(run.samples))
    written = manifest if manifest.sample_files else replace(manifest, sample_files=stems)  # a run not built by us
    temporary = folder.with_name(f".{folder.name}{TEMPORARY_MARK}{os.getpid()}")
    try:
        shutil.rmtree(temporary, ignore_errors=True)  # left by an earlier process that had this pid
        temporary.mkdir(parents=True)
        escaping.csv_frame(run.results).to_csv(temporary / "results.csv", index=False)
        run.results.to_parquet(temporary / "results.parquet", index=False)
        for task, samples in run.samples.items():
            stem = stems[task]
            samples.to_parquet(temporary / f"{stem}.parquet", index=False)
            escaping.csv_frame(samples).to_csv(temporary / f"{stem}.csv", index=False)
        (temporary / "manifest.json").write_text(json.dumps(written.to_dict(), indent=2, default=str))
        os.replace(temporary, folder)
    except OSError as exc:
        shutil.rmtree(temporary, ignore_errors=True)
        fix = "pick a shorter --output-dir" if exc.errno == errno.ENAMETOOLONG else "pick a writable --output-dir"
        raise LlamabenchError(f"cannot write results to {folder} ({exc.strerror}); {fix}") from exc
    return folder


# A temporary run folder written to within this many seconds is kept whatever its pid says: on a results folder
# shared between machines (NFS), a run writing on another machine has a pid that does not exist here.
RUN_WRITE_QUIET_S = 120.0


def remove_killed_run_folders(output_dir: Path) -> list[Path]:
    """Delete the temporary run folders (``.<name>.tmp-<pid>``) under ``output_dir`` whose writer is gone (see
    :func:`~llamabench.backends.loading.stale.writer_gone`: a live writer's folder, another process's or this one's, is
    kept) and that nothing wrote to for RUN_WRITE_QUIET_S; returns them, sorted."""
    from llamabench.backends.loading.stale import writer_gone

    removed = []
    for folder in sorted(Path(output_dir).glob(f".*{TEMPORARY_MARK}*")) if Path(output_dir).is_dir() else []:
        pid = folder.name.rpartition(TEMPORARY_MARK)[2]
        if ascii_int(pid) is None or not folder.is_dir() or _written_within(folder, RUN_WRITE_QUIET_S):
            continue
        if writer_gone(ascii_int(pid), folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _written_within(folder: Path, seconds: float) -> bool:
    """Whether the folder or a file in it was modified in the last ``seconds`` (a vanished one counts as
    written: someone is moving it)."""
    try:
        newest = max([folder.stat().st_mtime] + [path.stat().st_mtime for path in folder.iterdir()])
    except OSError:
        return True
    return time.time() - newest < seconds


def run_folder_problem(folder: Path) -> str | None:
    """Why ``folder`` is not a complete run folder (a few words), or None when it is one; reads only the manifest."""
    if folder.name.startswith(".") and TEMPORARY_MARK in folder.name:
        return "a temporary folder of a run still writing it (removed once its writer is gone)"
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "it has no manifest.json"
    except (OSError, ValueError) as exc:
        return f"its manifest.json cannot be read ({_one_line(exc)})"
    missing = [key for key in MANIFEST_KEYS if key not in manifest] if isinstance(manifest, dict) else MANIFEST_KEYS
    if missing:
        return f"its manifest.json lacks {', '.join(missing)}"
    if not (folder / "results.parquet").is_file():
        return "it has no results.parquet"
    return None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def format_table(results: pd.DataFrame) -> str:
    """A compact human-readable table of the aggregate results."""
    if results.empty:
        return "(no results)"
    table = results[["model", "task", "metric", "value", "stderr", "n"]].copy()
    table["value"] = table["value"].map(lambda v: f"{v:.4f}")
    table["stderr"] = table["stderr"].map(lambda v: "" if pd.isna(v) else f"± {v:.4f}")
    table["dir"] = results["higher_is_better"].map({True: "↑", False: "↓"})
    return terminal_table(table)


def terminal_table(table: pd.DataFrame) -> str:
    """``table`` as text to print: its text cells with control characters shown as escapes."""
    return table.map(lambda cell: escaping.terminal(cell) if isinstance(cell, str) else cell).to_string(index=False)


def read_run(folder: Path) -> RunResult:
    """Read back a run folder written by :func:`write_run` (parquet tables and the manifest)."""
    folder = Path(folder)
    problem = run_folder_problem(folder)
    if problem:
        raise _incomplete(folder, problem)
    try:
        manifest = Manifest.from_dict(json.loads(inside(folder, "manifest.json").read_text(encoding="utf-8")))
        results = pd.read_parquet(inside(folder, "results.parquet"))
        stems = manifest.sample_files or {task: f"samples_{escaping.safe_name(task)}" for task in results.task.unique()}
        samples = {task: pd.read_parquet(inside(folder, f"{stem}.parquet")) for task, stem in stems.items()}
    except (OSError, ValueError) as exc:  # pyarrow's errors on a corrupt file are ValueErrors
        raise _incomplete(folder, _one_line(exc)) from exc
    return RunResult(results, samples, manifest)


def inside(folder: Path, name: str) -> Path:
    """``folder / name``, refused unless it is inside ``folder`` once links are followed: a run folder is read
    only from itself, whatever its manifest names (``../``, an absolute path) or its files link to."""
    path = folder / name
    resolved, root = path.resolve(), folder.resolve()
    if not resolved.is_relative_to(root) or resolved == root:
        raise LlamabenchError(
            f"{folder}: {name} is {resolved}, outside the run folder; a run folder is read only from inside it "
            "(was its manifest.json edited or a file replaced by a link?)"
        )
    return path


def _incomplete(folder: Path, why: str) -> LlamabenchError:
    return LlamabenchError(f"{folder} is not a complete llamabench run folder: {why}; run the evaluation again")


def format_number(value: float) -> str:
    """A metric value for people: 4 decimals below 10, 2 up to a million, then 4 significant digits; "–" if missing."""
    if pd.isna(value):
        return "–"
    if abs(value) >= 1e6:
        return f"{value:.4g}"
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4f}"


def build_run(
    backend: Backend,
    config: dict,
    started: datetime,
    parts: Sequence[RunResult],
    *,
    step: int | None = None,
    sections: dict | None = None,
) -> RunResult:
    """One run from the partial results of its evaluators; ``step`` (a training step) and ``sections`` (e.g. how
    an in-memory model lay over the ranks) go into the manifest. ``config`` is the run's configuration as recorded
    (:meth:`RunConfig.record <llamabench.config.RunConfig.record>`)."""
    tasks: dict = {}
    extra: dict = {}
    for part in parts:
        tasks.update(part.manifest.tasks)
        extra.update(part.manifest.sections)
    samples = {task: frame for part in parts for task, frame in part.samples.items()}
    manifest = Manifest(
        run_id=started.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6],
        model=backend.model_id,
        # Described after every task ran, so the batches of all of them are counted.
        backend=backend.describe(),
        config=dict(config),
        tasks=tasks,
        llamabench_version=__version__,
        started=started.isoformat(timespec="seconds"),
        step=None if step is None else int(step),
        sample_files=sample_file_stems(list(samples)),
        sections={**extra, **(sections or {})},
    )
    rows = [row for part in parts for row in part.results.to_dict("records")]
    return RunResult(results_frame(rows), samples, manifest)
