"""Plain-text documents for perplexity tasks: one per file (``text``), per non-empty line (``lines``) or per
paragraph (``paragraphs``: split at blank lines, or at a ``separator`` string).

Every record is ``{"text": ..., "doc_id": ..., "path": ...}``. ``path`` is the file relative to the folder the
task reads from (the data dir; the working directory for ``--text``), or absolute when the file lies outside it.
``doc_id`` is ``path`` for ``text`` and ``path:N`` otherwise: N is the 1-based line number for ``lines`` and the
paragraph's 1-based position in its file for ``paragraphs``.

Files are decoded as UTF-8 with universal newlines; a byte-order mark at the start of the file or of any line (left
where files were joined with ``cat``) is dropped, never part of a document, so "\\r\\n" and a lone "\\r" read
as "\\n" in every format; they are read in chunks, never whole, except a ``text`` file, which is one document.
Whitespace-only documents are dropped, so an empty file gives none.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from llamabench.errors import LlamabenchError

TEXT_FIELD = "text"
_CHUNK_CHARS = 1 << 20
BOM = "\ufeff"


def drop_boms(text: str) -> str:
    """``text`` without a byte-order mark at its start or at the start of a line: there it only ever marks where
    a file began (files joined with ``cat``), and a scored document must not hold it."""
    return text.removeprefix(BOM).replace("\n" + BOM, "\n")


def read_text_files(
    files: Sequence[Path], text_format: str, root: Path, separator: str | None = None
) -> list[dict[str, str]]:
    """The documents of ``files``, in the order given, split as ``text_format`` says."""
    split = _SPLITTERS[text_format]
    records = []
    for path in files:
        name = relative_name(path, root)
        for number, text in split(path, separator):
            doc_id = name if text_format == "text" else f"{name}:{number}"
            records.append({TEXT_FIELD: text, "doc_id": doc_id, "path": name})
    return records


def relative_name(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` in POSIX form, or absolute when it is not under ``root``."""
    relative = os.path.relpath(Path(path).absolute(), Path(root).absolute())
    return Path(path).absolute().as_posix() if relative.startswith("..") else Path(relative).as_posix()


def _chunks(path: Path) -> Iterator[str]:
    """The file's text, newlines normalised, in pieces; binary content is refused with the file named."""
    try:
        with open(path, encoding="utf-8-sig", newline=None) as handle:
            while chunk := handle.read(_CHUNK_CHARS):
                if "\x00" in chunk:
                    raise _not_text(path, "it holds NUL bytes")
                yield chunk
    except UnicodeDecodeError as exc:
        raise _not_text(path, f"undecodable byte 0x{exc.object[exc.start]:02x}") from None
    except OSError as exc:
        raise LlamabenchError(f"{path} cannot be read ({exc.strerror}); check its permissions") from exc


def _not_text(path: Path, reason: str) -> LlamabenchError:
    return LlamabenchError(
        f"{path} is not a UTF-8 text file ({reason}); convert it to UTF-8 text, or keep it out of the task's "
        "folder or glob"
    )


def _pieces(path: Path, separator: str) -> Iterator[str]:
    """The file's text split at ``separator``, streamed; the last piece is what follows the last separator."""
    rest = ""
    for chunk in _chunks(path):
        *complete, rest = (rest + chunk).split(separator)
        yield from map(drop_boms, complete)
    yield drop_boms(rest)


def _whole_file(path: Path, separator: str | None) -> Iterator[tuple[int, str]]:
    text = drop_boms("".join(_chunks(path)))
    if text.strip():
        yield 1, text


def _lines(path: Path, separator: str | None) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(_pieces(path, "\n"), start=1):
        if line.strip():
            yield number, line


def _paragraphs(path: Path, separator: str | None) -> Iterator[tuple[int, str]]:
    """Paragraphs without their surrounding line breaks, so a trailing newline or none gives the same ones."""
    if separator is None:
        paragraphs = _blank_line_paragraphs(path)
    else:
        normalised = separator.replace("\r\n", "\n").replace("\r", "\n")
        paragraphs = (piece.strip("\n") for piece in _pieces(path, normalised))
    yield from enumerate((text for text in paragraphs if text.strip()), start=1)


def _blank_line_paragraphs(path: Path) -> Iterator[str]:
    lines: list[str] = []
    for line in _pieces(path, "\n"):
        if line.strip():
            lines.append(line)
        elif lines:
            yield "\n".join(lines)
            lines = []
    if lines:
        yield "\n".join(lines)


_SPLITTERS: dict[str, Callable[[Path, str | None], Iterator[tuple[int, str]]]] = {
    "text": _whole_file,
    "lines": _lines,
    "paragraphs": _paragraphs,
}
