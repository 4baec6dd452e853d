"""The training corpus of a contamination scan: which files, in what format, cut into units of work.

``--corpus`` takes files, folders (every non-hidden file below, recursively) and glob patterns. A file's format
is its suffix: ``.jsonl`` (one JSON object a line, its text in ``--field``), ``.parquet`` (the ``--field``
column), anything else plain UTF-8 text.

Units are what one worker reads, tokenises and matches at a time (the corpus is never held whole):

- a text file is cut into byte ranges of about ``unit_bytes``, each ending at a line break, and each starting
  ``overlap`` bytes before the previous one ended. ``overlap`` is at least the longest evaluation sample's size in
  bytes, so a corpus passage equal to any part of a sample lies whole inside some unit. Text before a unit's
  ``counted_from`` was read by the previous unit too: its tokens are not counted twice;
- a JSONL file is cut into ranges of whole lines; each line is one record, tokenised alone;
- a Parquet file is one unit per row group; each row is one record.
"""

from __future__ import annotations

import glob
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from llamabench.errors import LlamabenchError

FORMATS = ("text", "jsonl", "parquet")
UNIT_BYTES = 4 << 20
_SEARCH = 1 << 16  # how far past a unit's nominal end a line break is looked for before cutting mid-line


def corpus_format(path: Path) -> str:
    suffix = path.suffix.lower()
    return "jsonl" if suffix == ".jsonl" else "parquet" if suffix == ".parquet" else "text"


def corpus_files(specs: list[str]) -> list[Path]:
    """Every file ``specs`` name (files, folders, globs), each once, in the order given (folders sorted)."""
    if not specs:
        raise LlamabenchError("no corpus given: pass --corpus PATH (files, folders or quoted globs)")
    found: dict[Path, None] = {}
    for spec in specs:
        if any(ch in spec for ch in "*?["):
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                raise LlamabenchError(f"--corpus {spec} matches no file; check the pattern (quote it for the shell)")
            paths = [Path(m) for m in matches]
        elif os.path.exists(spec):
            paths = [Path(spec)]
        else:
            raise LlamabenchError(f"--corpus {spec} does not exist; pass text, JSONL or Parquet files or folders")
        for path in paths:
            for file in _files_under(path):
                found.setdefault(file, None)
    if not found:
        raise LlamabenchError(f"--corpus {' '.join(specs)} holds no file; pass text, JSONL or Parquet files")
    return list(found)


def _files_under(path: Path) -> list[Path]:
    if not path.is_dir():
        return [_regular(path)]
    files = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [_regular(Path(root) / name) for name in sorted(names) if not name.startswith(".")]
    return files


def _regular(path: Path) -> Path:
    """``path`` if it is a regular file (or a link to one): reading a FIFO, socket or device would block or never
    end, so it is refused before any work."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise LlamabenchError(f"--corpus {path} cannot be read ({exc.strerror}); fix or remove it") from None
    if not stat.S_ISREG(mode):
        raise LlamabenchError(
            f"--corpus {path} is not a regular file (a FIFO, socket or device); remove it or pass regular files only"
        )
    return path


@dataclass(frozen=True)
class Unit:
    """One piece of work: bytes ``start:end`` of a text or JSONL file, or row group ``start`` of a Parquet file."""

    path: str
    format: str
    start: int
    end: int
    counted_from: int = 0  # text: bytes before this offset were scanned by the previous unit as well


def check_file(path: Path, field: str) -> None:
    """Refuse, before any work, a JSONL or Parquet file whose first record lacks ``field`` as text."""
    fmt = corpus_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            schema = pq.read_schema(path)
        except Exception as exc:  # noqa: BLE001  (pyarrow raises several types on a file that is not Parquet)
            raise LlamabenchError(f"--corpus {path} is not a readable Parquet file ({type(exc).__name__})") from None
        if field not in schema.names:
            raise LlamabenchError(
                f"--corpus {path} has no column '{field}' (its columns: {', '.join(schema.names)}); pass --field NAME"
            )
    elif fmt == "jsonl":
        with open(path, "rb") as handle:
            first = handle.readline()
        if first.strip():
            record_text(first, field, path, 0)


def record_text(line: bytes, field: str, path: Path | str, offset: int) -> str | None:
    """The ``field`` text of one JSONL line (None for a blank line); a bad line is a one-line error."""
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise LlamabenchError(f"--corpus {path}: the line at byte {offset} is not JSON; fix the file") from None
    value = record.get(field) if isinstance(record, dict) else None
    if not isinstance(value, str):
        keys = ", ".join(map(str, record)) if isinstance(record, dict) else type(record).__name__
        raise LlamabenchError(
            f"--corpus {path}: the record at byte {offset} has no text field '{field}' (it has: {keys}); "
            "pass --field NAME"
        )
    return value


def units(path: Path, overlap: int, unit_bytes: int = UNIT_BYTES) -> list[Unit]:
    """``path`` cut into units (see the module)."""
    fmt = corpus_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        groups = pq.ParquetFile(path).num_row_groups
        return [Unit(str(path), fmt, group, group + 1) for group in range(groups)]
    size = path.stat().st_size
    cut = []
    with open(path, "rb") as handle:
        start = 0
        while start < size:
            end = _line_end(handle, start + unit_bytes, size)
            cut.append((start, end))
            start = end
    if fmt == "jsonl":
        return [Unit(str(path), fmt, start, end) for start, end in cut]
    with open(path, "rb") as handle:
        return [
            Unit(str(path), fmt, _char_start(handle, max(0, start - overlap)) if start else 0, end, start)
            for start, end in cut
        ]


def _line_end(handle, nominal: int, size: int) -> int:
    """The offset just past the first line break at or after ``nominal`` (within a search window), else
    ``nominal`` moved back to the start of a UTF-8 character; ``size`` at the end of the file."""
    if nominal >= size:
        return size
    handle.seek(nominal)
    ahead = handle.read(_SEARCH)
    newline = ahead.find(b"\n")
    if newline >= 0:
        return nominal + newline + 1
    return _char_start(handle, nominal)


def _char_start(handle, offset: int) -> int:
    """``offset`` moved back to the first byte of the UTF-8 character it falls in."""
    handle.seek(offset)
    byte = handle.read(1)
    while offset > 0 and byte and byte[0] & 0xC0 == 0x80:
        offset -= 1
        handle.seek(offset)
        byte = handle.read(1)
    return offset
