"""``--device-map``: accelerate's placement of one model; on a CPU-only machine everything lands on the CPU."""

import json

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import yaml
from conftest import save_tiny_model

from llamabench.backends.hf import backend as hf
from llamabench.backends.hf.backend import HFBackend
from llamabench.cli.app import main
from llamabench.errors import LlamabenchError
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, RollingRequest

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Zwölf Boxkämpfer jagen Viktor quer über den Deich.", "a"]
PAIRS = [("Question: what colour is the sky?\nAnswer:", " blue"), ("2 + 2 =", " 4")]
PROMPTS = [GenerationRequest("Once upon a time", 12), GenerationRequest("Q: 2+2?\nA:", 8, until=("\n",))]
TASKS = {
    "tiny_ppl": {"kind": "loglikelihood_rolling", "metrics": ["word_perplexity", "token_perplexity"]},
    "tiny_gen": {"kind": "generate", "target": "{{ text }}", "generation": {"max_new_tokens": 8}, "metrics": ["f1"]},
}


@pytest.fixture
def model_dir(tmp_path):
    return save_tiny_model(tmp_path / "model")


@pytest.fixture
def workspace(tmp_path, model_dir, monkeypatch):
    (tmp_path / "tasks").mkdir()
    for name, spec in TASKS.items():
        task = {"name": name, "dataset": {"local": "texts.jsonl"}, "prompt": "{{ text }}", **spec}
        (tmp_path / "tasks" / f"{name}.yaml").write_text(yaml.safe_dump(task))
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def outputs(backend: HFBackend) -> tuple[list, list, list]:
    backend.progress = False
    return (
        backend.loglikelihood_rolling([RollingRequest(t) for t in TEXTS]),
        backend.loglikelihood([LoglikelihoodRequest(c, x) for c, x in PAIRS]),
        backend.generate(PROMPTS),
    )


@pytest.mark.parametrize("device_map", ["auto", "balanced", "sequential"])
def test_device_map_on_cpu_gives_exactly_a_plain_loads_outputs(model_dir, device_map):
    plain = HFBackend.load(str(model_dir))
    mapped = HFBackend.load(str(model_dir), device_map=device_map)
    assert mapped.device == torch.device("cpu") and mapped.model.dtype == torch.float32
    expected, got = outputs(plain), outputs(mapped)
    assert got == expected
    assert all(n == len(t.encode()) for (_, n), t in zip(got[0], TEXTS, strict=True))


def test_device_map_keeps_the_dense_gguf_cache_path(smollm2):
    mapped = HFBackend.load(None, device_map="auto")
    assert mapped.model_id == smollm2.model_id == "smollm2-135m" and mapped.fingerprint == smollm2.fingerprint
    requests = [LoglikelihoodRequest(c, x) for c, x in PAIRS]
    mapped.progress = smollm2.progress = False
    assert mapped.loglikelihood(requests) == smollm2.loglikelihood(requests)


def run_cli(workspace, out: str, *args: str) -> int:
    return main(
        [
            "run",
            "--model",
            str(workspace / "model"),
            "--tasks",
            "tiny_ppl,tiny_gen",
            "--tasks-dir",
            str(workspace / "tasks"),
            "--data-dir",
            str(workspace),
            "--output-dir",
            str(workspace / out),
            "--no-cache",
            *args,
        ]
    )


def test_cli_flag_reaches_the_loader_and_writes_the_same_tables(workspace, monkeypatch, capsys):
    placements = []

    def spy(*args, **kwargs):
        placements.append(kwargs["device_map"])
        return load(*args, **kwargs)

    load = hf.load_model_and_tokenizer
    monkeypatch.setattr(hf, "load_model_and_tokenizer", spy)
    assert run_cli(workspace, "plain") == 0
    plain_table = capsys.readouterr().out.split("\nresults written to")[0]
    assert run_cli(workspace, "mapped", "--device-map", "auto") == 0
    mapped_table = capsys.readouterr().out.split("\nresults written to")[0]
    assert placements == [None, "auto"]
    assert mapped_table == plain_table and "word_perplexity" in plain_table
    (plain,), (mapped,) = ([p for p in (workspace / out).iterdir() if p.is_dir()] for out in ("plain", "mapped"))
    columns = ["task", "metric", "value", "stderr", "n", "model_fingerprint"]
    pd.testing.assert_frame_equal(
        pd.read_csv(plain / "results.csv")[columns], pd.read_csv(mapped / "results.csv")[columns]
    )
    assert json.loads((mapped / "manifest.json").read_text())["config"]["device_map"] == "auto"
    assert json.loads((plain / "manifest.json").read_text())["config"]["device_map"] is None


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("llamabench: error: ")
    return err


def test_device_map_is_refused_under_torchrun(workspace, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run_cli(workspace, "out", "--device-map", "auto") == 2
    err = one_line_error(capsys)
    assert "--device-map auto cannot run under torchrun (WORLD_SIZE=2)" in err
    assert "run a single process with --device-map, or drop --device-map for one replica per GPU" in err
    assert not dist.is_initialized() and not (workspace / "out").exists()


def test_device_map_with_an_explicit_device_is_refused(workspace, capsys):
    assert run_cli(workspace, "out", "--device", "cpu", "--device-map", "balanced") == 2
    assert "--device cpu conflicts with --device-map balanced" in one_line_error(capsys)


def test_unknown_device_map_is_refused(model_dir):
    with pytest.raises(LlamabenchError, match="--device-map balanced_low_0 is not one of auto, balanced, sequential"):
        HFBackend.load(str(model_dir), device_map="balanced_low_0")
