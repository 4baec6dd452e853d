"""Load a task's documents: a local file under the data directory, or the hub for online users."""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from llamabench.errors import LlamabenchError
from llamabench.tasks.text_readers import TEXT_FORMATS, read_text_files, relative_name

# A WikiText top-level heading (" = Title = "); deeper headings (" = = Section = = ") stay inside the page.
_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    # Records end at "\n" only (a "\r" before it is JSON whitespace): str.splitlines would also split inside
    # strings holding a raw U+2028, U+0085 or form feed, which JSON allows unescaped.
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LlamabenchError(f"{path}:{number} is not valid JSON ({exc.msg}); fix or remove that line") from exc
        if not isinstance(row, dict):
            raise LlamabenchError(f"{path}:{number} is not a JSON object; each line must be one record")
        rows.append(row)
    return rows


def read_json(path: Path) -> list[dict]:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise LlamabenchError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise LlamabenchError(f"{path} must hold a list of JSON objects (or {{'data': [...]}})")
    return data


def read_wikitext_documents(path: Path) -> list[dict]:
    """Split a raw WikiText file into one ``{"page": ...}`` record per article.

    An article starts at each top-level heading line; lines are joined with "\\n" and kept
    verbatim (including WikiText's " @-@ " escapes), as in the hub's document-level variant.
    """
    pages: list[list[str]] = []
    # A CRLF or CR copy must give the same articles: a trailing "\r" would defeat the title pattern.
    text = _read_text(path).replace("\r\n", "\n").replace("\r", "\n")
    for line in text.split("\n"):
        if _WIKITEXT_TITLE.match(line) or not pages:
            pages.append([])
        pages[-1].append(line)
    return [{"page": "\n".join(lines)} for lines in pages if "".join(lines).strip()]


READERS: dict[str, Callable[[Path], list[dict]]] = {
    "jsonl": read_jsonl,
    "json": read_json,
    "wikitext_documents": read_wikitext_documents,
}


def _read_text(path: Path) -> str:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LlamabenchError(
            f"{path} is not UTF-8 text (bad byte at offset {exc.start}); convert it to UTF-8"
        ) from exc
    if not text.strip():
        raise LlamabenchError(f"{path} is empty; point the task at a file with documents")
    return text


def load_documents(source, task_name: str, data_dir: Path | None, *, allow_outside: bool = False) -> list[dict]:
    """The task's documents: ``data_dir / source.local`` when a data dir is given, else the hub dataset.

    ``source.local`` must stay inside ``data_dir`` (no absolute path, no ``..`` or symlink leading out) unless
    ``allow_outside``; for the text formats it may name a file, a folder (every file under it) or a glob.
    """
    if data_dir is not None and source.local:
        files = _local_files(source, task_name, Path(data_dir), allow_outside)
        if source.local_format not in TEXT_FORMATS:
            return READERS[source.local_format](files[0])
        docs = read_text_files(files, source.local_format, Path(data_dir), source.separator)
        if not docs:
            raise LlamabenchError(
                f"task {task_name}: {source.local} holds no documents (its files are empty); "
                "point it at files with text"
            )
        return docs
    if source.hub_path:
        return _load_hub(source, task_name)
    raise LlamabenchError(
        f"task {task_name}: no data directory given; pass --data-dir (or set LLAMABENCH_DATA) to a folder "
        f"containing {source.local}"
    )


def _local_files(source, task_name: str, data_dir: Path, allow_outside: bool) -> list[Path]:
    """The files ``source.local`` names under ``data_dir``, in sorted path order, checked to stay inside it."""
    local = source.local
    if Path(local).is_absolute() and not allow_outside:
        raise LlamabenchError(
            f"task {task_name}: dataset.local {local} is an absolute path; give a path relative to --data-dir, "
            "or pass --allow-data-outside to read it anyway"
        )
    path = data_dir / local
    lexical = Path(os.path.normpath(path.absolute()))
    _check_inside(lexical, Path(os.path.normpath(data_dir.absolute())), local, task_name, allow_outside)
    text_format = source.local_format in TEXT_FORMATS
    if text_format and glob.has_magic(local):
        files = [Path(match) for match in glob.glob(str(path), recursive=True) if Path(match).is_file()]
        if not files:
            raise LlamabenchError(f"task {task_name}: dataset.local {local} matches no files under {data_dir}")
    elif text_format and path.is_dir():
        files = [file for file in path.rglob("*") if file.is_file()]
    elif path.is_file():
        files = [path]
    else:
        raise LlamabenchError(f"task {task_name}: data file {path} not found; --data-dir must contain {local}")
    for file in files:
        _check_inside(file.resolve(), data_dir.resolve(), local, task_name, allow_outside)  # symlinks followed
    return sorted(files, key=lambda file: relative_name(file, data_dir))


def _check_inside(path: Path, data_dir: Path, local: str, task_name: str, allow_outside: bool) -> None:
    if not allow_outside and not path.is_relative_to(data_dir):
        raise LlamabenchError(
            f"task {task_name}: dataset.local {local} leads outside --data-dir {data_dir} (to {path}); keep task "
            "data inside the data dir, or pass --allow-data-outside to read it anyway"
        )


def _load_hub(source, task_name: str) -> list[dict]:
    import datasets

    try:
        dataset = datasets.load_dataset(source.hub_path, source.hub_name, split=source.hub_split)
    except Exception as exc:  # the hub client raises many types when offline or when names are wrong
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LlamabenchError(
            f"task {task_name}: hub dataset {source.hub_path} could not be loaded ({reason}); "
            f"offline? pass --data-dir with {source.local or 'a local copy'}"
        ) from exc
    return [dict(row) for row in dataset]
