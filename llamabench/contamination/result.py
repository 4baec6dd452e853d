"""A contamination scan from tasks and a corpus to its run folder, and reading such a folder back.

The folder (``<output-dir>/<UTC time>-<id>/``) holds ``contamination_<task>.csv`` and ``.parquet``, one row per
document (:data:`COLUMNS`), and ``manifest.json``: the settings, each task's document count, and every corpus
file with its blake3 content digest, size and the tokens scanned in it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from llamabench import __version__, escaping
from llamabench.contamination import corpus
from llamabench.contamination.criterion import (
    CLEAN_BELOW,
    DEFAULT_MIN_NGRAM,
    DIRTY_FROM,
    SampleIndex,
    subsets,
)
from llamabench.contamination.samples import EvalSample, task_texts, tokenize_samples
from llamabench.contamination.scan import Findings, file_digest, scan
from llamabench.contamination.tokenizer import load_tokenizer
from llamabench.errors import LlamabenchError
from llamabench.records.results import ensure_writable, sample_file_stems

COLUMNS = [
    "doc_id",
    "n_tokens",
    "contaminated_fraction",
    "longest_span",
    "longest_file",
    "longest_record",
    "longest_offset",
    "clean",
    "not_clean",
    "not_dirty",
    "dirty",
]
MANIFEST = "manifest.json"
KIND = "llamabench-contamination"
# Bytes beyond the longest sample by which text units overlap: room for the tokeniser's context at a cut.
_OVERLAP_SLACK = 1024


@dataclass(frozen=True)
class ScanSettings:
    """What a scan was asked for (every field is a flag of ``llamabench contamination``)."""

    corpus: list[str]
    tasks: list[str]
    data_dir: Path | None = None
    tasks_dir: tuple[Path, ...] = ()
    model: str | None = None
    field: str = "text"
    min_ngram: int = DEFAULT_MIN_NGRAM
    skip_budget: int = 0
    workers: int = 1
    limit: int | None = None
    text: tuple[str, ...] = ()
    text_format: str | None = None
    unit_bytes: int = corpus.UNIT_BYTES

    def validate(self) -> None:
        if not (self.tasks or self.text):
            raise LlamabenchError("nothing to scan for: pass --tasks NAMES, or --text PATH for your own files")
        if self.min_ngram < 2:
            raise LlamabenchError(f"--min-ngram {self.min_ngram} must be at least 2 tokens")
        if not 0 <= self.skip_budget < self.min_ngram:
            raise LlamabenchError(f"--skip-budget {self.skip_budget} must be from 0 to --min-ngram - 1")
        if self.workers < 1:
            raise LlamabenchError(f"--workers {self.workers} must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise LlamabenchError(f"--limit {self.limit} must be a positive number of documents")


def contamination_tables(settings: ScanSettings) -> tuple[dict[str, pd.DataFrame], dict]:
    """Each task's table (:data:`COLUMNS`) and the manifest; bad input fails before any tokenizer loads."""
    settings.validate()
    files = corpus.corpus_files(settings.corpus)
    for file in files:
        corpus.check_file(file, settings.field)
    texts = task_texts(
        settings.tasks,
        data_dir=settings.data_dir,
        tasks_dir=list(settings.tasks_dir),
        limit=settings.limit,
        text=list(settings.text),
        text_format=settings.text_format,
    )
    started = time.perf_counter()
    tokenizer = load_tokenizer(settings.model)
    samples = tokenize_samples(texts, tokenizer.load())
    index = SampleIndex(
        [s.tokens for s in samples], settings.min_ngram, [s.counted for s in samples], settings.skip_budget
    )
    overlap = max(len(s.text.encode()) for s in samples) + _OVERLAP_SLACK
    work = [unit for file in files for unit in corpus.units(file, overlap, settings.unit_bytes)]
    found = scan(work, tokenizer.json, index, settings.field, settings.workers)
    seconds = time.perf_counter() - started
    tables = contamination_rows(samples, found, index)
    manifest = {
        "kind": KIND,
        "llamabench_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "criterion": "llama2",
            "min_ngram": settings.min_ngram,
            "skip_budget": settings.skip_budget,
            "clean_below": CLEAN_BELOW,
            "dirty_from": DIRTY_FROM,
            "model": tokenizer.model,
            "tokenizer_sha256": tokenizer.digest,
            "field": settings.field,
            "tasks": settings.tasks,
            "text": list(settings.text),
            "text_format": settings.text_format,
            "data_dir": None if settings.data_dir is None else str(settings.data_dir),
            "limit": settings.limit,
            "sample_text": "prompt without few-shot examples + target delimiter + gold answer",
        },
        "tasks": {task: {"documents": len(table)} for task, table in tables.items()},
        "corpus": [
            {
                "path": str(file),
                "format": corpus.corpus_format(file),
                "bytes": file.stat().st_size,
                "blake3": file_digest(file),
                "tokens": found.tokens.get(str(file), 0),
            }
            for file in files
        ],
        "scan": {"workers": settings.workers, "units": len(work), "seconds": round(seconds, 3)},
    }
    return tables, manifest


def contamination_rows(samples: list[EvalSample], found: Findings, index: SampleIndex) -> dict[str, pd.DataFrame]:
    """Each task's table (:data:`COLUMNS`) from what a scan ``found`` for ``samples`` (numbered as in ``index``)."""
    rows: dict[str, list[dict]] = {}
    for number, sample in enumerate(samples):
        fraction = index.fraction(number, found.spans.get(number, set()))
        length, where = found.longest.get(number, (0, None))
        rows.setdefault(sample.task, []).append(
            {
                "doc_id": sample.doc_id,
                "n_tokens": int(sample.counted.sum()),
                "contaminated_fraction": fraction,
                "longest_span": length,
                "longest_file": None if where is None else where.file,
                "longest_record": None if where is None else where.record,
                "longest_offset": None if where is None else where.offset,
                **subsets(fraction),
            }
        )
    tables = {}
    for task, task_rows in rows.items():
        table = pd.DataFrame(task_rows, columns=COLUMNS)
        table["longest_record"] = table["longest_record"].astype("Int64")
        table["longest_offset"] = table["longest_offset"].astype("Int64")
        tables[task] = table
    return tables


def write_contamination(tables: dict[str, pd.DataFrame], manifest: dict, output_dir: Path) -> Path:
    """Write the tables and the manifest into a new folder under ``output_dir``; returns the folder."""
    ensure_writable(output_dir)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(output_dir) / f"{stamp}-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    stems = {
        task: "contamination_" + stem.removeprefix("samples_") for task, stem in sample_file_stems(list(tables)).items()
    }
    for task, table in tables.items():
        table.to_parquet(folder / f"{stems[task]}.parquet", index=False)
        escaping.csv_frame(table).to_csv(folder / f"{stems[task]}.csv", index=False)
        manifest["tasks"][task]["file"] = stems[task]
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return folder


def read_contamination(folder: Path | str) -> tuple[dict[str, pd.DataFrame], dict]:
    """A contamination folder's tables by task, and its manifest (a folder that is not one: one-line error)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("kind") != KIND:
            raise ValueError("its manifest is not a contamination manifest")
        tables = {task: pd.read_parquet(folder / f"{info['file']}.parquet") for task, info in manifest["tasks"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LlamabenchError(
            f"--contamination {folder} is not a folder written by `llamabench contamination` ({exc}); "
            "pass the run folder it printed"
        ) from None
    return tables, manifest
