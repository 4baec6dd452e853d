"""evaluate_model on a model in memory (one process): the numbers of `llamabench run` on its saved checkpoint, a
fingerprint that follows every weight, a cache that never mixes two models up, and the model left as it was."""

import pandas as pd
import pytest
import torch
from conftest import byte_tokenizer, save_tiny_model, tiny_llama

import llamabench
from llamabench.backends.loading.model_fingerprint import fingerprint_model
from llamabench.cli.app import main
from llamabench.errors import LlamabenchError
from llamabench.records.store import RunStore


def cli_run(model_dir, data_dir, out, notes_file, *flags) -> pd.DataFrame:
    argv = ["run", "--model", str(model_dir), "--tasks", "qa", "--limit", "2", "--no-cache"]
    argv += ["--text", str(notes_file), "--text-format", "lines"]
    assert main([*argv, "--data-dir", str(data_dir), "--output-dir", str(out), *flags]) == 0
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    return pd.read_csv(folder / "results.csv")


@pytest.mark.parametrize(("batch_size", "rtol"), [(1, 0.0), ("auto", 1e-5)])
def test_in_memory_numbers_equal_a_cli_run_on_the_saved_checkpoint(tmp_path, data_dir, notes_file, batch_size, rtol):
    model, tokenizer = tiny_llama(3), byte_tokenizer()
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    reference = cli_run(tmp_path / "ckpt", data_dir, tmp_path / "cli", notes_file, "--batch-size", str(batch_size))
    texts = {"text": [str(notes_file)], "text_format": "lines"}
    run = llamabench.evaluate_model(
        model, tokenizer, ["qa"], limit=2, batch_size=batch_size, data_dir=data_dir, no_cache=True, **texts
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


@pytest.fixture
def notes(notes_file) -> dict:
    """Settings for fast evaluations: perplexity of three short lines."""
    return {"text": [str(notes_file)], "text_format": "lines", "batch_size": 1}


def test_the_cache_never_serves_one_in_memory_model_to_another(tmp_path, notes, monkeypatch):
    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    model, tokenizer = tiny_llama(0), byte_tokenizer()
    first = llamabench.evaluate_model(model, tokenizer, [], **notes)
    again = llamabench.evaluate_model(model, tokenizer, [], **notes)
    assert again.manifest["backend"]["cache"]["computed"] == 0 and again.manifest["backend"]["cache"]["hits"] == 3
    pd.testing.assert_frame_equal(first.results.drop(columns="timestamp"), again.results.drop(columns="timestamp"))
    with torch.no_grad():
        model.lm_head.weight[0, 0] += 0.5
    changed = llamabench.evaluate_model(model, tokenizer, [], **notes)
    assert changed.manifest["backend"]["cache"]["hits"] == 0
    uncached = llamabench.evaluate_model(model, tokenizer, [], no_cache=True, **notes)
    assert changed.results.value.tolist() == uncached.results.value.tolist() != first.results.value.tolist()


def test_train_eval_flags_and_grad_mode_are_restored_and_the_run_is_stored(tmp_path, notes):
    model, tokenizer = tiny_llama(0), byte_tokenizer()
    model.train()
    model.model.layers[0].eval()  # a mixed state, as a partly frozen model has
    flags = [m.training for m in model.modules()]
    model.lm_head.weight.requires_grad_(False)
    run = llamabench.evaluate_model(model, tokenizer, [], step=40, output_dir=tmp_path / "runs", no_cache=True, **notes)
    assert [m.training for m in model.modules()] == flags
    assert torch.is_grad_enabled() and not model.lm_head.weight.requires_grad and model.model.norm.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())
    stored = RunStore.in_dir(tmp_path / "runs").load(run.manifest["run_id"])
    assert stored.manifest["step"] == 40 and stored.manifest["backend"]["fingerprint"].startswith("memory:")


def test_loading_settings_are_refused_for_a_model_in_memory(data_dir):
    with pytest.raises(LlamabenchError, match="dtype apply to checkpoints loaded from files"):
        llamabench.evaluate_model(tiny_llama(0), byte_tokenizer(), ["ppl"], dtype="bfloat16", data_dir=data_dir)


def test_evaluate_checkpoint_is_the_cli_run_and_records_it(tmp_path, data_dir, notes_file):
    save_tiny_model(tmp_path / "ckpt")
    reference = cli_run(tmp_path / "ckpt", data_dir, tmp_path / "cli", notes_file, "--batch-size", "2")
    texts = {"text": [str(notes_file)], "text_format": "lines"}
    run = llamabench.evaluate_checkpoint(
        str(tmp_path / "ckpt"),
        ["qa"],
        limit=2,
        batch_size=2,
        data_dir=data_dir,
        output_dir=tmp_path / "api",
        no_cache=True,
        **texts,
    )
    assert run.results.value.tolist() == reference.value.tolist()
    assert RunStore.in_dir(tmp_path / "api").list().run_id.tolist() == [run.manifest["run_id"]]
