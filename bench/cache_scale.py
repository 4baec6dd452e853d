"""How far the driver's SQLite request cache (``backends/wrappers/cache.py``) carries a cluster run.

Measures, on this machine, with the product's own ``RequestCache`` and ``CachedBackend._key``:

- requests/s stored by ``put_many`` at the batch sizes a backend reports through ``on_done`` (1, 64, 1024);
- requests/s read back by ``get_many`` (what a restarted driver does for every request of a call);
- seconds to open a cache holding ``--rows`` requests (``RequestCache`` runs ``PRAGMA quick_check`` on open).

Each timed step prints what it did itself beside its time (rows the table gained, keys found), so a step that
stored or read nothing cannot pass for a fast one.

    python bench/cache_scale.py --rows 1000000 --out /tmp/cache-bench    # about a minute, 0.3 GB of disk
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
from pathlib import Path

from common import Meter, TimedRun

from llamabench.backends.wrappers.cache import CachedBackend, RequestCache
from llamabench.requests import GenerationRequest, LoglikelihoodRequest


def results(count: int, start: int, rng: random.Random) -> dict[str, object]:
    """``count`` cache entries as runs store them: 3 of 4 log-likelihoods, 1 of 4 a generated sentence."""
    items: dict[str, object] = {}
    for i in range(start, start + count):
        if i % 4:
            request = LoglikelihoodRequest(f"context {i}", f" continuation {i}")
            items[CachedBackend._key("identity", "loglikelihood", request)] = [-rng.random() * 40, bool(i % 3)]
        else:
            request = GenerationRequest(f"prompt {i}", 64)
            items[CachedBackend._key("identity", "generate", request)] = " ".join(["word"] * 30)
    return items


def stored(job: str, cache: RequestCache, batches: list[dict]) -> TimedRun:
    """``put_many`` of each batch, timed; the rows the table gained are counted by SQLite itself."""
    before = len(cache)
    with Meter() as meter:
        for batch in batches:
            cache.put_many(batch)
    gained = len(cache) - before
    return meter.record(job, "put_many", sum(map(len, batches)), gained, "rows stored", computed=gained)


def main(argv: list[str] | None = None) -> list[TimedRun]:
    """Print the figures; returns every timed step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/cache-bench"))
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    rng = random.Random(0)
    print(f"machine: {os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.2f}")
    runs = []
    for batch in (1, 64, 1024):
        items = list(results(min(20_000, 200 * batch), 0, rng).items())
        batches = [dict(items[start : start + batch]) for start in range(0, len(items), batch)]
        timed = stored(f"batch {batch}", RequestCache(args.out / f"batch{batch}.sqlite"), batches)
        print(f"put_many batch {batch:>5}: {timed.work / timed.seconds:>9.0f} requests/s ({timed.line()})")
        runs.append(timed)
    path = args.out / "big.sqlite"
    cache = RequestCache(path)
    keys: list[str] = []
    with Meter() as meter:  # key hashing included, as a run pays it
        for start in range(0, args.rows, 10_000):
            items = results(min(10_000, args.rows - start), start, rng)
            cache.put_many(items)
            keys += rng.sample(list(items), min(100, len(items)))
    gained = len(cache)
    filled = meter.record("fill", "put_many, keys hashed", args.rows, gained, "rows stored", computed=gained)
    print(
        f"filled {args.rows} rows in {filled.seconds:.1f} s ({gained / filled.seconds:.0f} requests/s in batches of "
        f"10,000; {filled.line()})"
    )
    del cache
    size = sum(f.stat().st_size for f in args.out.glob("big.sqlite*"))
    with Meter() as meter:
        cache = RequestCache(path)
    opened = meter.record("open", "quick_check", 1, size, "bytes in the file", computed=1)
    print(
        f"open (with quick_check) of {len(cache)} rows, {size / 1e6:.0f} MB: {opened.seconds:.2f} s ({opened.line()})"
    )
    with Meter() as meter:
        found = cache.get_many(keys)
    read = meter.record("get_many", "get_many", len(keys), len(found), "rows read", computed=len(found))
    print(
        f"get_many of {len(keys)} distinct keys spread over the file ({len(found)} found): "
        f"{len(found) / read.seconds:.0f} requests/s ({read.line()})"
    )
    print(f"load average at end {os.getloadavg()[0]:.2f}")
    return [*runs, filled, opened, read]


if __name__ == "__main__":
    main()
