"""Streaming the corpus once through the evaluation samples' index, on every local core.

The parent builds the :class:`~llamabench.contamination.criterion.SampleIndex` (the samples' windows: small) and
cuts the corpus into units (``corpus.py``); worker processes (``spawn``ed, each holding the index and the
tokenizer) read, tokenise and match one unit at a time and send back only what they found: per sample, the
spans it matched and its longest span with where it lies. Memory is the index plus one unit per worker,
whatever the corpus size. ``workers=1`` scans in this process.

On Ray (``--ray ADDRESS``, ``local`` starts a cluster here), one actor per free CPU of the cluster holds the
same worker state (the index goes to the object store once) and the units are mapped over the actors in corpus
order: :func:`scan_unit` is a pure function of a unit, so the findings, merged in the same order, are those of one
process. The corpus paths must be readable on every node (a shared file system).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llamabench.contamination import corpus
from llamabench.contamination.corpus import Unit, record_text
from llamabench.contamination.criterion import SampleIndex, Span
from llamabench.errors import LlamabenchError


@dataclass(frozen=True)
class Location:
    """Where a span was found: the file, the record (JSONL: the byte offset of its line; Parquet: its row; None in
    a text file), and the offset (text file: of the span's first byte in the file; a record: of its first
    character in the record's text)."""

    file: str
    record: int | None
    offset: int


@dataclass
class Findings:
    """What a scan found: per sample, its grown spans (``(start, end, exact)``, :attr:`Span.key`: each minimum
    length takes those that :meth:`SampleIndex.holds`), and per sample and minimum length its longest span (in
    counted tokens) and where."""

    spans: dict[int, set[tuple[int, int, int]]] = field(default_factory=dict)
    longest: dict[tuple[int, int], tuple[int, Location]] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)  # tokens scanned, per corpus file

    def merge(self, other: Findings) -> Findings:
        """Add ``other`` (found later in corpus order: on equal lengths the earlier location is kept)."""
        for sample, spans in other.spans.items():
            self.spans.setdefault(sample, set()).update(spans)
        for key, (length, where) in other.longest.items():
            if key not in self.longest or length > self.longest[key][0]:
                self.longest[key] = (length, where)
        for file, count in other.tokens.items():
            self.tokens[file] = self.tokens.get(file, 0) + count
        return self


# Bytes a unit reaches back beyond the longest passage that could match: room for the tokenizer's context, so the
# tokens of any matching passage are those of the whole file, wherever the cut falls.
CONTEXT_BYTES = 1024

_STATE: dict = {}


def init_worker(tokenizer_json: str, index: SampleIndex, field_name: str) -> None:
    """A worker's state: the tokenizer, the index and the record field. Tokenisation stays on this core."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    _STATE.update(tokenizer=Tokenizer.from_str(tokenizer_json), index=index, field=field_name)


def scan_unit(unit: Unit) -> Findings:
    """Match one unit against the index (worker state from :func:`init_worker`)."""
    texts, records = _read(unit, _STATE["field"])
    encodings = _STATE["tokenizer"].encode_batch(texts, add_special_tokens=False)
    index: SampleIndex = _STATE["index"]
    found = Findings(tokens={unit.path: 0})
    for text, record, encoding in zip(texts, records, encodings, strict=True):
        tokens = np.asarray(encoding.ids, dtype=np.int64)
        longest: dict[tuple[int, int], Span] = {}
        for span in index.spans(tokens):
            found.spans.setdefault(span.sample, set()).add(span.key)
            for length in index.lengths:
                key = (span.sample, length)
                if index.holds(span.key, length) and (key not in longest or span.length > longest[key].length):
                    longest[key] = span
        overlapped = unit.format == "text" and unit.counted_from > unit.start
        # ``encoding.offsets`` builds a list of every token's offsets on each access: once, and only when needed.
        offsets = encoding.offsets if longest or overlapped else []
        found.tokens[unit.path] += _counted(unit, text, offsets) if overlapped else len(tokens)
        chars = {key: offsets[span.corpus_pos][0] for key, span in longest.items()}
        places = _byte_offsets(text, sorted(set(chars.values()))) if unit.format == "text" else {}
        for key, span in longest.items():
            if unit.format == "text":
                where = Location(unit.path, None, unit.start + places[chars[key]])
            else:
                where = Location(unit.path, record, chars[key])
            found.merge(Findings(longest={key: (span.length, where)}))
    return found


def _counted(unit: Unit, text: str, offsets: list[tuple[int, int]]) -> int:
    """Tokens of a text unit's ``text`` past the overlap that the previous unit read too."""
    skip_chars = len(text.encode()[: unit.counted_from - unit.start].decode(errors="ignore"))
    return sum(1 for start, _ in offsets if start >= skip_chars)


def _byte_offsets(text: str, chars: list[int]) -> dict[int, int]:
    """The UTF-8 byte offset in ``text`` of each character offset in ``chars`` (sorted): one pass over the text."""
    places, done, position = {}, 0, 0
    for char in chars:
        done += len(text[position:char].encode())
        places[char], position = done, char
    return places


