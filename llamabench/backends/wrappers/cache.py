"""Resume support: every finished request result is persisted in SQLite once the backend's identity is checked
after it.

A run killed at any point and started again with the same command recomputes only the requests
whose results were not yet stored. The backend reports each executed batch through ``on_done``, so
batches are as large as its token budget allows. Keys cover the model's content fingerprint, the
settings that change numbers (dtype, context length, device type) and the request itself.

A result is stored only under the identity that computed it: finished batches wait in memory until a
:meth:`~llamabench.backends.base.Backend.verify_identity` after them agrees, which runs at the end of every call
and, within a call, once the time since the last check is :data:`CHECK_RATIO` times what that check took (so
checks cost at most about 1/CHECK_RATIO of the run, and a cheap check, a server's probe, runs after nearly every
batch). A kill loses the batches since the last check; a check that fails drops them and stops the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import astuple
from numbers import Real
from pathlib import Path

from tqdm.auto import tqdm

from llamabench.backends.base import Backend, BackendWrapper, IdentityChanged, OnDone
from llamabench.errors import LlamabenchError, first_line, note, warn
from llamabench.escaping import terminal
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, Request, RollingRequest

# Where a corrupt cache is moved by --refresh (with its -wal and -shm files, which would otherwise be replayed
# into the new one): kept, not deleted, so the damage can be looked at.
CORRUPT_SUFFIX = ".corrupt"
# Within a call, the backend's identity is checked again once the time since the last check is this many times what
# that check took: checks cost at most about a tenth of the run, however expensive (hashing a 140 GB checkpoint)
# or cheap (one probe request) they are.
CHECK_RATIO = 10


class RequestCache:
    """A key → JSON value table in one SQLite file, safe to share between processes.

    The file is checked when opened, before any model loads: a corrupt one fails in one line naming it and the
    fix, or with ``rebuild`` (``--refresh``) is moved aside and started anew. One connection serves every thread
    of the process (``--ray`` evaluates checkpoints in parallel threads), one call at a time."""

    def __init__(self, path: Path, *, rebuild: bool = False):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            if not rebuild:
                raise self._corrupt(exc) from exc
            self._move_aside()
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        except sqlite3.OperationalError as exc:  # locked, read-only or unreachable: not the file's content
            raise LlamabenchError(f"request cache {self.path} cannot be opened ({exc}); use --no-cache") from exc
        except OSError as exc:
            raise LlamabenchError(f"request cache {self.path} cannot be opened ({exc}); use --no-cache") from exc
        columns = [row[1] for row in db.execute("PRAGMA table_info(results)")]
        if columns[:2] != ["key", "value"]:
            raise sqlite3.DatabaseError(f"its results table has columns {columns}, not key and value")
        # quick_check reads every page once (about a second per GB): damage shows now, not after the model loads.
        problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(problems))
        return db

    def _corrupt(self, exc: BaseException) -> LlamabenchError:
        return LlamabenchError(
            f"request cache {self.path} is corrupt ({first_line(exc, limit=200)}); rebuild it with --refresh "
            "(it moves the file aside and recomputes), or run without it with --no-cache"
        )

    def _move_aside(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            file = Path(f"{self.path}{suffix}")
            if file.exists():
                os.replace(file, Path(f"{self.path}{CORRUPT_SUFFIX}{suffix}"))
        note(f"request cache {self.path} was corrupt: moved to {self.path}{CORRUPT_SUFFIX}, starting a new one")

    def get_many(self, keys: Sequence[str]) -> dict[str, object]:
        """The stored values of ``keys`` that are there; a value that is not JSON is left out (computed again)."""
        found: dict[str, object] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            return self._get_many(unique, found)

    def _get_many(self, unique: list[str], found: dict[str, object]) -> dict[str, object]:
        try:
            for start in range(0, len(unique), 500):
                part = unique[start : start + 500]
                marks = ",".join("?" * len(part))
                for key, value in self._db.execute(f"SELECT key, value FROM results WHERE key IN ({marks})", part):
                    try:
                        found[key] = json.loads(value)
                    except (TypeError, ValueError):
                        continue
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as exc:  # damaged after it was opened
            raise self._corrupt(exc) from exc
        return found

    def put_many(self, items: dict[str, object]) -> bool:
        """Store ``items``; False (nothing stored) when the disk is full or read-only, so a run goes on uncached."""
        try:
            with self._lock, self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)",
                    [(key, json.dumps(value)) for key, value in items.items()],
                )
        except (OSError, sqlite3.OperationalError) as exc:
            warn(f"request cache {self.path} cannot store results ({exc}); this run continues without caching")
            return False
        except sqlite3.DatabaseError as exc:  # damaged after it was opened
            raise self._corrupt(exc) from exc
        return True

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]


class CachedBackend(BackendWrapper):
    """Wraps a backend: serves stored results, computes the rest in one call and stores each batch as it finishes."""

    def __init__(self, inner: Backend, cache: RequestCache, *, refresh: bool = False):
        if inner.fingerprint == Backend.fingerprint:
            raise LlamabenchError(f"model {inner.model_id} has no content fingerprint, so its results cannot be cached")
        super().__init__(inner)
        self.cache = cache
        self.refresh = refresh
        self.hits = 0
        self.computed = 0
        self.storing = True  # until the cache's disk fails: then the run carries on, uncached
        self.unchecked: dict[str, object] = {}  # computed, held back until a check of the identity after them agrees
        self.checked_at = time.monotonic()
        self.check_seconds = 0.0  # what the last check took
        inner.progress = False  # this wrapper's bar counts requests, stored ones included

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, bool]]:
        return [tuple(r) for r in self._cached("loglikelihood", requests, self.inner.loglikelihood, on_done)]

    def loglikelihood_rolling(
        self, requests: Sequence[RollingRequest], on_done: OnDone | None = None
    ) -> list[tuple[float, int]]:
        return [tuple(r) for r in self._cached("rolling", requests, self.inner.loglikelihood_rolling, on_done)]

    def generate(self, requests: Sequence[GenerationRequest], on_done: OnDone | None = None) -> list[str]:
        return self._cached("generate", requests, self.inner.generate, on_done)

    def statistics(self) -> dict:
        return {
            **self.inner.statistics(),
            "cache": {
                "path": str(self.cache.path),
                "hits": self.hits,
                "computed": self.computed,
                "refresh": self.refresh,
                "stored": self.storing,
            },
        }

    def verify_identity(self) -> None:
        """Check the backend's identity (:meth:`Backend.verify_identity`); store the results held back if it agrees,
        drop them if it does not (and raise)."""
        started = time.monotonic()
        try:
            self.inner.verify_identity()
        except IdentityChanged:
            self.unchecked.clear()
            raise
        self.checked_at = time.monotonic()
        self.check_seconds = self.checked_at - started
        if self.storing and self.unchecked:
            self.storing = self.cache.put_many(self.unchecked)
        self.unchecked.clear()

    def _check_due(self) -> bool:
        return time.monotonic() - self.checked_at >= CHECK_RATIO * self.check_seconds

    @staticmethod
    def _key(identity: str, kind: str, request: Request) -> str:
        """A request's key: the backend's cache identity (every setting it decided), the call and the request."""
        return hashlib.sha256(json.dumps([identity, kind, astuple(request)]).encode()).hexdigest()

    def _cached(
        self, kind: str, requests: Sequence[Request], compute: Callable[..., list], on_done: OnDone | None
    ) -> list:
        identity = self.inner.cache_identity()  # once per call: it reads the backend's settings
        keys = [self._key(identity, kind, request) for request in requests]
        stored = {} if self.refresh else self.cache.get_many(keys)
        found = {key: value for key, value in stored.items() if _well_formed(kind, value)}  # the rest: recomputed
        missing = {key: request for key, request in zip(keys, requests, strict=True) if key not in found}
        self.hits += sum(key in found for key in keys)
        pending = list(missing)  # the repeated request is computed once
        positions: dict[str, list[int]] = {}
        for index, key in enumerate(keys):
            positions.setdefault(key, []).append(index)

        def report(done: list[str]) -> None:
            if on_done is not None:
                indices = [(index, key) for key in done for index in positions[key]]
                on_done([index for index, _ in indices], [found[key] for _, key in indices])

        def store(done: list[int], results: list) -> None:
            finished = {pending[i]: result for i, result in zip(done, results, strict=True)}
            self.unchecked.update(finished)
            found.update(finished)
            self.computed += len(finished)
            bar.update(len(finished))
            report(list(finished))
            if self._check_due():
                self.verify_identity()

        report([key for key in dict.fromkeys(keys) if key in found])
        desc = terminal(f"{self.model_id}: {kind}")  # a folder name may hold terminal escapes
        with tqdm(total=len(pending), desc=desc, unit="req", disable=not pending) as bar:
            if pending:
                try:
                    compute([missing[key] for key in pending], on_done=store)
                except IdentityChanged:
                    self.unchecked.clear()
                    raise
                except Exception:
                    self._keep_checked()  # a failed call keeps what a check still vouches for (resume)
                    raise
                self.verify_identity()
        return [found[key] for key in keys]

    def _keep_checked(self) -> None:
        """After a call failed: store the held-back results if a check agrees now, else drop them silently (the
        call's own error is the one raised)."""
        try:
            self.verify_identity()
        except Exception:  # noqa: BLE001 (a server that went away cannot be checked: its results are not kept)
            self.unchecked.clear()


def _well_formed(kind: str, value: object) -> bool:
    """Whether a stored value has the shape ``kind``'s results have: a damaged or foreign row is recomputed,
    never served as a number."""
    if kind == "generate":
        return isinstance(value, str)
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], Real)):
        return False
    if isinstance(value[0], bool):
        return False
    return isinstance(value[1], bool) if kind == "loglikelihood" else type(value[1]) is int
