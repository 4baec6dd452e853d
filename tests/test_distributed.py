"""evaluate_model under torchrun with 2 gloo ranks on CPU (tests/rank_worker.py): a DDP-trained and an
FSDP2-sharded tiny LLaMA give the numbers of a single-process `llamabench run --batch-size 1` on the saved
checkpoint (bit-identical at batch size 1, within 1e-5 batched), the manifest holds both ranks' counters, and a
failing rank makes both ranks raise the same one-line error instead of hanging."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from llamabench.cli.app import main

TESTS = Path(__file__).parent


def launch(mode: str, out: Path, data_dir: Path, notes: Path, port: int) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{TESTS.parent}:{TESTS}"}
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port)]
    done = subprocess.run(
        [*argv, str(TESTS / "rank_worker.py"), mode, str(out), str(data_dir), str(notes)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,  # a hang in a collective fails here rather than stalling the suite
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)]


def single_process(checkpoint: Path, data_dir: Path, notes: Path, out: Path) -> dict:
    """The reference: `llamabench run --batch-size 1` in one process on the checkpoint rank 0 saved."""
    argv = ["run", "--model", str(checkpoint), "--tasks", "qa", "--limit", "2", "--batch-size", "1"]
    argv += ["--text", str(notes), "--text-format", "lines"]
    assert main([*argv, "--no-cache", "--data-dir", str(data_dir), "--output-dir", str(out)]) == 0
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    table = pd.read_csv(folder / "results.csv")
    return {f"{row.task}/{row.metric}": row.value for row in table.itertuples()}


@pytest.mark.parametrize(("mode", "port"), [("ddp", 29541), ("fsdp", 29542)])
def test_two_ranks_in_memory_equal_one_process_on_the_saved_checkpoint(tmp_path, data_dir, notes_file, mode, port):
    ranks = launch(mode, tmp_path, data_dir, notes_file, port)
    reference = single_process(tmp_path / "ckpt", data_dir, notes_file, tmp_path / "single")
    assert [report["agreed"] for report in ranks] == [0, 1]
    for batch_size, rtol in (("1", 0.0), ("auto", 1e-5)):
        for report in ranks:
            run = report[batch_size]
            assert run["ranks"] == 2 and run["training"] is True
            assert run["layout"] == ("replicated" if mode == "ddp" else "sharded")
            assert run["values"].keys() == reference.keys()
            for key, value in reference.items():
                assert run["values"][key] == pytest.approx(value, rel=rtol, abs=0), key
    if mode == "ddp":
        failures = {report["failure"] for report in ranks}
        assert len(failures) == 1
        (failure,) = failures
        assert failure.startswith("rank 1 of 2 failed while scoring") and "ZeroDivisionError" in failure
        assert "\n" not in failure
        assert len({report["diverged"] for report in ranks}) == 1 and "different weights" in ranks[0]["diverged"]
