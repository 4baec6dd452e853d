"""What a content fingerprint costs: blake3 over every byte of a checkpoint, as every run start and check pays.

Prints the hashing rate (MB/s) on a synthetic file of ``--mb`` megabytes, beside sha256 on the same bytes
(the single-threaded hash a naive implementation would use), the seconds to fingerprint a checkpoint's files
(``--model``, default the SmolLM2 GGUF's dequantised copy, ~540 MB), which every run start and every identity check
of a file-backed model pays (every byte hashed, no memo: ``loading/fingerprint.py``), and the in-memory
fingerprint ``evaluate_model`` takes of the loaded model at every evaluation (parameters and buffers). Every timed
run prints what it hashed itself (files and bytes) beside its time, and the blake3/sha256 ratio is printed only
when both hashed the same bytes (bench/common.py).

    python bench/fingerprint_speed.py --mb 1024
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
from pathlib import Path

from common import Meter, TimedRun, compare, fastest

from llamabench.backends.hf.backend import HFBackend
from llamabench.backends.loading.fingerprint import DigestMemo, fingerprint_files, model_files
from llamabench.backends.loading.load import checkpoint_location
from llamabench.backends.loading.model_fingerprint import fingerprint_model
from llamabench.backends.loading.model_source import resolve_model


class CountingMemo(DigestMemo):
    """A digest memo that counts the files it answered: the rest were hashed."""

    def __init__(self, path: Path | None):
        super().__init__(path)
        self.answered: list[Path] = []

    def _lookup(self, key: tuple) -> str | None:
        found = super()._lookup(key)
        if found is not None:
            self.answered.append(Path(key[0]))
        return found


def fingerprinted(job: str, side: str, root: Path, files: list[Path], memo: CountingMemo) -> TimedRun:
    """One timed fingerprint of ``files``: files and bytes hashed are those the memo did not answer."""
    with Meter() as meter:
        fingerprint_files(root, files, memo)
    answered = {Path(os.path.realpath(f)) for f in memo.answered}
    hashed = [f for f in files if Path(os.path.realpath(f)) not in answered]
    work = sum(f.stat().st_size for f in hashed)
    return meter.record(job, side, len(files), work, "bytes hashed", computed=len(hashed))


def sha256_file(path: Path) -> int:
    """Bytes hashed by sha256 over ``path``."""
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
            done += len(block)
    digest.hexdigest()
    return done


def main(argv: list[str] | None = None) -> list[TimedRun]:
    """Print the figures; returns every timed run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=1024, help="size of the synthetic file in MB")
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.bin"
        path.write_bytes(os.urandom(args.mb * 1_000_000))
        sha256_file(path)  # page cache warm for both hashes (the file's bytes, not a digest)
        blake = fingerprinted("synthetic file", "blake3", Path(folder), [path], CountingMemo(None))
        with Meter() as meter:
            done = sha256_file(path)
        sha = meter.record("synthetic file", "sha256", 1, done, "bytes hashed", computed=1)
    print(f"synthetic {args.mb} MB, {os.cpu_count()} cores:")
    print(f"  blake3 (multi-threaded): {args.mb / blake.seconds:8.0f} MB/s   ({blake.line()})")
    print(f"  sha256 (one thread):     {args.mb / sha.seconds:8.0f} MB/s   ({sha.line()})")
    print("  " + compare("blake3's speed over sha256's", sha, blake).line())

    backend = HFBackend.load(args.model, device="cpu", dtype="float32")  # makes the dense copy if it is not there yet
    dense = Path(checkpoint_location(resolve_model(args.model)))
    files = model_files(dense)
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    checks = [fingerprinted("checkpoint", "fingerprint", dense, files, CountingMemo(None)) for _ in range(3)]
    best = fastest(checks)
    print(f"{backend.model_id} checkpoint ({len(files)} files, {size_mb:.0f} MB):")
    for timed in checks:
        print(f"  {timed.line()}")
    rate = size_mb / best.seconds
    print(f"  fingerprint (run start, each identity check): {best.seconds:.2f} s best of 3 ({rate:.0f} MB/s)")
    tensors = [*backend.model.parameters(), *backend.model.buffers()]
    memory = sum(t.numel() * t.element_size() for t in tensors)
    in_memory = []
    for _ in range(3):  # nothing is memoised between them: each hashes every tensor
        with Meter() as meter:
            fingerprint_model(backend.model, backend.tokenizer)
        in_memory.append(meter.record("in memory", "fingerprint_model", 1, memory, "bytes hashed", computed=1))
    best = fastest(in_memory)
    print(f"{backend.model_id} in memory (fp32, {memory / 1e6:.0f} MB of parameters and buffers):")
    for timed in in_memory:
        print(f"  {timed.line()}")
    print(f"  fingerprint at each evaluation: {best.seconds:.2f} s best of 3 ({memory / 1e6 / best.seconds:.0f} MB/s)")
    return [blake, sha, *checks, *in_memory]


if __name__ == "__main__":
    main()
