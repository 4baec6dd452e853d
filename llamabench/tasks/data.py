"""Load a task's documents: a local file under the data directory, or the hub for online users."""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from llamabench.config import TEXT_FORMATS
from llamabench.errors import LlamabenchError, network_advice
from llamabench.tasks.text_readers import drop_boms, read_text_files, relative_name

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
        refuse_surrogates(row, f"{path}: document {len(rows) + 1} (line {number})")
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
    for number, row in enumerate(data, start=1):
        refuse_surrogates(row, f"{path}: document {number}")
    return data


_SURROGATE = re.compile("[\ud800-\udfff]")


def refuse_surrogates(record: dict, where: str) -> None:
    """Refuse a record holding a lone surrogate (JSON allows ``"\\ud800"``; it is no character): it could not
    be tokenised or written, and would surface only after the model has run."""
    field = _surrogate_field(record)
    if field is not None:
        raise LlamabenchError(
            f"{where}, field '{field}', holds a lone surrogate (an unpaired \\ud800-\\udfff escape), which is not "
            "text; fix that value in the data"
        )


def _surrogate_field(value, path: str = "") -> str | None:
    """The dotted path of the first text under ``value`` (keys included) holding a lone surrogate, or None."""
    if isinstance(value, str):
        return path or "(the value)" if _SURROGATE.search(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and _SURROGATE.search(key):
                return name
            if (found := _surrogate_field(item, name)) is not None:
                return found
    if isinstance(value, list | tuple):
        for number, item in enumerate(value):
            if (found := _surrogate_field(item, f"{path}[{number}]")) is not None:
                return found
    return None


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
    return drop_boms(text)


def load_documents(
    source, task_name: str, data_dir: Path | None, *, allow_outside: bool = False, named_by: str = "dataset.local"
) -> list[dict]:
    """The task's documents: ``data_dir / source.local`` when a data dir is given, else the hub dataset.

    Every source stays inside ``data_dir`` (no absolute path, no ``..`` or symlink leading out) unless
    ``allow_outside``: ``source.local``, and a ``hub.path`` that names a local folder or file (which the
    ``datasets`` library would read from the disk). For the text formats ``local`` may name a file, a folder
    (every file under it) or a glob pattern. ``named_by`` is how errors name the path: the task key, or
    ``--text`` for the user's own path.
    """
    if source.shipped:
        return READERS[source.local_format](_shipped_file(source.shipped, task_name))
    if data_dir is not None and source.local:
        files = _local_files(source, task_name, Path(data_dir), allow_outside, named_by)
        if source.local_format not in TEXT_FORMATS:
            return READERS[source.local_format](files[0])
        docs = read_text_files(files, source.local_format, Path(data_dir).resolve(), source.separator)
        if not docs:
            raise LlamabenchError(
                f"task {task_name}: {source.local} holds no documents (its files are empty); "
                "point it at files with text"
            )
        return docs
    if source.hub_path:
        _check_hub_path(source.hub_path, task_name, data_dir, allow_outside)
        return _load_hub(source, task_name)
    raise LlamabenchError(
        f"task {task_name}: no data directory given and the task has no hub source; pass --data-dir (or set "
        f"LLAMABENCH_DATA) to a folder containing {source.local}"
    )


def builtin_tasks_dir() -> Path:
    """The repository's ``builtin_tasks/`` folder (installed as ``llamabench/builtin_tasks`` in a wheel)."""
    here = Path(__file__).resolve().parents[1]
    for candidate in (here.parent / "builtin_tasks", here / "builtin_tasks"):
        if candidate.is_dir():
            return candidate
    raise LlamabenchError("built-in tasks folder not found; reinstall llamabench")


def samples_dir() -> Path:
    """The folder of the data samples shipped inside llamabench (``builtin_tasks/samples/``)."""
    return builtin_tasks_dir() / "samples"


def _shipped_file(shipped: str, task_name: str) -> Path:
    """The shipped sample file ``shipped`` names; only files inside the samples folder are shipped."""
    root = samples_dir().resolve()
    path = (root / shipped).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise LlamabenchError(
            f"task {task_name}: dataset.shipped {shipped} is not a sample shipped with llamabench (they are the "
            f"files under {root}); give your own data as dataset.local under --data-dir"
        )
    return path


def describe_source(source, data_dir: Path | None, documents: int) -> str:
    """Where a task's documents came from, in words, for the one line a run prints about its data."""
    if source.shipped:
        return f"shipped sample ({documents} documents)"
    if data_dir is not None and source.local:
        return f"{Path(data_dir) / source.local} ({documents} documents)"
    if source.hub_path:
        return f"hub dataset {source.hub_path} ({documents} documents)"
    return f"{documents} documents"


def _local_files(source, task_name: str, data_dir: Path, allow_outside: bool, named_by: str) -> list[Path]:
    """The files ``source.local`` names under ``data_dir``, in sorted path order, checked to stay inside it.

    A path that exists is read as that file or folder, even when its name holds glob characters (``a[1].txt``,
    ``*.txt``); it is a glob pattern only when nothing has that name. Hidden files and folders below a named folder
    are skipped, as a glob's wildcards skip them; named explicitly (or by a pattern part starting with ".") they
    are read. Files are named by their real path (symlinks
    followed) relative to the real data dir, and each is read once, so one folder named several ways (``data/``,
    ``./data``, absolute, through a symlink) gives the same documents with the same ids.
    """
    local = source.local
    label = f"{named_by} {local}"
    if Path(local).is_absolute() and not allow_outside:
        raise LlamabenchError(
            f"task {task_name}: {label} is an absolute path; give a path relative to --data-dir, "
            "or pass --allow-data-outside to read it anyway"
        )
    # Read as spelled after lexical normalisation (`a/../b` is `b`, as the check below sees it), so a `..` cannot
    # climb through a symlinked folder to somewhere the check did not look.
    path = Path(os.path.normpath(data_dir.absolute() / local))
    _check_inside(path, Path(os.path.normpath(data_dir.absolute())), label, task_name, allow_outside)
    text_format = source.local_format in TEXT_FORMATS
    if path.exists():
        files = _visible_files(path) if text_format and path.is_dir() else [path]
    elif text_format and glob.has_magic(local):  # a wildcard does not match a hidden name, as in a shell
        files = [Path(match) for match in glob.glob(str(path), recursive=True) if Path(match).is_file()]
    else:
        files = []
    if not files or (not text_format and not files[0].is_file()):
        raise _not_found(task_name, local, named_by, data_dir, text_format and glob.has_magic(local))
    root = data_dir.resolve()
    real = {file.resolve(): None for file in files}  # a file and a symlink to it are one file: read once
    for file in real:
        _check_inside(file, root, label, task_name, allow_outside)  # symlinks followed
    return sorted(real, key=lambda file: relative_name(file, root))


def _visible_files(folder: Path) -> list[Path]:
    """Every file under ``folder`` but the hidden ones (a name, of the file or a folder between, starting with
    "."): the files a glob over the folder (``folder/**``) matches, so both give the same documents."""
    return [
        file
        for file in folder.rglob("*")
        if file.is_file() and not any(part.startswith(".") for part in file.relative_to(folder).parts)
    ]


def _not_found(task_name: str, local: str, named_by: str, data_dir: Path, pattern: bool) -> LlamabenchError:
    what = "matches no files" if pattern else "not found"
    if named_by == "--text":  # the user's own path, read relative to the working directory: no data dir involved
        return LlamabenchError(f"--text {local} {what} (paths are read relative to the working directory {Path.cwd()})")
    if pattern:
        return LlamabenchError(f"task {task_name}: {named_by} {local} matches no files under --data-dir {data_dir}")
    return LlamabenchError(
        f"task {task_name}: data file {data_dir / local} not found; --data-dir must contain {local} ({named_by})"
    )


def _check_inside(path: Path, data_dir: Path, label: str, task_name: str, allow_outside: bool) -> None:
    if not allow_outside and not path.is_relative_to(data_dir):
        raise LlamabenchError(
            f"task {task_name}: {label} leads outside --data-dir {data_dir} (to {path}); keep task "
            "data inside the data dir, or pass --allow-data-outside to read it anyway"
        )


def _check_hub_path(hub_path: str, task_name: str, data_dir: Path | None, allow_outside: bool) -> None:
    """``datasets.load_dataset`` reads some ``path`` values from the disk, not the hub: a path that exists
    (relative to the working directory), and the name of one of its file readers (``json``, ``csv``, ``text``,
    ``parquet``...), which with no data files given reads the matching files of the working directory. Such a
    source is data like ``dataset.local`` and must stay inside ``--data-dir``."""
    if allow_outside:
        return
    label = f"dataset.hub.path {hub_path}"
    if hub_path in _file_readers():
        raise LlamabenchError(
            f"task {task_name}: {label} is a datasets file reader, which would read files from the working "
            "directory; give local data as dataset.local under --data-dir (format: json or jsonl), or pass "
            "--allow-data-outside to read it anyway"
        )
    local = Path(hub_path)
    if not local.exists():
        return
    if data_dir is None:
        raise LlamabenchError(
            f"task {task_name}: {label} names a local folder or file, not a hub dataset; put local data under "
            "--data-dir and name it with dataset.local, or pass --allow-data-outside to read it anyway"
        )
    _check_inside(local.resolve(), Path(data_dir).resolve(), label, task_name, allow_outside)


def _file_readers() -> frozenset[str]:
    """The ``datasets`` builders that read local files (``json``, ``csv``, ``text``, ...); none without it."""
    try:
        from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES
    except ImportError:  # no datasets (or another layout): the load below reports what is missing
        return frozenset({"arrow", "csv", "json", "pandas", "parquet", "text", "webdataset", "xml"})
    return frozenset(_PACKAGED_DATASETS_MODULES)


def _load_hub(source, task_name: str) -> list[dict]:
    import datasets

    try:
        dataset = datasets.load_dataset(source.hub_path, source.hub_name, split=source.hub_split)
    except Exception as exc:  # the hub client raises many types when offline or when names are wrong
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise LlamabenchError(
            f"task {task_name}: hub dataset {source.hub_path} could not be loaded ({reason}); {network_advice()}"
            + (f"; under --data-dir the task reads {source.local}" if source.local else "")
        ) from exc
    rows = [dict(row) for row in dataset]
    for number, row in enumerate(rows, start=1):
        refuse_surrogates(row, f"task {task_name}: hub dataset {source.hub_path}: document {number}")
    return rows
