"""Merged BLEU is corpus BLEU over every shard's hypotheses, on a model whose BLEU is not 0: SmolLM2-135M (the
embedded GGUF) on six WMT22 de-en documents, run as three shards and merged, against ``sacrebleu.corpus_bleu`` over
the hypotheses read from the shards' per-sample files and the references read from the data file. The average of
the shards' BLEU (a planted bug once passed the suite because the tiny model scores 0 everywhere) is checked to miss
it. Merging again with the merged run among the names (the docs' glob, run twice) leaves the merged run out."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import sacrebleu

from llamabench.cli.app import main
from llamabench.records.results import read_run

LIMIT, SHARDS = 6, 3


@pytest.fixture(scope="module")
def merged(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("merged_bleu")
    runs = root / "runs"
    argv = ["run", "--tasks", "bleu", "--limit", str(LIMIT), "--data-dir", str(data_dir), "--device", "cpu"]
    argv += ["--batch-size", "1", "--output-dir", str(runs)]
    for index in range(SHARDS):
        assert main([*argv, "--shard", f"{index}/{SHARDS}"]) == 0
    shards = sorted(path for path in runs.iterdir() if path.is_dir())
    assert main(["merge", "--output-dir", str(runs), *map(str, shards)]) == 0
    (folder,) = {path for path in runs.iterdir() if path.is_dir()} - set(shards)
    return runs, shards, folder


def references(data_dir: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in (data_dir / "wmt22_generaltest_de-en" / "test.jsonl").open()]
    return {str(row["id"]): row["reference"] for row in rows}


def hypotheses(folder: Path) -> pd.DataFrame:
    """doc_id and prediction of every document of a run folder's per-sample file of its one task."""
    (path,) = folder.glob("samples_*.parquet")
    return pd.read_parquet(path)[["doc_id", "prediction"]]


def test_merged_bleu_is_sacrebleu_over_all_hypotheses_not_the_shards_average(merged, data_dir):
    runs, shards, folder = merged
    refs = references(data_dir)
    pooled = pd.concat([hypotheses(shard) for shard in shards], ignore_index=True)
    assert len(pooled) == LIMIT and pooled.doc_id.is_unique
    oracle = sacrebleu.corpus_bleu(list(pooled.prediction), [[refs[str(d)] for d in pooled.doc_id]]).score
    assert oracle > 1.0  # a real translation: the test can tell corpus BLEU from an average

    results = read_run(folder).results
    merged_bleu = results[results.metric == "bleu"].value.item()
    assert merged_bleu == pytest.approx(oracle, rel=1e-9)

    per_shard = [read_run(shard).results for shard in shards]
    averaged = sum(frame[frame.metric == "bleu"].value.item() for frame in per_shard) / SHARDS
    assert averaged != pytest.approx(oracle, rel=1e-3)  # the planted bug would fail the assertion above


def test_merging_again_over_the_same_glob_leaves_the_merged_run_out(merged, capsys):
    runs, shards, folder = merged
    capsys.readouterr()
    everything = sorted(path for path in runs.iterdir() if path.is_dir())  # the shards and the merged run
    assert folder in everything
    assert main(["merge", "--output-dir", str(runs), *map(str, everything)]) == 0
    captured = capsys.readouterr()
    assert f"{read_run(folder).manifest.run_id} is a merged run" in captured.err
    (again,) = {path for path in runs.iterdir() if path.is_dir()} - set(everything)
    first, second = read_run(folder).results, read_run(again).results
    assert first.value.tolist() == second.value.tolist()
    # Renamed, a merged run is still known by its manifest: named alone it is refused as not a shard.
    renamed = folder.with_name("smollm2-135m-shard-0")
    folder.rename(renamed)
    assert main(["merge", "--output-dir", str(runs / "x"), str(renamed)]) == 2
    assert "merged run" in capsys.readouterr().err
