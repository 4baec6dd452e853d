"""Prompts longer than the window keep exactly the tokens lm-eval's HF backend keeps: for generation the last
``max_length - max_gen_toks`` tokens (``generate_until``: ``context_enc[:, -max_ctx_len:]``), for scoring the last
``max_length + 1`` of context and continuation (``_loglikelihood_tokens``), checked against lm-eval itself."""

import pytest
import torch

from llamabench.backends.hf.backend import HFBackend
from llamabench.requests import GenerationRequest, LoglikelihoodRequest
from tests.conftest import byte_tokenizer, lm_eval_instances, tiny_llama

MAX_LENGTH = 48
MAX_NEW = 8
# Byte tokens: each prompt is longer than MAX_LENGTH - MAX_NEW (and than MAX_LENGTH) tokens.
PROMPTS = [
    "The quick brown fox jumps over the lazy dog, and then the dog wakes up and chases it home.",
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!",
    "x" * 41 + "yz",  # one token longer than the prompt room
    "a" * 39 + "bc",  # exactly the prompt room
]


def lm_eval_hf():
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=tiny_llama(), tokenizer=byte_tokenizer(), max_length=MAX_LENGTH, batch_size=1, device="cpu")


def ours(kv_cache: str) -> HFBackend:
    return HFBackend(
        tiny_llama(), byte_tokenizer(), model_id="tiny-0", progress=False, max_length=MAX_LENGTH, kv_cache=kv_cache
    )


def test_generation_keeps_the_last_max_length_minus_max_new_tokens():
    backend = ours("dynamic")
    for prompt in PROMPTS:
        tokens = byte_tokenizer()(prompt, add_special_tokens=False).input_ids
        kept = backend.tokens.generation_prompt(GenerationRequest(prompt, MAX_NEW))
        assert kept == tokens[len(tokens) - (MAX_LENGTH - MAX_NEW) :]  # by hand: lm-eval's max_ctx_len
        assert len(kept) == min(len(tokens), MAX_LENGTH - MAX_NEW)


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
def test_truncated_generation_equals_lm_eval_hf(kv_cache):
    gen_kwargs = {"until": ["\n\n\n"], "max_gen_toks": MAX_NEW, "do_sample": False}
    expected = lm_eval_hf().generate_until(lm_eval_instances("generate_until", [(p, gen_kwargs) for p in PROMPTS]))
    requests = [GenerationRequest(p, MAX_NEW, until=("\n\n\n",)) for p in PROMPTS]
    assert ours(kv_cache).generate(requests) == expected


def test_truncated_generation_equals_generate_on_the_kept_tokens():
    """The same rule with transformers' generate as the oracle, on every prompt length around the room."""
    model, tokenizer = tiny_llama(), byte_tokenizer()
    backend = HFBackend(model, tokenizer, model_id="tiny-0", progress=False, max_length=MAX_LENGTH)
    room = MAX_LENGTH - MAX_NEW
    prompts = [PROMPTS[0][:n] for n in (room - 1, room, room + 1, room + 2, len(PROMPTS[0]))]
    expected = []
    for prompt in prompts:
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False).input_ids[-room:]])
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        new = out[0, ids.shape[1] :].tolist()
        new = new[: new.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in new else new
        expected.append(tokenizer.decode(new))
    assert backend.generate([GenerationRequest(p, MAX_NEW) for p in prompts]) == expected


def test_truncated_loglikelihood_contexts_equal_lm_eval_hf():
    pairs = [(p[:-6], p[-6:]) for p in PROMPTS] + [(PROMPTS[0], " and more")]
    pairs.append(("some context that runs on and on", " " + PROMPTS[1][:46]))  # a continuation near the window
    expected = lm_eval_hf().loglikelihood(lm_eval_instances("loglikelihood", pairs))
    got = ours("dynamic").loglikelihood([LoglikelihoodRequest(c, x) for c, x in pairs])
    for (logprob, greedy), (their_logprob, their_greedy) in zip(got, expected, strict=True):
        assert logprob == pytest.approx(their_logprob, rel=1e-5, abs=1e-5)
        assert greedy == their_greedy
