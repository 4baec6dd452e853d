"""A contamination scan from tasks and a corpus to its run folder, and reading such a folder back.

The folder (``<output-dir>/<UTC time>-<id>/``) holds, per task and minimum match length L, a table
``contamination_<task>_L<L>.csv`` and ``.parquet``, one row per document (:data:`COLUMNS`), and
``manifest.json``: the settings, each task's document count, undetectable documents and files per length, and
every corpus file with its blake3 content digest, size and the tokens scanned in it. In memory (and as
:func:`read_contamination` gives them back) a task's tables are one frame, its rows by ``min_length``.

A document is *undetectable* at L when none of its forms is long enough to hold a matched span: it is in none of
the four subsets (never silently "clean"), and counted apart.
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
    DEFAULT_LENGTHS,
    DIRTY_FROM,
    PAPER_SKIP_BUDGET,
    SampleIndex,
    subsets,
)
from llamabench.contamination.samples import EvalSample, task_texts, tokenize_samples
from llamabench.contamination.scan import Findings, file_digest, scan_corpus
from llamabench.contamination.tokenizer import load_tokenizer
from llamabench.errors import LlamabenchError
from llamabench.records.results import ensure_writable, inside, sample_file_stems

COLUMNS = [
    "doc_id",
    "min_length",
    "detectable",
    "form",
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


@dataclass(frozen=True)
class ScanSettings:
    """What a scan was asked for (every field is a flag of ``llamabench contamination``)."""

    corpus: list[str]
    tasks: list[str]
    data_dir: Path | None = None
    tasks_dir: tuple[Path, ...] = ()
    model: str | None = None
    field: str = "text"
    lengths: tuple[int, ...] = DEFAULT_LENGTHS
    skip_budget: int = PAPER_SKIP_BUDGET
    longer_than: bool = False
    workers: int = 1
    ray: str | None = None
    limit: int | None = None
    text: tuple[str, ...] = ()
    text_format: str | None = None
    unit_bytes: int = corpus.UNIT_BYTES

    def validate(self) -> None:
        if not (self.tasks or self.text):
            raise LlamabenchError("nothing to scan for: pass --tasks NAMES, or --text PATH for your own files")
        if not self.lengths or min(self.lengths) < 2:
            raise LlamabenchError(f"--lengths {_joined(self.lengths)} must be match lengths of at least 2 tokens")
        if not 0 <= self.skip_budget < min(self.lengths):
            raise LlamabenchError(f"--skip-budget {self.skip_budget} must be from 0 to the smallest length - 1")
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
        [s.tokens for s in samples],
        settings.lengths,
        [s.counted for s in samples],
        settings.skip_budget,
        settings.longer_than,
    )
    found, units = scan_corpus(
        files,
        [s.text for s in samples],
        tokenizer.json,
        index,
        settings.field,
        settings.workers,
        unit_bytes=settings.unit_bytes,
        ray=settings.ray,
    )
    seconds = time.perf_counter() - started
    tables = contamination_rows(samples, found, index)
    manifest = {
        "kind": KIND,
        "llamabench_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "criterion": "llama2",
            "lengths": list(index.lengths),
            "longer_than": settings.longer_than,
            "exact_head": index.seed,
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
            "sample_text": "prompt without few-shot examples + target delimiter + gold answer; and each string of "
            "the record the prompt does not hold",
        },
        "tasks": {task: _task_summary(table) for task, table in tables.items()},
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
        "scan": {"workers": settings.workers, "ray": settings.ray, "units": units, "seconds": round(seconds, 3)},
    }
    return tables, manifest


def contamination_rows(samples: list[EvalSample], found: Findings, index: SampleIndex) -> dict[str, pd.DataFrame]:
    """Each task's rows (:data:`COLUMNS`), by minimum length then document, from what a scan ``found`` for
    ``samples`` (the forms of the documents, numbered as in ``index``): a document's row is that of its most
    contaminated detectable form (the first on ties: the rendered prompt)."""
    forms: dict[tuple[str, str], list[int]] = {}
    for number, sample in enumerate(samples):
        forms.setdefault((sample.task, sample.doc_id), []).append(number)
    rows: dict[str, list[dict]] = {}
    for length in index.lengths:
        for (task, doc_id), numbers in forms.items():
            best = None
            for number in numbers:
                if not index.detectable(number, length):
                    continue
                spans = [span for span in found.spans.get(number, ()) if index.holds(span, length)]
                fraction = index.fraction(number, spans)
                if best is None or fraction > best[1]:
                    best = (number, fraction)
            rows.setdefault(task, []).append(_row(samples, found, doc_id, length, numbers[0], best))
    tables = {}
    for task, task_rows in rows.items():
        table = pd.DataFrame(task_rows, columns=COLUMNS)
        table["longest_record"] = table["longest_record"].astype("Int64")
        table["longest_offset"] = table["longest_offset"].astype("Int64")
        table["contaminated_fraction"] = table["contaminated_fraction"].astype(float)
        tables[task] = table
    return tables


def _row(samples: list[EvalSample], found: Findings, doc_id: str, length: int, first: int, best) -> dict:
    """One document's row at ``length``: ``best`` is (form number, fraction), None when no form is detectable."""
    if best is None:
        flags = dict.fromkeys(("clean", "not_clean", "not_dirty", "dirty"), False)
        return {
            "doc_id": doc_id,
            "min_length": length,
            "detectable": False,
            "form": samples[first].form,
            "n_tokens": int(samples[first].counted.sum()),
            "contaminated_fraction": float("nan"),
            "longest_span": 0,
            **flags,
        }
    number, fraction = best
    span, where = found.longest.get((number, length), (0, None))
    return {
        "doc_id": doc_id,
        "min_length": length,
        "detectable": True,
        "form": samples[number].form,
        "n_tokens": int(samples[number].counted.sum()),
        "contaminated_fraction": fraction,
        "longest_span": span,
        "longest_file": None if where is None else where.file,
        "longest_record": None if where is None else where.record,
        "longest_offset": None if where is None else where.offset,
        **subsets(fraction),
    }


def _task_summary(table: pd.DataFrame) -> dict:
    by_length = table.groupby("min_length")
    return {
        "documents": int(by_length.size().iloc[0]),
        "undetectable": {str(length): int((~group.detectable).sum()) for length, group in by_length},
    }


def _joined(values) -> str:
    return ",".join(map(str, values))


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
        files = {}
        for length, rows in table.groupby("min_length", sort=True):
            stem = files[str(length)] = f"{stems[task]}_L{length}"
            rows.to_parquet(folder / f"{stem}.parquet", index=False)
            escaping.csv_frame(rows).to_csv(folder / f"{stem}.csv", index=False)
        manifest["tasks"][task]["files"] = files
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return folder


def read_contamination(folder: Path | str) -> tuple[dict[str, pd.DataFrame], dict]:
    """A contamination folder's tables by task, and its manifest (a folder that is not one: one-line error)."""
    folder = Path(folder)
    try:
        manifest = json.loads(inside(folder, MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("kind") != KIND:
            raise ValueError("its manifest is not a contamination manifest")
        tables = {
            task: pd.concat(
                [pd.read_parquet(inside(folder, f"{stem}.parquet")) for stem in info["files"].values()],
                ignore_index=True,
            )
            for task, info in manifest["tasks"].items()
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LlamabenchError(
            f"--contamination {folder} is not a folder written by `llamabench contamination` ({exc}); "
            "pass the run folder it printed"
        ) from None
    return tables, manifest
