"""Real-model checks on SmolLM2-135M (the embedded default model), CPU, fp32.

The WikiText-2 figures are lm-eval 0.4.13's own, produced on this model and text (HF backend,
fp32, CPU) by ``python bench/vs_lm_eval.py --data-dir ../shared/data --ppl-docs N``. The first
eight articles run in every test run; all 62 (about 30 minutes on 2 CPU cores) run with
``LLAMABENCH_FULL_PPL=1``.
"""

import math
import os

import pytest
import torch
from conftest import lm_eval_instances

from llamabench.backends.hf.backend import HFBackend
from llamabench.backends.loading.model_source import resolve_model
from llamabench.config import RunConfig
from llamabench.native import prepare_tasks
from llamabench.pipeline import Evaluation
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, RollingRequest

LM_EVAL_WIKITEXT2_FIRST8 = {  # lm-eval 0.4.13, the first 8 WikiText-2 raw test articles
    "word_perplexity": 29.170496,
    "byte_perplexity": 1.918815,
    "bits_per_byte": 0.940215,
}
LM_EVAL_WIKITEXT2 = {  # lm-eval 0.4.13, all 62 WikiText-2 raw test articles
    "word_perplexity": 30.71274819099721,
    "byte_perplexity": 1.8973000916408722,
    "bits_per_byte": 0.9239478845910695,
}


def assert_wikitext2_matches(backend, data_dir, limit, expected):
    config = RunConfig(tasks=["ppl"], data_dir=data_dir, limit=limit)
    run = Evaluation.prepare(config).run_backend(backend)
    assert run.results.n.unique().tolist() == [limit or 62]
    for metric, value in expected.items():
        assert math.isclose(run.value("wikitext2", metric), value, rel_tol=1e-4), metric
    # token perplexity is over SmolLM2's own tokens, so it sits between the byte and word figures
    assert expected["byte_perplexity"] < run.value("wikitext2", "token_perplexity") < expected["word_perplexity"]


def test_wikitext2_first_articles_perplexity_equals_lm_eval(smollm2, data_dir):
    assert_wikitext2_matches(smollm2, data_dir, 8, LM_EVAL_WIKITEXT2_FIRST8)


@pytest.mark.skipif(not os.environ.get("LLAMABENCH_FULL_PPL"), reason="about 30 minutes; set LLAMABENCH_FULL_PPL=1")
def test_full_wikitext2_perplexity_equals_lm_eval(smollm2, data_dir):
    assert_wikitext2_matches(smollm2, data_dir, None, LM_EVAL_WIKITEXT2)


def test_strided_token_perplexity_is_lower_than_disjoint(smollm2, data_dir):
    # Hugging Face's perplexity guide: sliding windows give every token more context, so a real model's
    # perplexity drops (GPT-2 on WikiText-2: 19.44 with stride 512 vs 25.19 disjoint at 1024 tokens).
    text = (data_dir / "wikitext2_raw_test" / "wiki.test.raw").read_text(encoding="utf-8")[:6000]
    backend = HFBackend(smollm2.model, smollm2.tokenizer, model_id="smollm2", max_length=256, progress=False)
    (disjoint, n_disjoint), (strided, n_strided) = backend.loglikelihood_rolling(
        [RollingRequest(text), RollingRequest(text, stride=64)]
    )
    assert n_disjoint == n_strided > 1000  # the same tokens, each scored once
    assert math.exp(-strided / n_strided) < math.exp(-disjoint / n_disjoint)


def test_dense_cache_equals_the_gguf_weights(smollm2):
    from transformers import AutoModelForCausalLM

    source = resolve_model(None)
    direct = AutoModelForCausalLM.from_pretrained(source.location, gguf_file=source.gguf_file).eval()
    tokens = torch.tensor([[1, 504, 3458, 314, 253, 1345, 30, 2]])
    with torch.no_grad():
        assert torch.equal(direct(tokens).logits, smollm2.model(tokens).logits)


def test_real_model_scores_are_batch_size_invariant(smollm2, data_dir):
    config = RunConfig(tasks=["qa"], limit=6, data_dir=data_dir)
    docs = prepare_tasks(config)[0].docs
    pairs = [LoglikelihoodRequest(d["context"] + "\nQ: " + d["question"] + "\nA:", " " + d["answers"][0]) for d in docs]
    rolling = [RollingRequest(d["context"]) for d in docs]
    batched = HFBackend(smollm2.model, smollm2.tokenizer, model_id="smollm2", batch_size="auto", progress=False)
    single = HFBackend(smollm2.model, smollm2.tokenizer, model_id="smollm2", batch_size=1, progress=False)
    for ours, theirs in (
        (batched.loglikelihood(pairs), single.loglikelihood(pairs)),
        (batched.loglikelihood_rolling(rolling), single.loglikelihood_rolling(rolling)),
    ):
        for (a, _), (b, _) in zip(ours, theirs, strict=True):
            assert math.isclose(a, b, rel_tol=1e-4)
    assert max(batched.policy.sizes_used) == 6


def test_requests_equal_lm_eval_hf_backend_on_smollm2(smollm2, data_dir):
    """Rolling perplexity, multiple-choice log-likelihoods and greedy generations, request for request."""
    from lm_eval.models.huggingface import HFLM

    docs = prepare_tasks(RunConfig(tasks=["qa"], limit=4, data_dir=data_dir, num_fewshot=0))[0].docs
    peer = HFLM(pretrained=smollm2.model, tokenizer=smollm2.tokenizer, batch_size=4, max_length=512, device="cpu")
    ours = HFBackend(smollm2.model, smollm2.tokenizer, model_id="smollm2", max_length=512, progress=False)

    texts = [d["context"] * 2 for d in docs]  # ~300-700 tokens: several 512-token windows each
    for (value, _), expected in zip(
        ours.loglikelihood_rolling([RollingRequest(t) for t in texts]),
        peer.loglikelihood_rolling(lm_eval_instances("loglikelihood_rolling", [(t,) for t in texts])),
        strict=True,
    ):
        assert math.isclose(value, expected, rel_tol=1e-4)

    pairs = [(f"{d['context']}\nQ: {d['question']}\nA:", f" {a}") for d in docs for a in {*d["answers"], "Paris"}]
    for (value, greedy), (expected, expected_greedy) in zip(
        ours.loglikelihood([LoglikelihoodRequest(c, x) for c, x in pairs]),
        peer.loglikelihood(lm_eval_instances("loglikelihood", pairs)),
        strict=True,
    ):
        assert math.isclose(value, expected, rel_tol=1e-4) and greedy == expected_greedy

    prompts = [f"{d['context']}\n\nQ: {d['question']}\nA:" for d in docs]
    gen_kwargs = {"until": ["\n"], "max_gen_toks": 16, "do_sample": False}
    assert ours.generate([GenerationRequest(p, 16, ("\n",)) for p in prompts]) == peer.generate_until(
        lm_eval_instances("generate_until", [(p, gen_kwargs) for p in prompts])
    )
