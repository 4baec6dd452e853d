"""Resume: finished requests are stored as they complete; a killed run recomputes only what was missing."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from llamabench.backends.loading.cache_dir import cache_root
from llamabench.backends.wrappers.cache import CachedBackend, RequestCache
from llamabench.errors import LlamabenchError
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, RollingRequest


def fingerprinted(tiny_backend, seed=0, **kwargs):
    backend = tiny_backend(seed=seed, **kwargs)
    backend.fingerprint = f"tiny-seed-{seed}"
    return backend


def test_second_call_is_served_from_the_cache(tiny_backend, tmp_path):
    cache = RequestCache(tmp_path / "requests.sqlite")
    pairs = [LoglikelihoodRequest("a b", " c"), LoglikelihoodRequest("x", " y"), LoglikelihoodRequest("a b", " c")]
    texts = [RollingRequest("hello there"), RollingRequest("general kenobi")]
    prompts = [GenerationRequest("Once", 5), GenerationRequest("Twice", 5, until=("e",))]
    first = CachedBackend(fingerprinted(tiny_backend, batch_size=1), cache)
    expected = (first.loglikelihood(pairs), first.loglikelihood_rolling(texts), first.generate(prompts))
    assert (first.hits, first.computed) == (0, 6)  # the repeated pair is computed once
    assert len(cache) == 6
    again = CachedBackend(fingerprinted(tiny_backend), cache)
    assert (again.loglikelihood(pairs), again.loglikelihood_rolling(texts), again.generate(prompts)) == expected
    assert (again.hits, again.computed) == (7, 0)


def test_other_model_or_refresh_recomputes(tiny_backend, tmp_path):
    cache = RequestCache(tmp_path / "requests.sqlite")
    request = [RollingRequest("some text")]
    CachedBackend(fingerprinted(tiny_backend, 0), cache).loglikelihood_rolling(request)
    other = CachedBackend(fingerprinted(tiny_backend, 1), cache)
    other.loglikelihood_rolling(request)
    refreshed = CachedBackend(fingerprinted(tiny_backend, 0), cache, refresh=True)
    refreshed.loglikelihood_rolling(request)
    assert (other.computed, refreshed.computed, len(cache)) == (1, 1, 2)


def test_backend_without_fingerprint_is_not_cached(tiny_backend, tmp_path):
    with pytest.raises(LlamabenchError, match="no content fingerprint"):
        CachedBackend(tiny_backend(), RequestCache(tmp_path / "requests.sqlite"))


class Killed(Exception):
    """Stands in for a kill: raised by a backend's forward pass on a chosen batch."""


def dies_on_batch(backend, method: str, k: int) -> None:
    """Make ``backend``'s batch function (or a model's ``forward``) ``method`` raise Killed on its ``k``-th call."""
    real, calls = getattr(backend, method), []

    def forward(*args, **kwargs):
        calls.append(1)
        if len(calls) == k:
            raise Killed
        return real(*args, **kwargs)

    setattr(backend, method, forward)


def test_cached_batches_are_as_large_as_uncached(tiny_backend, tmp_path):
    # Over 32,000 characters: the former cache cut such a call into chunks smaller than the token budget.
    texts = [RollingRequest(f"{i} " + "lorem ipsum dolor sit amet " * 40) for i in range(40)]
    uncached = tiny_backend(max_length=64)
    uncached.loglikelihood_rolling(texts)
    backend = fingerprinted(tiny_backend, max_length=64)
    CachedBackend(backend, RequestCache(tmp_path / "requests.sqlite")).loglikelihood_rolling(texts)
    assert backend.policy.sizes_used == uncached.policy.sizes_used
    assert max(backend.policy.sizes_used) > 100


CALLS = {
    "loglikelihood": ("_score_batch", [LoglikelihoodRequest(f"context {i}", f" answer {i}") for i in range(6)]),
    "loglikelihood_rolling": ("_score_batch", [RollingRequest(f"text number {i}") for i in range(6)]),
}


@pytest.mark.parametrize("call", CALLS)
def test_a_kill_loses_at_most_the_running_batch(tiny_backend, tmp_path, call):
    method, requests = CALLS[call]
    cache = RequestCache(tmp_path / "requests.sqlite")
    victim = fingerprinted(tiny_backend, batch_size=2)
    dies_on_batch(victim, method, 3)
    with pytest.raises(Killed):
        getattr(CachedBackend(victim, cache), call)(requests)
    assert len(cache) == 4  # the two batches of two that finished before the third died

    resumed = CachedBackend(fingerprinted(tiny_backend, batch_size=2), cache)
    got = getattr(resumed, call)(requests)
    assert (resumed.hits, resumed.computed) == (4, 2)
    assert got == [tuple(r) for r in getattr(tiny_backend(), call)(requests)]


