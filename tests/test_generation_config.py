"""A checkpoint's generation config: both engine paths (continuous batching and ``--kv-cache static``) give what
transformers' ``generate`` gives on each prompt alone, greedy, with the model's own ``generation_config`` (the
call lm-eval's HF backend makes); a setting neither path can honour is refused before any forward pass."""

from collections import Counter

import pytest
import torch

from llamabench.backends.hf.backend import HFBackend
from llamabench.backends.hf.static_generation import SeededSampler
from llamabench.errors import LlamabenchError
from llamabench.requests import GenerationRequest
from tests.conftest import byte_tokenizer, tiny_llama

# Prompts of different lengths (one a single token: forced_bos_token_id applies only there), so a static batch
# pads every prompt but the longest.
PROMPTS = ["A", "Once upon a time", "The rain in Spain stays mainly in the", "1, 2, 3,", "zz"]
MAX_NEW = 12
EOS = 257


def oracle(model, prompt: str, max_new: int = MAX_NEW, seed: int | None = None) -> str:
    """transformers' ``generate`` on ``prompt`` alone, greedy (or drawn by ``seed``), with the model's own
    generation config; the text before the first end-of-sequence token."""
    tokenizer = byte_tokenizer()
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    sampler = None if seed is None else [SeededSampler([seed])]
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            logits_processor=sampler,
        )
    new = out[0, ids.shape[1] :].tolist()
    eos = model.generation_config.eos_token_id
    eos = {EOS, *(eos if isinstance(eos, list) else [eos])}
    end = next((i for i, token in enumerate(new) if token in eos), len(new))
    return tokenizer.decode(new[:end], skip_special_tokens=True)


def base_tokens() -> list[list[int]]:
    """Each prompt's plain greedy tokens on the seed-0 tiny model (to pick tokens the settings act on)."""
    tokenizer = byte_tokenizer()
    model = tiny_llama()
    rows = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=EOS)
        rows.append(out[0, ids.shape[1] :].tolist())
    return rows


BASE = base_tokens()
COMMON = Counter(token for row in BASE for token in row).most_common(1)[0][0]
SECOND = Counter(token for row in BASE for token in row).most_common(2)[1][0]
BIGRAM = BASE[1][2:4]

