"""Sampled generations are seeded per request: reproducible, independent of the batch, distinct across repeats."""

import pytest
from builders import QA_TASK, spec_of

from llamabench.requests import GenerationRequest, sampling_seed
from llamabench.tasks.build import build_requests


def test_sampling_repeats_reproducibly_and_batched_same_as_alone_path_equivalence(tiny_backend):
    """Path equivalence (two of our own paths): a batch of four samples what each request sampled alone gives."""
    requests = [GenerationRequest(f"Once {i}", 12, (), False, sampling_seed(0, "t", i)) for i in range(4)]
    alone = [tiny_backend(batch_size=1).generate([r])[0] for r in requests]
    batched = tiny_backend(batch_size=4).generate(requests)
    assert batched == alone == tiny_backend(batch_size=4).generate(requests)
    same_prompt = [
        GenerationRequest("Once", 12, (), False, sampling_seed(0, "t", "doc", repeat)) for repeat in range(3)
    ]
    assert len(set(tiny_backend().generate(same_prompt))) == 3  # repeats are distinct samples


def test_sampled_requests_need_a_seed_and_get_one_per_document():
    with pytest.raises(ValueError, match="needs a seed"):
        GenerationRequest("p", 4, (), greedy=False)
    spec = spec_of(QA_TASK.replace('until: ["\\n"]', 'until: ["\\n"], greedy: false'))
    docs = [{"question": "q", "answer": "a"}] * 3
    seeds = [doc.requests[0].seed for doc in build_requests(spec, docs, seed=7)]
    assert len(set(seeds)) == 3 and seeds == [doc.requests[0].seed for doc in build_requests(spec, docs, seed=7)]
    assert seeds != [doc.requests[0].seed for doc in build_requests(spec, docs, seed=8)]


def test_lm_eval_repeats_are_distinct_seeded_samples(tiny_backend):
    from lm_eval.api.instance import Instance

    from llamabench.interop.lm_eval.model import LlamabenchLM

    args = ("Once upon", {"until": ["\n\n"], "max_gen_toks": 10, "do_sample": True})
    request = Instance(request_type="generate_until", doc={}, arguments=args, idx=0, metadata=("t", 0, 3))
    first = LlamabenchLM(tiny_backend(), seed=1).generate_until([request] * 3)  # lm-eval lists repeats so
    assert len(set(first)) == 3
    assert LlamabenchLM(tiny_backend(), seed=1).generate_until([request] * 3) == first
