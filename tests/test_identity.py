"""Identity held for the whole run: a result is cached and recorded only under the identity of what computed it.

Weight files rewritten in place through a shared memory map (no time stamp need move), before a run and during one
(the transformers engine maps safetensors files, so the weights in use may change with them). Each test's reference
is an independent run: the same weights evaluated with ``--no-cache`` in a fresh process state, never the cache.
The Ray and server cases are in ``test_ray.py`` and ``test_server_backend.py`` (they need their cluster/server).
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import pytest
from conftest import save_tiny_model

from llamabench.backends.base import IdentityChanged
from llamabench.backends.hf.backend import HFBackend
from llamabench.backends.loading.cache_dir import CACHE_DB, cache_root
from llamabench.backends.wrappers.cache import CachedBackend, RequestCache
from llamabench.errors import LlamabenchError
from llamabench.pipeline import evaluate_checkpoint
from llamabench.requests import RollingRequest

LINES = ["The cat sat on the mat.", "A quick brown fox jumps over the lazy dog.", "Rain fell all night."]


def tensor_offset(weights: Path, name: str) -> int:
    """Where tensor ``name``'s first byte lies in a safetensors file (after its 8-byte length and JSON header)."""
    raw = weights.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    return 8 + length + header[name]["data_offsets"][0]


def perplexities(model: Path, notes: Path, **flags) -> list[float]:
    run = evaluate_checkpoint(str(model), [], text=[str(notes)], text_format="lines", device="cpu", **flags)
    return run.results.sort_values("metric").value.tolist()


@pytest.fixture
def notes(tmp_path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("\n".join(LINES) + "\n")
    return path


def test_a_weight_file_rewritten_through_a_shared_mmap_gives_the_no_cache_numbers(tmp_path, notes, monkeypatch):
    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("llamabench.backends.loading.fingerprint.SETTLE_SECONDS", 0.0)  # a memo would keep it
    model = save_tiny_model(tmp_path / "m")
    weights = model / "model.safetensors"
    at = tensor_offset(weights, "model.norm.weight")
    with weights.open("r+b") as handle, mmap.mmap(handle.fileno(), 0) as mapped:
        mapped[at : at + 4] = struct.pack("<f", 1.5)  # the page turns dirty: its time stamps move now, once
        first = perplexities(model, notes)  # cached under the bytes of this moment
        stamps = weights.stat()
        mapped[at : at + 4] = struct.pack("<f", 4.0)  # the same dirty page: no time stamp moves
        assert (weights.stat().st_mtime_ns, weights.stat().st_ctime_ns) == (stamps.st_mtime_ns, stamps.st_ctime_ns)
        again = perplexities(model, notes)
        reference = perplexities(model, notes, no_cache=True)
    assert again == pytest.approx(reference, rel=1e-9)
    assert again != pytest.approx(first, rel=1e-3)  # the rewrite changed the numbers: a stale cache would show


def rewrite_norm(weights: Path, value: float) -> bytes:
    """Write ``value`` into the first element of the final norm through a shared map (size and inode unchanged);
    returns the bytes it replaced."""
    at = tensor_offset(weights, "model.norm.weight")
    with weights.open("r+b") as handle, mmap.mmap(handle.fileno(), 0) as mapped:
        old = bytes(mapped[at : at + 4])
        mapped[at : at + 4] = struct.pack("<f", value)
    return old


def test_weights_rewritten_during_a_run_stop_it_and_cache_nothing_of_it(tmp_path, notes, monkeypatch):
    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    model = save_tiny_model(tmp_path / "m")
    weights = model / "model.safetensors"
    cache = RequestCache(cache_root() / CACHE_DB)  # the one a plain run then reads
    backend = CachedBackend(HFBackend.load(str(model), device="cpu", dtype="float32", batch_size=1), cache)
    rewritten: list[bytes] = []

    def rewrite_after_the_first_batch(done: list[int], results: list) -> None:
        if not rewritten:
            rewritten.append(rewrite_norm(weights, 4.0))

    with pytest.raises(IdentityChanged) as stopped:
        backend.loglikelihood_rolling([RollingRequest(text) for text in LINES], on_done=rewrite_after_the_first_batch)
    message = str(stopped.value)
    assert isinstance(stopped.value, LlamabenchError) and "\n" not in message
    assert str(model) in message and "changed during the run" in message
    assert len(cache) == 0  # nothing computed since the last check that agreed

    with weights.open("r+b") as handle:  # the original weights back: a plain run must give their own numbers
        handle.seek(tensor_offset(weights, "model.norm.weight"))
        handle.write(rewritten[0])
    plain = perplexities(model, notes)
    reference = perplexities(model, notes, no_cache=True)
    assert plain == pytest.approx(reference, rel=1e-9)


def test_a_run_whose_weights_were_rewritten_exits_2_in_one_line(tmp_path, notes, monkeypatch, capsys):
    from llamabench import pipeline
    from llamabench.cli.app import main

    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    model = save_tiny_model(tmp_path / "m")
    load = pipeline.load_backend
    # The real backend, loaded and fingerprinted; the rewrite lands before anything is scored.
    monkeypatch.setattr(
        pipeline,
        "load_backend",
        lambda config, name: (load(config, name), rewrite_norm(model / "model.safetensors", 4.0))[0],
    )
    argv = ["run", "--model", str(model), "--text", str(notes), "--text-format", "lines", "--device", "cpu"]
    assert main([*argv, "--output-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if "changed during the run" in line]) == 1
    assert not list((tmp_path / "runs").glob("*/manifest.json"))  # nothing recorded