# Settings that change greedy output, each honoured by both paths.
HONOURED = {
    "repetition_penalty": {"repetition_penalty": 1.6},
    "no_repeat_ngram_size": {"no_repeat_ngram_size": 2},
    "bad_words_one_token": {"bad_words_ids": [[COMMON]]},
    "bad_words_two_tokens": {"bad_words_ids": [BIGRAM]},
    "suppress_tokens": {"suppress_tokens": [COMMON, SECOND]},
    "begin_suppress_tokens": {"begin_suppress_tokens": sorted({row[0] for row in BASE})},
    "several_eos": {"eos_token_id": [EOS, COMMON]},
    "min_new_tokens": {"eos_token_id": [EOS, COMMON], "min_new_tokens": 6},
    "min_length": {"eos_token_id": [EOS, COMMON], "min_length": 9},
    "forced_eos_token_id": {"forced_eos_token_id": EOS},
    "forced_bos_token_id": {"forced_bos_token_id": 70},
    "sequence_bias": {"sequence_bias": {(COMMON,): -9.0, tuple(BIGRAM): 6.0}},
    "sequence_bias_as_json_holds_it": {"sequence_bias": [[[COMMON], -9.0], [BIGRAM, 6.0]]},
    "exponential_decay": {"eos_token_id": [EOS, SECOND], "exponential_decay_length_penalty": (2, 3.0)},
    "combined": {"repetition_penalty": 1.2, "no_repeat_ngram_size": 3, "suppress_tokens": [SECOND]},
}
# Settings a greedy ``generate`` call like lm-eval's (do_sample=False, max_new_tokens given) does not apply.
NEUTRAL = {
    "max_length": {"max_length": 4},
    "sampling_defaults": {"do_sample": True, "temperature": 0.3, "top_k": 2, "top_p": 0.4},
    "pad_token_id": {"pad_token_id": 0},
    "no_op_values": {"repetition_penalty": 1.0, "num_beams": 1, "no_repeat_ngram_size": 0},
    # what older transformers wrote to generation_config.json: every field, at its default
    "every_field_at_its_old_default": {
        **{"max_length": 20, "min_length": 0, "early_stopping": False, "do_sample": False, "num_beams": 1},
        **{"num_beam_groups": 1, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "typical_p": 1.0},
        **{"epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "diversity_penalty": 0.0, "repetition_penalty": 1.0},
        **{"encoder_repetition_penalty": 1.0, "length_penalty": 1.0, "no_repeat_ngram_size": 0},
        **{"renormalize_logits": False, "remove_invalid_values": False, "token_healing": False},
        **{"num_return_sequences": 1, "output_scores": False, "return_dict_in_generate": False},
        **{"encoder_no_repeat_ngram_size": 0, "is_assistant": False, "num_assistant_tokens": 20},
        **{"num_assistant_tokens_schedule": "constant", "assistant_confidence_threshold": 0.4},
        **{"assistant_lookbehind": 10, "target_lookbehind": 10, "use_cache": True, "return_legacy_cache": True},
    },
}
# Settings that make ``generate`` something other than one greedy or sampled sequence per request.
REFUSED = {
    "num_beams": {"num_beams": 3},
    "penalty_alpha": {"penalty_alpha": 0.6, "top_k": 4},
    "guidance_scale": {"guidance_scale": 1.5},
    "num_return_sequences": {"num_return_sequences": 2, "do_sample": True},
    "stop_strings": {"stop_strings": ["x"]},
    "max_time": {"max_time": 5.0},
}


def configured_model(settings: dict):
    model = tiny_llama()
    for name, value in settings.items():
        setattr(model.generation_config, name, value)
    return model


def backend(model, kv_cache: str, batch_size: int | str = 4) -> HFBackend:
    return HFBackend(
        model, byte_tokenizer(), model_id="tiny-0", progress=False, kv_cache=kv_cache, batch_size=batch_size
    )


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
@pytest.mark.parametrize("name", sorted(HONOURED))
def test_greedy_generation_honours_the_checkpoints_setting_as_generate_alone_does(name, kv_cache):
    model = configured_model(HONOURED[name])
    expected = [oracle(model, prompt) for prompt in PROMPTS]
    plain = [oracle(tiny_llama(), prompt) for prompt in PROMPTS]
    assert expected != plain, f"{name} must change the greedy output for this test to mean anything"
    got = backend(model, kv_cache).generate([GenerationRequest(p, MAX_NEW) for p in PROMPTS])
    assert got == expected


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
@pytest.mark.parametrize("name", sorted(NEUTRAL))
def test_settings_greedy_generate_ignores_change_nothing(name, kv_cache):
    model = configured_model(NEUTRAL[name])
    expected = [oracle(model, prompt) for prompt in PROMPTS]
    assert expected == [oracle(tiny_llama(), prompt) for prompt in PROMPTS]
    got = backend(model, kv_cache).generate([GenerationRequest(p, MAX_NEW) for p in PROMPTS])
    assert got == expected


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
def test_sampled_generation_applies_the_checkpoints_processors_before_drawing(kv_cache):
    # Strong enough to change draws from a near-uniform distribution: most tokens suppressed, none repeated.
    model = configured_model({"suppress_tokens": list(range(200)), "no_repeat_ngram_size": 1})
    seeds = [11 + i for i in range(len(PROMPTS))]
    expected = [oracle(model, prompt, seed=seed) for prompt, seed in zip(PROMPTS, seeds, strict=True)]
    plain = [oracle(tiny_llama(), prompt, seed=seed) for prompt, seed in zip(PROMPTS, seeds, strict=True)]
    assert expected != plain
    requests = [GenerationRequest(p, MAX_NEW, greedy=False, seed=s) for p, s in zip(PROMPTS, seeds, strict=True)]
    assert backend(model, kv_cache).generate(requests) == expected


def test_continuous_rows_of_one_batch_equal_rows_alone_with_a_setting():
    """Our engine with one slot and with five: a row's processors see only its own tokens."""
    model = configured_model({"no_repeat_ngram_size": 2, "min_length": 9, "eos_token_id": [EOS, COMMON]})
    requests = [GenerationRequest(p, MAX_NEW) for p in PROMPTS]
    assert backend(model, "dynamic", 1).generate(requests) == backend(model, "dynamic", 5).generate(requests)


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_setting_no_path_honours_is_refused_before_any_forward_pass(name, kv_cache):
    model = configured_model(REFUSED[name])
    calls = []
    model.register_forward_pre_hook(lambda *args: calls.append(1))
    ours = backend(model, kv_cache)
    with pytest.raises(LlamabenchError, match=rf"generation_config.json.*{name}") as error:
        ours.generate([GenerationRequest(p, MAX_NEW) for p in PROMPTS])
    assert "\n" not in str(error.value)
    assert calls == []
    with pytest.raises(LlamabenchError, match=rf"task t1: .*generation_config.json.*{name}"):
        ours.require_generation("t1")  # the same check, made by the runner before any task runs
