"""Shared-prefix scoring: requests sharing their context run it once, with log-likelihoods equal to the by-hand
oracle (the model's own forward pass over each request's tokens alone), which the packing must not change."""

import pytest
import torch

from llamabench.backends.common.score_items import ScoreItem
from llamabench.backends.hf.score_rows import attention_mask, shared_prefix_rows
from llamabench.requests import LoglikelihoodRequest

QUESTION = "Question: which of these is a colour?\nAnswer:"
LONG = "A context long enough to be cut on the left when the window is short. " * 3
REQUESTS = [
    LoglikelihoodRequest(QUESTION, " blue"),
    LoglikelihoodRequest("2 + 2 =", " 4"),  # a group of one
    LoglikelihoodRequest(QUESTION, " a wooden chair"),
    LoglikelihoodRequest("", "Hello"),  # empty contexts share the prefix token alone
    LoglikelihoodRequest(QUESTION, " seven"),
    LoglikelihoodRequest("", "Hello world, again"),
    LoglikelihoodRequest(LONG, " yes"),
    LoglikelihoodRequest(LONG, " no, not at all"),
    LoglikelihoodRequest("The capital of France is ", "Paris"),  # trailing space: moves to the continuation
    LoglikelihoodRequest("The capital of France is ", "Lyon"),
    LoglikelihoodRequest("Pick one:", " x"),  # one-token continuations: the prefix alone predicts them
    LoglikelihoodRequest("Pick one:", " y"),
]


@torch.no_grad()
def by_hand(backend, requests):
    """Every (context, continuation) scored from the model's own forward pass over its tokens alone (not the
    backend's scoring rows): the sum of its targets' log-probabilities, and whether each is the argmax."""
    scores = []
    for request in requests:
        item = backend.tokens.loglikelihood_item(request.context, request.continuation)
        logits = backend.model(input_ids=torch.tensor([item.tokens[:-1]], device=backend.device)).logits[0]
        logprobs = torch.log_softmax(logits.double(), dim=-1)
        positions = range(len(item.tokens) - 1 - item.n_target, len(item.tokens) - 1)
        targets = item.tokens[-item.n_target :]
        value = float(sum(logprobs[p, t] for p, t in zip(positions, targets, strict=True)))
        scores.append((value, all(int(logits[p].argmax()) == t for p, t in zip(positions, targets, strict=True))))
    return scores


def assert_same_scores(ours, reference):
    for (value, greedy), (expected, expected_greedy) in zip(ours, reference, strict=True):
        assert value == pytest.approx(expected, rel=1e-5, abs=1e-4)  # fp32 sums: the oracle sums in float64
        assert greedy == expected_greedy


@pytest.mark.parametrize("max_length", [24, 64, 256])
@pytest.mark.parametrize("batch_size", ["auto", 2, 1])
def test_shared_prefix_scores_equal_the_by_hand_oracle(tiny_backend, max_length, batch_size):
    backend = tiny_backend(max_length=max_length, batch_size=batch_size)
    assert_same_scores(backend.loglikelihood(REQUESTS), by_hand(backend, REQUESTS))


def test_rows_group_requests_with_one_context_after_truncation(tiny_backend):
    backend = tiny_backend(max_length=64)
    items = [backend.tokens.loglikelihood_item(r.context, r.continuation) for r in REQUESTS]
    rows = shared_prefix_rows(items, max_tokens=256)
    # The long context is cut differently for its two continuations (64 tokens minus each one's length), so
    # the two share no prefix and get a row each.
    assert sorted(sorted(row.items) for row in rows) == [[0, 2, 4], [1], [3, 5], [6], [7], [8, 9], [10, 11]]
    assert [row.segments is None for row in rows if len(row.items) == 1] == [True, True, True]


def test_shared_row_layout_by_hand():
    # Prefix [10, 11]; continuations [12, 13] and [14, 15, 16], drawn in score_rows' docstring.
    items = [ScoreItem([10, 11, 12, 13], 2), ScoreItem([10, 11, 14, 15, 16], 3)]
    (row,) = shared_prefix_rows(items, max_tokens=100)
    assert row.tokens == [10, 11, 12, 14, 15]
    assert row.positions == [0, 1, 2, 2, 3]
    assert row.segments == [0, 0, 1, 2, 2]
    assert row.predictors == [[1, 2], [1, 3, 4]]
    assert row.targets == [[12, 13], [14, 15, 16]]
    allowed = attention_mask([row], 6, torch.float32)[0, 0] == 0
    expected = [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [1, 1, 0, 1, 0, 0],  # 14 sees the prefix and itself, not 12
        [1, 1, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 1],  # padding sees itself only
    ]
    assert allowed.int().tolist() == expected


def test_a_group_too_long_for_one_row_is_split_with_the_prefix_repeated():
    items = [ScoreItem([7, 7, 7, 1, 2, 3], 3) for _ in range(5)]  # prefix 3 tokens, each continuation feeds 2
    rows = shared_prefix_rows(items, max_tokens=7)
    assert [len(row.tokens) for row in rows] == [7, 7, 5]
    assert sorted(i for row in rows for i in row.items) == [0, 1, 2, 3, 4]
    assert rows[-1].segments is None  # a single left-over continuation runs as a plain row


def embedding_inputs(backend, requests) -> list[tuple[int, int]]:
    """(rows, width) of every batch of token ids the model's embedding sees while scoring ``requests``."""
    shapes = []
    hook = backend.model.get_input_embeddings().register_forward_hook(
        lambda _module, args, _out: shapes.append(tuple(args[0].shape))
    )
    try:
        backend.loglikelihood(requests)
    finally:
        hook.remove()
    return shapes


def test_shared_prefix_runs_once(tiny_backend):
    # The byte tokenizer: one token per byte, no special tokens added.
    questions = {QUESTION: [" red", " blue", " green"], "2 + 2 =": [" 4", " five", " 22"]}
    requests = [LoglikelihoodRequest(q, c) for q, choices in questions.items() for c in choices]
    fed = {q: len(q.encode()) + sum(len(c.encode()) - 1 for c in choices) for q, choices in questions.items()}
    # One pass, one row per question: its prefix once, then each continuation but its last token.
    assert embedding_inputs(tiny_backend(), requests) == [(2, max(fed.values()))]


def test_shared_prefix_scores_equal_the_by_hand_oracle_on_smollm2(smollm2):
    backend = smollm2
    requests = [
        LoglikelihoodRequest(f"German: {source}\nEnglish:", f" {choice}")
        for source in ["Das Haus ist klein.", "Ich habe heute keine Zeit, morgen aber gern."]
        for choice in ["The house is small.", "I have no time today, but gladly tomorrow.", "Where is the station?"]
    ]
    assert_same_scores(backend.loglikelihood(requests), by_hand(backend, requests))
