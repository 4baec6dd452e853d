"""Content fingerprints of checkpoints: a hash over every byte that can change a number.

What is hashed:

- a GGUF checkpoint: its one file;
- a model folder: every regular file at its top level (weights, ``config.json``, ``generation_config.json``,
  tokenizer files, chat template, remote code), except what changes no number: hidden files, ``*.md``,
  licences, and the training state a ``Trainer`` saves beside the weights (``optimizer.pt``,
  ``scheduler.pt``, ``rng_state*.pth``, ``scaler.pt``, ``trainer_state.json``, ``training_args.bin``);
  plus what transformers reads below the top level: every weight file a shard index (``*.index.json``)
  names, wherever it lies, and the sub-folders ``additional_chat_templates/`` and ``custom_generate/``.
  Other sub-folders (a Trainer's ``checkpoint-*``, logs) are not read, as transformers does not read them.

The fingerprint is blake3 over each file's name (relative to the folder) and blake3 digest, so the same
bytes in another folder give the same fingerprint, and one changed byte anywhere gives another.

Hashing every byte of a 140 GB checkpoint takes minutes, so each file's digest is memoised in SQLite,
keyed by the file's resolved path, size, modification and change times and inode: an unchanged file is
hashed once. Rewriting a file in place changes its change time (which users cannot set), so the memo
never serves a stale digest for a rewritten file. On file systems with coarse timestamps a file rewritten
within the same tick would keep them all, so (as git does for "racy" index entries) a file changed less
than :data:`SETTLE_SECONDS` ago is hashed but not memoised.

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
        files |= {folder / name for name in _indexed_files(index) if not Path(name).is_absolute()}
    files = {file for file in files if file.is_file()}
    return sorted(files)


def _indexed_files(index: Path) -> set[str]:
    """The weight files a shard index maps tensors to (relative to its folder); none if it is not an index."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
    except (OSError, ValueError, AttributeError):
        return set()
    return {name for name in weight_map.values() if isinstance(name, str) and ".." not in Path(name).parts}


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
        key = (str(real), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
        found = self._lookup(key)
        if found is not None:
            return found
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        if info.st_size:
            hasher.update_mmap(str(real))
        digest = hasher.hexdigest()
        if time.time() - max(info.st_mtime, info.st_ctime) >= SETTLE_SECONDS:
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


def fingerprint_files(root: Path, files: Iterable[Path], memo: DigestMemo | None = None) -> str:
    """blake3 over each file's name relative to ``root`` and its content digest."""
    memo = memo or DigestMemo(None)
    combined = blake3.blake3()
    for file in files:
        name = Path(file).relative_to(root).as_posix()
        combined.update(f"{name}\0{memo.digest(Path(file))}\n".encode())
    return combined.hexdigest()[:FINGERPRINT_HEX]
