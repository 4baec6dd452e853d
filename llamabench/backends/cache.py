"""Resume support: every finished request result is persisted in SQLite as soon as its batch completes.

A run killed at any point and started again with the same command recomputes only the requests
whose results were not yet stored. The backend reports each executed batch through ``on_done``, so
batches are as large as its token budget allows and a kill loses at most the batch in flight. Keys
cover the model's content fingerprint, the settings that change numbers (dtype, context length,
device type) and the request itself.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import astuple
from pathlib import Path

from tqdm.auto import tqdm

from llamabench.backends.base import Backend, BackendWrapper, OnDone
from llamabench.errors import LlamabenchError, warn
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, Request, RollingRequest


class RequestCache:
    """A key → JSON value table in one SQLite file, safe to share between processes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        except (OSError, sqlite3.Error) as exc:
            raise LlamabenchError(f"request cache {self.path} cannot be opened ({exc}); use --no-cache") from exc

    def get_many(self, keys: Sequence[str]) -> dict[str, object]:
        found: dict[str, object] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            part = unique[start : start + 500]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(f"SELECT key, value FROM results WHERE key IN ({marks})", part)
            found.update((key, json.loads(value)) for key, value in rows)
        return found

    def put_many(self, items: dict[str, object]) -> bool:
        """Store ``items``; False (nothing stored) when the disk is full or read-only, so a run goes on uncached."""
        try:
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO results (key, value) VALUES (?, ?)",
                    [(key, json.dumps(value)) for key, value in items.items()],
                )
        except (OSError, sqlite3.OperationalError) as exc:
            warn(f"request cache {self.path} cannot store results ({exc}); this run continues without caching")
            return False
        return True

    def __len__(self) -> int:
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

    def describe(self) -> dict:
        return {
            **self.inner.describe(),
            "cache": {
                "path": str(self.cache.path),
                "hits": self.hits,
                "computed": self.computed,
                "refresh": self.refresh,
                "stored": self.storing,
            },
        }

    def _key(self, kind: str, request: Request) -> str:
        identity = json.dumps([self.inner.cache_identity(), kind, astuple(request)])
        return hashlib.sha256(identity.encode()).hexdigest()

    def _cached(
        self, kind: str, requests: Sequence[Request], compute: Callable[..., list], on_done: OnDone | None
    ) -> list:
        keys = [self._key(kind, request) for request in requests]
        found = {} if self.refresh else self.cache.get_many(keys)
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
            if self.storing:
                self.storing = self.cache.put_many(finished)
            found.update(finished)
            self.computed += len(finished)
            bar.update(len(finished))
            report(list(finished))

        report([key for key in dict.fromkeys(keys) if key in found])
        with tqdm(total=len(pending), desc=f"{self.model_id}: {kind}", unit="req", disable=not pending) as bar:
            if pending:
                compute([missing[key] for key in pending], on_done=store)
        return [found[key] for key in keys]
