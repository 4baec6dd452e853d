"""What a content fingerprint costs: blake3 over every byte of a checkpoint, as every run start and check pays.

Prints the hashing rate (MB/s) on a synthetic file of ``--mb`` megabytes, beside sha256 on the same bytes
(the single-threaded hash a naive implementation would use), the seconds to fingerprint the SmolLM2 dense
checkpoint (the GGUF's dequantised copy, ~540 MB), which every run start and every identity check of a
file-backed model pays (every byte hashed, no memo: ``loading/fingerprint.py``), and the in-memory fingerprint
``evaluate_model`` takes of the loaded model at every evaluation (parameters and buffers).

    python bench/fingerprint_speed.py --mb 1024
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

from llamabench.backends.hf.backend import HFBackend
from llamabench.backends.loading.fingerprint import fingerprint_files, model_files
from llamabench.backends.loading.gguf import dense_copy_dir
from llamabench.backends.loading.model_fingerprint import fingerprint_model
from llamabench.backends.loading.model_source import fingerprint, resolve_model


def timed(action) -> tuple[object, float]:
    start = time.perf_counter()
    result = action()
    return result, time.perf_counter() - start


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="size of the synthetic file in MB")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.bin"
        path.write_bytes(os.urandom(args.mb * 1_000_000))
        sha256_file(path)  # page cache warm for both hashes
        _, blake_seconds = timed(lambda: fingerprint_files(Path(folder), [path]))
        _, sha_seconds = timed(lambda: sha256_file(path))
    print(f"synthetic {args.mb} MB, {os.cpu_count()} cores:")
    print(f"  blake3 (multi-threaded): {args.mb / blake_seconds:8.0f} MB/s")
    speedup = sha_seconds / blake_seconds
    print(f"  sha256 (one thread):     {args.mb / sha_seconds:8.0f} MB/s   blake3 is {speedup:.1f}x")

    source = resolve_model(None)
    backend = HFBackend.load(None, device="cpu", dtype="float32")  # makes the dense copy if it is not there yet
    dense = dense_copy_dir(fingerprint(source))
    files = model_files(dense)
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    seconds = [timed(lambda: fingerprint_files(dense, files))[1] for _ in range(3)]
    print(f"SmolLM2 dense checkpoint ({len(files)} files, {size_mb:.0f} MB):")
    best = min(seconds)
    print(f"  fingerprint (run start, each identity check): {best:.2f} s best of 3 ({size_mb / best:.0f} MB/s)")
    tensors = [*backend.model.parameters(), *backend.model.buffers()]
    memory_mb = sum(t.numel() * t.element_size() for t in tensors) / 1e6
    seconds = [timed(lambda: fingerprint_model(backend.model, backend.tokenizer))[1] for _ in range(3)]
    print(f"SmolLM2 in memory (fp32, {memory_mb:.0f} MB of parameters and buffers):")
    print(f"  fingerprint at each evaluation: {min(seconds):.2f} s best of 3 ({memory_mb / min(seconds):.0f} MB/s)")


if __name__ == "__main__":
    main()
