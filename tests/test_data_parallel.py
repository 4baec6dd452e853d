"""torchrun with 2 CPU (gloo) ranks writes exactly the tables a single-process run writes."""

import os
import subprocess
import sys

import pandas as pd
from conftest import save_tiny_model


def llamabench(launcher: list[str], tmp_path, data_dir, out: str) -> pd.DataFrame:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LLAMABENCH_CACHE": str(tmp_path / "cache")}
    argv = [
        *launcher,
        "-m",
        "llamabench",
        "run",
        "--model",
        str(tmp_path / "model"),
        "--tasks",
        "ppl,qa",
        "--limit",
        "5",
        "--batch-size",
        "1",
        "--no-cache",
        "--data-dir",
        str(data_dir),
        "--output-dir",
        str(tmp_path / out),
    ]
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=600)
    (folder,) = [p for p in (tmp_path / out).iterdir() if p.is_dir()]
    return pd.read_csv(folder / "results.csv"), pd.read_parquet(folder / "samples_squad.parquet")


def test_two_gloo_ranks_equal_one_process(tmp_path, data_dir):
    save_tiny_model(tmp_path / "model")
    single, single_samples = llamabench([sys.executable], tmp_path, data_dir, "single")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533"]
    parallel, parallel_samples = llamabench(torchrun, tmp_path, data_dir, "parallel")
    columns = ["task", "metric", "n", "task_hash", "model_fingerprint"]
    pd.testing.assert_frame_equal(single[columns], parallel[columns])
    pd.testing.assert_series_equal(single.value, parallel.value, rtol=0, atol=0)  # batch size 1: same arithmetic
    assert single_samples.prediction.tolist() == parallel_samples.prediction.tolist()
