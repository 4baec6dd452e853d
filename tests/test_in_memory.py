"""evaluate_model on a model in memory (one process): the numbers of `llamabench run` on its saved checkpoint, a
fingerprint that follows every weight, a cache that never mixes two models up, and the model left as it was."""

import pandas as pd
import pytest
import torch
from conftest import byte_tokenizer, save_tiny_model, tiny_llama

import llamabench
from llamabench.backends.model_fingerprint import fingerprint_model
from llamabench.cli import main
from llamabench.errors import LlamabenchError
from llamabench.store import RunStore

TASKS = "ppl,qa"


def cli_run(model_dir, data_dir, out, *flags) -> pd.DataFrame:
    argv = ["run", "--model", str(model_dir), "--tasks", TASKS, "--limit", "3", "--no-cache"]
    assert main([*argv, "--data-dir", str(data_dir), "--output-dir", str(out), *flags]) == 0
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return pd.read_csv(folder / "results.csv")


@pytest.mark.parametrize(("batch_size", "rtol"), [(1, 0.0), ("auto", 1e-5)])
def test_in_memory_numbers_equal_a_cli_run_on_the_saved_checkpoint(tmp_path, data_dir, batch_size, rtol):
    model, tokenizer = tiny_llama(3), byte_tokenizer()
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    reference = cli_run(tmp_path / "ckpt", data_dir, tmp_path / "cli", "--batch-size", str(batch_size))
    run = llamabench.evaluate_model(
        model, tokenizer, TASKS.split(","), limit=3, batch_size=batch_size, data_dir=data_dir, cache="off"
    )
    ours = run.results.set_index(["task", "metric"]).value
    theirs = reference.set_index(["task", "metric"]).value
    pd.testing.assert_series_equal(ours.sort_index(), theirs.sort_index(), rtol=rtol, atol=0, check_exact=rtol == 0)


def test_one_changed_weight_changes_the_fingerprint_and_a_reload_keeps_it(tmp_path):
    model, tokenizer = tiny_llama(0), byte_tokenizer()
    before = fingerprint_model(model, tokenizer)
    save_tiny_model(tmp_path / "ckpt")
    from transformers import AutoModelForCausalLM

    assert fingerprint_model(AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt"), tokenizer) == before
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 5] += 1e-6
    assert fingerprint_model(model, tokenizer) != before
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 5] -= 1e-6
    model.model.rotary_emb.inv_freq[0] += 1  # a buffer changes numbers too
    assert fingerprint_model(model, tokenizer) != before


def test_the_cache_never_serves_one_in_memory_model_to_another(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    model, tokenizer = tiny_llama(0), byte_tokenizer()
    settings = {"limit": 2, "batch_size": 1, "data_dir": data_dir}
    first = llamabench.evaluate_model(model, tokenizer, ["ppl"], **settings)
    again = llamabench.evaluate_model(model, tokenizer, ["ppl"], **settings)
    assert again.manifest["backend"]["cache"]["computed"] == 0
    pd.testing.assert_frame_equal(first.results.drop(columns="timestamp"), again.results.drop(columns="timestamp"))
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 0.5
    changed = llamabench.evaluate_model(model, tokenizer, ["ppl"], **settings)
    assert changed.manifest["backend"]["cache"]["hits"] == 0
    uncached = llamabench.evaluate_model(model, tokenizer, ["ppl"], cache="off", **settings)
    assert changed.results.value.tolist() == uncached.results.value.tolist() != first.results.value.tolist()


def test_train_eval_flags_and_grad_mode_are_restored_and_the_run_is_stored(tmp_path, data_dir):
    model, tokenizer = tiny_llama(0), byte_tokenizer()
    model.train()
    model.model.layers[0].eval()  # a mixed state, as a partly frozen model has
    flags = [m.training for m in model.modules()]
    model.lm_head.weight.requires_grad_(False)
    run = llamabench.evaluate_model(
        model, tokenizer, ["ppl"], step=40, limit=1, data_dir=data_dir, output_dir=tmp_path / "runs", cache="off"
    )
    assert [m.training for m in model.modules()] == flags
    assert torch.is_grad_enabled() and not model.lm_head.weight.requires_grad and model.model.norm.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    stored = RunStore.in_dir(tmp_path / "runs").load(run.manifest["run_id"])
    assert stored.manifest["step"] == 40 and stored.manifest["backend"]["fingerprint"].startswith("memory:")


def test_loading_settings_are_refused_for_a_model_in_memory(data_dir):
    with pytest.raises(LlamabenchError, match="dtype apply to checkpoints loaded from files"):
        llamabench.evaluate_model(tiny_llama(0), byte_tokenizer(), ["ppl"], dtype="bfloat16", data_dir=data_dir)