def _read(unit: Unit, field_name: str) -> tuple[list[str], list[int | None]]:
    """The texts of a unit, and each one's record (see :class:`Location`)."""
    if unit.format == "parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(unit.path)
        first_row = sum(parquet.metadata.row_group(g).num_rows for g in range(unit.start))
        column = parquet.read_row_group(unit.start, columns=[field_name]).column(0).to_pylist()
        rows = [(first_row + i, value) for i, value in enumerate(column) if value]
        if any(not isinstance(value, str) for _, value in rows):
            raise LlamabenchError(f"--corpus {unit.path}: column '{field_name}' is not text; pass --field NAME")
        return [value for _, value in rows], [row for row, _ in rows]
    with open(unit.path, "rb") as handle:
        handle.seek(unit.start)
        data = handle.read(unit.end - unit.start)
    if unit.format == "text":
        try:
            return [data.decode()], [None]
        except UnicodeDecodeError:
            raise LlamabenchError(
                f"--corpus {unit.path} is not UTF-8 text (bad bytes near offset {unit.start}); convert it to UTF-8"
            ) from None
    texts, records, offset = [], [], unit.start
    for line in data.splitlines(keepends=True):
        text = record_text(line, field_name, unit.path, offset)
        if text:
            texts.append(text)
            records.append(offset)
        offset += len(line)
    return texts, records


def overlap_bytes(forms: list[str], skip_budget: int, tokenizer_json: str, context_bytes: int = CONTEXT_BYTES) -> int:
    """How far a text unit reaches back into the one before it: the most bytes a matching corpus passage can take
    (the longest form, with ``skip_budget`` of its tokens replaced by the vocabulary's longest), plus
    ``context_bytes``. Every matching passage then lies whole in some unit, past its cut context."""
    from tokenizers import Tokenizer

    longest_token = max(len(token.encode()) for token in Tokenizer.from_str(tokenizer_json).get_vocab())
    return max(len(form.encode()) for form in forms) + skip_budget * longest_token + context_bytes


def scan_corpus(
    files: list[Path],
    forms: list[str],
    tokenizer_json: str,
    index: SampleIndex,
    field_name: str,
    workers: int = 1,
    *,
    unit_bytes: int = corpus.UNIT_BYTES,
    context_bytes: int = CONTEXT_BYTES,
    ray: str | None = None,
) -> tuple[Findings, int]:
    """``files`` cut into units (overlapping by :func:`overlap_bytes` of the sample ``forms``) and matched against
    ``index`` on ``workers`` processes, or on the Ray cluster ``ray``; the findings and the number of units."""
    overlap = overlap_bytes(forms, index.skip_budget, tokenizer_json, context_bytes)
    work = [unit for file in files for unit in corpus.units(file, overlap, unit_bytes)]
    return scan(work, tokenizer_json, index, field_name, workers, ray=ray), len(work)


def scan(
    units: list[Unit], tokenizer_json: str, index: SampleIndex, field_name: str, workers: int, ray: str | None = None
) -> Findings:
    """Every unit matched against ``index`` on ``workers`` processes (or Ray), the findings merged in corpus order."""
    total = Findings()
    results = _ray_results if ray is not None else _results
    for found in results(units, tokenizer_json, index, field_name, ray if ray is not None else workers):
        total.merge(found)
    return total


def _results(units: list[Unit], tokenizer_json: str, index: SampleIndex, field_name: str, workers: int) -> Iterator:
    if workers <= 1 or len(units) <= 1:
        init_worker(tokenizer_json, index, field_name)
        yield from map(scan_unit, units)
        return
    context = multiprocessing.get_context("spawn")  # a forked tokenizer's thread pool could deadlock
    with context.Pool(min(workers, len(units)), init_worker, (tokenizer_json, index, field_name)) as pool:
        yield from pool.imap(scan_unit, units)


class UnitScanner:
    """A Ray actor (made one on use) holding a worker's state and scanning the units it is given."""

    def __init__(self, tokenizer_json: str, index: SampleIndex, field_name: str):
        init_worker(tokenizer_json, index, field_name)

    def scan(self, unit: Unit) -> Findings:
        return scan_unit(unit)


def _ray_results(units: list[Unit], tokenizer_json: str, index: SampleIndex, field_name: str, address: str):
    """The units' findings in corpus order, from one :class:`UnitScanner` per free CPU of the cluster."""
    from llamabench.scale.ray_backend import connect, import_ray

    ray = import_ray()
    connect(address)
    from ray.util import ActorPool

    if not units:
        return
    slots = max(1, int(ray.available_resources().get("CPU", 1)))
    scanner = ray.remote(num_cpus=1)(UnitScanner)
    shared = ray.put(index)
    actors = [scanner.remote(tokenizer_json, shared, field_name) for _ in range(min(slots, len(units)))]
    try:
        yield from ActorPool(actors).map(lambda actor, unit: actor.scan.remote(unit), units)
    finally:  # the actors hold the cluster's CPUs: give them back, in a long-lived driver too
        for actor in actors:
            ray.kill(actor)


def file_digest(path: Path) -> str:
    """The blake3 digest of a corpus file's bytes (memoised by the checkpoint fingerprints' digest memo)."""
    from llamabench.backends.loading.cache_dir import CACHE_DB, cache_root
    from llamabench.backends.loading.fingerprint import DigestMemo

    return DigestMemo(cache_root() / CACHE_DB).digest(path)