def test_a_kill_mid_generation_keeps_every_finished_request(tiny_backend, tmp_path):
    # Equal-length prompts with 1..6 new tokens over 2 slots. Forward passes: 1 prefills 0 and 1 (0 is done
    # after its one token), 2 prefills 2, 3 steps 1 (done) and 2, 4 prefills 3, 5 steps 2 (done) and 3,
    # 6 prefills 4 and is killed: requests 0, 1 and 2 are stored, each as it finished.
    requests = [GenerationRequest(f"prompt {i}", max_new_tokens=i + 1) for i in range(6)]
    cache = RequestCache(tmp_path / "requests.sqlite")
    victim = fingerprinted(tiny_backend, batch_size=2)
    dies_on_batch(victim.model, "forward", 6)
    with pytest.raises(Killed):
        CachedBackend(victim, cache).generate(requests)
    assert len(cache) == 3

    resumed = CachedBackend(fingerprinted(tiny_backend, batch_size=2), cache)
    got = resumed.generate(requests)
    assert (resumed.hits, resumed.computed) == (3, 3)
    assert got == [tiny_backend(batch_size=1).generate([request])[0] for request in requests]


def test_a_perplexity_request_is_stored_only_once_all_its_windows_are_scored(tiny_backend, tmp_path):
    long, short = RollingRequest("x" * 40), RollingRequest("short")
    cache = RequestCache(tmp_path / "requests.sqlite")
    victim = fingerprinted(tiny_backend, batch_size=1, max_length=16)
    dies_on_batch(victim, "_score_batch", 3)  # the long text's windows (longest first): 16, 16, 8 tokens
    with pytest.raises(Killed):
        CachedBackend(victim, cache).loglikelihood_rolling([long, short])
    assert len(cache) == 0
    victim = fingerprinted(tiny_backend, batch_size=1, max_length=16)
    dies_on_batch(victim, "_score_batch", 4)
    with pytest.raises(Killed):
        CachedBackend(victim, cache).loglikelihood_rolling([long, short])
    assert len(cache) == 1


def cli(tmp_path: Path, data_dir: Path, out: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "LLAMABENCH_CACHE": str(tmp_path / "cache")}
    argv = [
        sys.executable,
        "-m",
        "llamabench",
        "run",
        "--tasks",
        "qa",
        "--num-fewshot",
        "0",
        "--limit",
        "6",
        "--data-dir",
        str(data_dir),
        "--output-dir",
        str(tmp_path / out),
        "--batch-size",
        "1",  # one request per committed batch, so the kill lands between commits
        *extra,
    ]
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def stored(tmp_path: Path) -> int:
    path = tmp_path / "cache" / "requests.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def finished_run(tmp_path: Path, out: str) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    (folder,) = [p for p in (tmp_path / out).iterdir() if p.is_dir()]  # beside it: the run store
    return (
        pd.read_csv(folder / "results.csv"),
        pd.read_parquet(folder / "samples_squad.parquet"),
        json.loads((folder / "manifest.json").read_text()),
    )


def test_killed_real_run_resumes_without_recomputing(tmp_path, data_dir):
    real_dense = cache_root() / "dense"
    (tmp_path / "cache").mkdir()
    if real_dense.is_dir():  # reuse the dequantised SmolLM2 instead of converting the GGUF again
        (tmp_path / "cache" / "dense").symlink_to(real_dense)

    victim = cli(tmp_path, data_dir, "killed")
    deadline = time.time() + 600
    while stored(tmp_path) < 2 and victim.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done_before_kill = stored(tmp_path)
    assert 2 <= done_before_kill < 6

    assert cli(tmp_path, data_dir, "resumed").wait() == 0
    assert cli(tmp_path, data_dir, "fresh", "--no-cache").wait() == 0
    resumed, resumed_samples, manifest = finished_run(tmp_path, "resumed")
    fresh, fresh_samples, _ = finished_run(tmp_path, "fresh")
    assert manifest["backend"]["cache"]["hits"] == done_before_kill
    assert manifest["backend"]["cache"]["computed"] == 6 - done_before_kill
    pd.testing.assert_frame_equal(resumed.drop(columns="timestamp"), fresh.drop(columns="timestamp"))
    assert resumed_samples.prediction.tolist() == fresh_samples.prediction.tolist()


def test_sharded_over_cached_reports_batches_at_the_callers_indices(tiny_backend, tmp_path):
    import torch.distributed as dist

    from llamabench.backends.wrappers.sharded import ShardedBackend

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        requests = [RollingRequest("a"), RollingRequest("a longer text"), RollingRequest("mid text")]
        cache = RequestCache(tmp_path / "requests.sqlite")
        CachedBackend(fingerprinted(tiny_backend), cache).loglikelihood_rolling(requests[:1])  # one stored already
        sharded = ShardedBackend(CachedBackend(fingerprinted(tiny_backend, batch_size=1), cache))
        reported: dict[int, tuple] = {}

        def on_done(done: list[int], results: list) -> None:
            reported.update(zip(done, results, strict=True))

        got = sharded.loglikelihood_rolling(requests, on_done=on_done)
    finally:
        dist.destroy_process_group()
    assert len(cache) == 3
    assert {index: tuple(result) for index, result in reported.items()} == dict(enumerate(got))
    assert got == tiny_backend().loglikelihood_rolling(requests)
