"""Load a task's documents: a local file under the data directory, or the hub for online users."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from llamabench.errors import LlamabenchError

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


def load_documents(source, task_name: str, data_dir: Path | None) -> list[dict]:
    """The task's documents: ``data_dir / source.local`` when a data dir is given, else the hub dataset."""
    if data_dir is not None and source.local:
        path = Path(data_dir) / source.local
        if not path.is_file():
            raise LlamabenchError(
                f"task {task_name}: data file {path} not found; --data-dir must contain {source.local}"
            )
        return READERS[source.local_format](path)
    if source.hub_path:
        return _load_hub(source, task_name)
    raise LlamabenchError(
        f"task {task_name}: no data directory given; pass --data-dir (or set LLAMABENCH_DATA) to a folder "
        f"containing {source.local}"
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
