"""`llamabench run` under torchrun with 2 gloo ranks, rank 1's scoring broken (tests/rank_cli.py): every rank stops
with the same one line naming rank 1, none waits in a collective, and no run is written."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import save_tiny_model

TESTS = Path(__file__).parent


def test_a_rank_that_fails_under_torchrun_stops_every_rank_with_the_same_line(tmp_path, notes_file):
    save_tiny_model(tmp_path / "model")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{TESTS.parent}:{TESTS}"}
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29543"]
    argv += [str(TESTS / "rank_cli.py"), "run", "--model", str(tmp_path / "model"), "--text", str(notes_file)]
    argv += ["--text-format", "lines", "--no-cache", "--output-dir", str(tmp_path / "runs")]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("llamabench: error:")]
    expected = (
        "llamabench: error: rank 1 of 2 failed while scoring its share of the requests: "
        "RuntimeError: scoring failed on this rank (simulated)"
    )
    assert errors == [expected, expected], done.stderr[-3000:]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
