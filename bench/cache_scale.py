"""How far the driver's SQLite request cache (``backends/wrappers/cache.py``) carries a cluster run.

Measures, on this machine, with the product's own ``RequestCache`` and ``CachedBackend._key``:

- requests/s stored by ``put_many`` at the batch sizes a backend reports through ``on_done`` (1, 64, 1024);
- requests/s read back by ``get_many`` (what a restarted driver does for every request of a call);
- seconds to open a cache holding ``--rows`` requests (``RequestCache`` runs ``PRAGMA quick_check`` on open).

    python bench/cache_scale.py --rows 1000000 --out /tmp/cache-bench    # about a minute, 0.3 GB of disk
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/cache-bench"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    rng = random.Random(0)
    print(f"machine: {os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.2f}")
    for batch in (1, 64, 1024):
        cache = RequestCache(args.out / f"batch{batch}.sqlite")
        items = list(results(min(20_000, 200 * batch), 0, rng).items())
        tick = time.perf_counter()
        for start in range(0, len(items), batch):
            cache.put_many(dict(items[start : start + batch]))
        seconds = time.perf_counter() - tick
        print(f"put_many batch {batch:>5}: {len(items) / seconds:>9.0f} requests/s ({len(items)} stored)")
    path = args.out / "big.sqlite"
    cache = RequestCache(path)
    tick = time.perf_counter()
    keys: list[str] = []
    for start in range(0, args.rows, 10_000):
        items = results(min(10_000, args.rows - start), start, rng)
        cache.put_many(items)
        keys += rng.sample(list(items), 100)
    filled = time.perf_counter() - tick
    print(f"filled {args.rows} rows in {filled:.1f} s ({args.rows / filled:.0f} requests/s in batches of 10,000)")
    del cache
    size = sum(f.stat().st_size for f in args.out.glob("big.sqlite*"))
    tick = time.perf_counter()
    cache = RequestCache(path)
    opened = time.perf_counter() - tick
    print(f"open (with quick_check) of {args.rows} rows, {size / 1e6:.0f} MB: {opened:.2f} s")
    tick = time.perf_counter()
    found = cache.get_many(keys)
    seconds = time.perf_counter() - tick
    print(
        f"get_many of {len(keys)} distinct keys spread over the file ({len(found)} found): "
        f"{len(keys) / seconds:.0f} requests/s"
    )
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
