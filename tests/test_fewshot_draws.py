"""Few-shot examples: never the document itself (nor a copy of it), drawn by lm-eval's rule.

The oracle is lm-eval 0.4.13's own ``ContextSampler.sample``: it draws ``num_fewshot + 1`` documents and drops
those equal to the evaluated one (resampling from the pool without them if too few remain). Given the same
seeded generator llamabench uses for that document, it must pick the same examples in the same order.
"""

import random

import pytest
from builders import task_dict
from lm_eval.api.samplers import ContextSampler

from llamabench.tasks.build import build_requests
from llamabench.tasks.task_file import parse_task

SPEC = parse_task(
    task_dict("fs", "generate", "d.jsonl", ["exact_match"], prompt="Q: {{ q }} A:", target="{{ a }}"), "fs.yaml"
)


def lm_eval_prompt(doc: dict, pool: list[dict], index: int, shots: int, seed: int) -> str:
    """The prompt lm-eval's sampler gives ``doc`` when it draws with llamabench's per-document generator."""
    sampler = ContextSampler(pool)
    sampler.rnd = random.Random(f"{seed}:{SPEC.name}:{index}")
    examples = sampler.sample(shots, eval_doc=doc)
    return "".join(f"Q: {e['q']} A: {e['a']}\n\n" for e in examples) + f"Q: {doc['q']} A:"


def docs_of(n: int) -> list[dict]:
    return [{"q": f"question {i}", "a": f"answer {i}"} for i in range(n)]


@pytest.mark.parametrize(("n", "shots", "seed"), [(5, 4, 0), (6, 2, 3), (12, 3, 7), (40, 5, 1)])
def test_few_shot_draws_equal_lm_evals_sampler_and_never_hold_the_document(n, shots, seed):
    docs = docs_of(n)
    built = build_requests(SPEC, docs, num_fewshot=shots, seed=seed)
    for index, (doc, request) in enumerate(zip(docs, built, strict=True)):
        assert request.prompt == lm_eval_prompt(doc, docs, index, shots, seed)
        examples = request.prompt.split("\n\n")[:-1]
        assert f"Q: {doc['q']} A: {doc['a']}" not in examples
        assert len(examples) == shots == len(set(examples))


def test_a_pool_holding_copies_of_the_documents_never_gives_a_document_itself():
    """The few-shot pool may be read separately from the evaluated documents (equal dicts, other objects)."""
    docs = docs_of(6)
    pool = [dict(doc) for doc in docs]
    for seed in range(20):
        for index, request in enumerate(build_requests(SPEC, docs, num_fewshot=4, fewshot_pool=pool, seed=seed)):
            assert f"Q: question {index} A: answer {index}\n\n" not in request.prompt, (seed, index)
            assert request.prompt == lm_eval_prompt(docs[index], pool, index, 4, seed)


def test_an_identical_twin_of_a_document_is_not_its_example_either():
    """Two documents with the same fields are the same example: neither is shown before the other, as in
    lm-eval (which compares documents by value); the draw is filled from the rest of the pool."""
    docs = [*docs_of(4), {"q": "question 0", "a": "answer 0"}]
    for seed in range(30):
        built = build_requests(SPEC, docs, num_fewshot=3, seed=seed)
        for index in (0, 4):
            assert "Q: question 0 A: answer 0\n\n" not in built[index].prompt
            assert built[index].prompt == lm_eval_prompt(docs[index], docs, index, 3, seed)
        assert all(len(request.prompt.split("\n\n")) == 4 for request in built)
