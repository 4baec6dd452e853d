"""What the backend refuses or avoids in running a model: windows below two tokens or past the trained positions,
logits reshaped in forward, numeric flags out of range (before the model loads), a KV cache while scoring, and
where generation stops."""

import pytest
import torch
from builders import write_run_workspace
from conftest import byte_tokenizer, tiny_llama

from llamabench.backends.hf.backend import HFBackend
from llamabench.cli.app import main
from llamabench.errors import LlamabenchError
from llamabench.requests import GenerationRequest, LoglikelihoodRequest


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    return write_run_workspace(tmp_path, monkeypatch)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--max-length", "-1"], "--max-length -1"),
        (["--max-length", "1"], "--max-length 1"),
        (["--seed", "-1"], "--seed -1"),
        (["--bootstrap-iters", "-5"], "--bootstrap-iters -5"),
        (["--max-length", "4"], "max_new_tokens 4 leaves no room"),
    ],
)
def test_numeric_flags_fail_before_the_model_loads(workspace, capsys, flags, named):
    argv = ["run", "--model", str(workspace / "no-such-model"), "--tasks", "tiny_qa"]
    argv += ["--tasks-dir", str(workspace / "tasks"), "--data-dir", str(workspace), *flags]
    assert main([*argv, "--output-dir", str(workspace / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err and "no-such-model" not in err


def test_context_length_below_two_tokens_is_refused_before_any_backend_is_built(notes_file):
    # One place checks it, RunConfig.validate, which every entry point (CLI, evaluate_*, the callback) goes through.
    import llamabench

    with pytest.raises(LlamabenchError, match="--max-length -1 must be >= 2 tokens"):
        llamabench.evaluate_model(tiny_llama(), byte_tokenizer(), [], text=[str(notes_file)], max_length=-1)


def test_context_past_the_trained_positions_is_refused():
    with pytest.raises(LlamabenchError, match="exceeds the 256 positions model t was trained for"):
        HFBackend(tiny_llama(max_positions=256), byte_tokenizer(), model_id="t", max_length=257)


def test_models_that_reshape_logits_in_forward_are_refused():
    model = tiny_llama()
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(LlamabenchError, match="post-processes its logits"):
        HFBackend(model, byte_tokenizer(), model_id="t")


def test_scoring_builds_no_key_value_cache(tiny_backend):
    backend = tiny_backend()
    outputs = []
    backend.model.base_model.register_forward_hook(lambda module, args, output: outputs.append(output))
    backend.loglikelihood([LoglikelihoodRequest("The cat", " sat")])
    assert len(outputs) == 1 and outputs[0].past_key_values is None


def test_generation_stops_at_every_eos_in_the_generation_config():
    tokenizer, model = byte_tokenizer(), tiny_llama()
    prompt = "The quick brown fox"
    ids = torch.tensor([tokenizer(prompt).input_ids])
    free = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=257)[0, ids.shape[1] :].tolist()
    stop = free[3]  # the fourth greedy token becomes a second end-of-turn token, as <|eot_id|> in Llama-3-Instruct
    model.generation_config.eos_token_id = [257, stop]
    (text,) = HFBackend(model, tokenizer, model_id="t", progress=False).generate([GenerationRequest(prompt, 8, ())])
    assert text == tokenizer.decode(free[: free.index(stop)])


@pytest.mark.parametrize(
    ("file", "content"),
    [
        ("added_tokens.json", {"Q:": 258}),  # a token id one past the 258-row embedding
        ("special_tokens_map.json", {"eos_token": "\n\n"}),  # an end-of-sequence text the vocabulary lacks
    ],
)
def test_a_tokenizer_reaching_past_the_model_vocabulary_is_one_line(tmp_path, notes_file, capsys, file, content):
    import json

    from conftest import save_tiny_model

    from llamabench.cli import main

    folder = save_tiny_model(tmp_path / "ckpt")
    (folder / file).write_text(json.dumps(content))
    argv = ["run", "--model", str(folder), "--text", str(notes_file), "--text-format", "lines", "--no-cache"]
    assert main([*argv, "--output-dir", str(tmp_path / "runs")]) == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert line.startswith("llamabench: error: model ") and "258" in line and "vocabulary" in line, line
