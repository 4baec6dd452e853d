"""Content fingerprints of checkpoints: a hash over every byte that can change a number.

What is hashed:

- a GGUF checkpoint: its one file;
- a model folder: every regular file at its top level (weights, ``config.json``, ``generation_config.json``,
  tokenizer files, chat template, remote code), except what changes no number: hidden files, ``*.md``,
  licences, and the training state a ``Trainer`` saves beside the weights (``optimizer.pt``,
  ``scheduler.pt``, ``rng_state*.pth``, ``scaler.pt``, ``trainer_state.json``, ``training_args.bin``);
  plus what transformers reads below the top level: every weight file a shard index (``*.index.json``)
  names, wherever it lies (outside the folder too: transformers joins the name to the folder and reads it), and
  the sub-folders ``additional_chat_templates/`` and ``custom_generate/``. A symlink counts by its target's bytes.
  Other sub-folders (a Trainer's ``checkpoint-*``, logs) are not read, as transformers does not read them.

The fingerprint is blake3 over each file's name (relative to the folder) and blake3 digest, so the same
bytes in another folder give the same fingerprint, and one changed byte anywhere gives another.

A model's fingerprint hashes every byte each time (``model_source.pin``), never from a memo: bytes written through
a shared memory map (``mmap`` with ``MAP_SHARED``) to a page already dirty move no time stamp, and time stamps can be
restored, so no (size, time, inode) key can vouch for a weight file's bytes. blake3 runs on every core
(``bench/fingerprint_speed.py`` measures it), about what reading the file costs anyway; the weights in use are
hashed again while a run holds them (``Backend.verify_identity``).

:class:`DigestMemo` keeps per-file digests in SQLite, keyed by the file's resolved path, size, modification and
change times and inode, for files read once and whole (the contamination scan's corpus). A file changed less
than :data:`SETTLE_SECONDS` ago (as git does for "racy" index entries) or whose stat changed while it was being
hashed is not memoised.

Example::

    >>> fingerprint_files(Path("ckpt"), [Path("ckpt/config.json"), Path("ckpt/model.safetensors")])
    'c0f1...'  # 32 hex digits
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

import blake3

FINGERPRINT_HEX = 32
# A file changed this recently may change again within its timestamps' resolution: never memoise its digest.
SETTLE_SECONDS = 3.0
# Files a training run writes beside the weights that change no number the model computes.
_NOT_MODEL = re.compile(
    r"^(optimizer|scheduler|scaler|rng_state.*)\.(pt|pth|bin)$|^trainer_state\.json$|^training_args\.bin$"
    r"|^LICEN[CS]E.*|.*\.md$|^\..*",
    re.IGNORECASE,
)


# Sub-folders whose files transformers reads when loading a model folder.
_READ_SUBFOLDERS = ("additional_chat_templates", "custom_generate")


def model_files(folder: Path) -> list[Path]:
    """The files of a model folder whose bytes can change its numbers, sorted by path."""
    folder = Path(folder)
    files = {p for p in folder.iterdir() if p.is_file() and not _NOT_MODEL.match(p.name)}
    for sub in _READ_SUBFOLDERS:
        files |= {p for p in (folder / sub).rglob("*") if p.is_file()} if (folder / sub).is_dir() else set()
    for index in [p for p in files if p.name.endswith(".index.json")]:
        # transformers joins each name to the folder, so "../x" and "/abs/x" are read too: they count.
        files |= {Path(os.path.normpath(folder / name)) for name in _indexed_files(index)}
    files = {file for file in files if file.is_file()}
    return sorted(files)


def _indexed_files(index: Path) -> set[str]:
    """The weight files a shard index maps tensors to (relative to its folder); none if it is not an index."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
    except (OSError, ValueError, AttributeError):
        return set()
    return {name for name in weight_map.values() if isinstance(name, str) and name}


def file_states(files: Iterable[Path]) -> tuple:
    """What each file is on disk now: its path, and its target's size, modification and change times, inode and
    device. Any write, ``os.utime`` or replacement of a file changes its entry (the change time moves), so equal
    states taken before and after reading the files mean the reads saw one version of them."""
    states = []
    for file in files:
        try:
            states.append(_state(file, os.stat(file)))
        except OSError:
            states.append((str(file), None))  # gone: differs from any state it had
    return tuple(states)


def _state(file: Path, info: os.stat_result) -> tuple:
    return (str(file), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev)


class DigestMemo:
    """Per-file blake3 digests in an SQLite table, keyed by the file's identity on disk.

    A memo that cannot be opened or written (read-only or full disk) is skipped: files are hashed anew.
    """

    def __init__(self, path: Path | None):
        self._db: sqlite3.Connection | None = None
        if path is None:
            return
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=60)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS file_digests (path TEXT, size INTEGER, mtime_ns INTEGER, "
                "ctime_ns INTEGER, inode INTEGER, digest TEXT NOT NULL, PRIMARY KEY (path, size, mtime_ns, "
                "ctime_ns, inode))"
            )
        except (OSError, sqlite3.Error):
            self._db = None

    def digest(self, file: Path) -> str:
        """blake3 hex digest of ``file``'s bytes, from the memo when the file is unchanged since it was hashed."""
        real = Path(os.path.realpath(file))
        info = real.stat()
        key = _key(real, info)
        found = self._lookup(key)
        if found is not None:
            return found
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        if info.st_size:
            hasher.update_mmap(str(real))
        digest = hasher.hexdigest()
        settled = time.time() - max(info.st_mtime, info.st_ctime) >= SETTLE_SECONDS
        if settled and file_states([real]) == (_state(real, info),):  # unchanged while it was hashed
            self._store(key, digest)
        return digest

    def _lookup(self, key: tuple) -> str | None:
        if self._db is None:
            return None
        try:
            row = self._db.execute(
                "SELECT digest FROM file_digests WHERE path=? AND size=? AND mtime_ns=? AND ctime_ns=? AND inode=?",
                key,
            ).fetchone()
        except sqlite3.Error:
            return None
        return row[0] if row else None

    def _store(self, key: tuple, digest: str) -> None:
        if self._db is None:
            return
        try:
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO file_digests VALUES (?, ?, ?, ?, ?, ?)", (*key, digest))
        except sqlite3.Error:
            self._db = None  # a full or read-only disk: keep hashing, stop memoising


def _key(real: Path, info: os.stat_result | None = None) -> tuple:
    """The memo key of a resolved file: path, size, modification and change times, inode."""
    info = info or real.stat()
    return (str(real), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)


def fingerprint_files(root: Path, files: Iterable[Path], memo: DigestMemo | None = None) -> str:
    """blake3 over each file's name relative to ``root`` (``../x`` for one outside it) and its content digest."""
    memo = memo or DigestMemo(None)
    combined = blake3.blake3()
    for file in files:
        name = Path(os.path.relpath(file, root)).as_posix()
        combined.update(f"{name}\0{memo.digest(Path(file))}\n".encode())
    return combined.hexdigest()[:FINGERPRINT_HEX]
