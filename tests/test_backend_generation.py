"""Generation: batched left-padded greedy decoding equals one-at-a-time decoding; stop sequences cut."""

import pytest
import torch

from llamabench.backends.common.stops import cut_at_stop
from llamabench.backends.hf.batching import BatchPolicy
from llamabench.errors import LlamabenchError
from llamabench.requests import GenerationRequest

PROMPTS = ["Once upon a time", "A", "The rain in Spain stays mainly in the", "1, 2, 3,"]


def greedy_by_hand(backend, prompt: str, max_new: int) -> str:
    ids = backend.tokenizer(prompt, add_special_tokens=False).input_ids
    with torch.no_grad():
        for _ in range(max_new):
            next_id = int(backend.model(torch.tensor([ids])).logits[0, -1].argmax())
            if next_id == backend.tokenizer.eos_token_id:
                break
            ids.append(next_id)
    return backend.tokenizer.decode(ids[len(backend.tokenizer(prompt, add_special_tokens=False).input_ids) :])


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
def test_batched_greedy_generation_equals_hand_loop(tiny_backend, kv_cache):
    backend = tiny_backend(batch_size=4, kv_cache=kv_cache)
    requests = [GenerationRequest(p, max_new_tokens=12) for p in PROMPTS]
    outputs = backend.generate(requests)
    assert outputs == [greedy_by_hand(backend, p, 12) for p in PROMPTS]
    assert backend.policy.sizes_used == {4: 1}


def test_unknown_kv_cache_is_refused(tiny_backend):
    with pytest.raises(LlamabenchError, match="--kv-cache paged is not one of dynamic, static"):
        tiny_backend(kv_cache="paged")


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
def test_stop_sequences_end_generation_and_are_cut(tiny_backend, kv_cache):
    backend = tiny_backend(batch_size=2, kv_cache=kv_cache)
    free = backend.generate([GenerationRequest(p, max_new_tokens=24) for p in PROMPTS])
    stops = [text[3:5] for text in free]  # a stop sequence that certainly occurs in each free generation
    stopped = backend.generate([GenerationRequest(p, 24, until=(s,)) for p, s in zip(PROMPTS, stops, strict=True)])
    for text, stop, full in zip(stopped, stops, free, strict=True):
        assert text == full[: full.find(stop)]
        assert stop not in text


def test_cut_at_stop_takes_earliest_stop():
    assert cut_at_stop("abc\nxyz. more", ("\n", ".")) == "abc"
    assert cut_at_stop("no stop here", ("\n",)) == "no stop here"
    assert cut_at_stop("", ("\n",)) == ""


def test_out_of_memory_batches_are_split_without_losing_items():
    calls = []

    def forward(items):
        calls.append(len(items))
        if len(items) > 2:
            raise torch.OutOfMemoryError("simulated")
        return [item * 10 for item in items]

    policy = BatchPolicy(token_budget=1000)
    assert policy.run(list(range(7)), forward) == [0, 10, 20, 30, 40, 50, 60]
    assert policy.token_budget == 125  # halved on each of the three out-of-memory splits
    assert sum(n for n in calls if n <= 2) == 7
    assert set(policy.sizes_used) <= {1, 2}


def test_batches_after_an_out_of_memory_split_are_planned_with_the_smaller_budget():
    failed = []

    def forward(items):  # 20 padded tokens fit, more do not
        if 10 * len(items) > 20:
            failed.append(len(items))
            raise torch.OutOfMemoryError("simulated")
        return items

    policy = BatchPolicy(token_budget=80)
    done = [i for batch in policy.plan([10] * 16) for i in policy.run(batch, forward)]
    assert sorted(done) == list(range(16))
    assert failed == [8, 4, 4]  # only the first batch fails: the seven others were never planned at 80 tokens
    assert policy.sizes_used == {2: 4, 1: 8}


def test_out_of_memory_on_one_item_is_a_clear_error():
    def forward(items):
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(LlamabenchError, match="out of GPU memory on a single sequence"):
        BatchPolicy(token_budget=10).run([1], forward)


def test_token_budget_plan_groups_longest_first():
    policy = BatchPolicy(token_budget=20)
    assert list(policy.plan([3, 10, 5, 5, 2])) == [[1, 2], [3, 0, 4]]
    assert list(BatchPolicy(token_budget=0, max_items=2).plan([3, 10, 5])) == [[1, 2], [0]]
