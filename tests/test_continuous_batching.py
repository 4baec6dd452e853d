"""Continuous batching: rows that finish leave, waiting requests join, and every output equals the request's own
one-at-a-time greedy decoding (full recomputation each step, no cache, no batch-mates)."""

import os

import pytest
import torch
from conftest import byte_tokenizer
from transformers import GPT2Config, GPT2LMHeadModel, MistralConfig, MistralForCausalLM

from llamabench.backends.common.stops import cut_at_stop
from llamabench.backends.hf import generation
from llamabench.backends.hf.backend import HFBackend
from llamabench.backends.hf.stops import StopCheck
from llamabench.errors import LlamabenchError
from llamabench.requests import GenerationRequest

PROMPTS = [
    "Once upon a time",
    "A",
    "The rain in Spain stays mainly in the",
    "1, 2, 3,",
    "xyzzy plugh",
    "Hello, world. ",
    "Q",
]


def alone(backend, prompt: str, max_new: int, until: tuple[str, ...] = ()) -> str:
    """Greedy decoding of one request by hand: the whole sequence re-run for every token."""
    ids = backend.tokenizer(prompt, add_special_tokens=False).input_ids
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new):
            token = int(backend.model(torch.tensor([ids + new])).logits[0, -1].argmax())
            if token in backend.eos_tokens:
                break
            new.append(token)
    return cut_at_stop(backend.tokenizer.decode(new, skip_special_tokens=True), until)


def generate_recording_widths(backend, requests: list[GenerationRequest]) -> tuple[list[str], list[tuple[int, int]]]:
    """The backend's outputs, and the (rows, positions) shape of every forward pass it ran for them."""
    widths: list[tuple[int, int]] = []
    hook = backend.model.get_input_embeddings().register_forward_hook(
        lambda _module, args, _out: widths.append(tuple(args[0].shape))
    )
    try:
        return backend.generate(requests), widths
    finally:
        hook.remove()


def short_of_memory_at_pass(backend, n: int) -> None:
    """Make the backend model's ``n``-th forward pass (counted from 1) fail for lack of memory, once."""
    forward, calls = backend.model.forward, []

    def forward_or_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise torch.OutOfMemoryError("simulated")
        return forward(*args, **kwargs)

    backend.model.forward = forward_or_fail


def generate_reporting(backend, requests: list[GenerationRequest]) -> tuple[list[str], list[int]]:
    """The backend's outputs, and the request indices its ``on_done`` reported, in order, repeats kept."""
    reported: list[int] = []
    return backend.generate(requests, on_done=lambda done, _texts: reported.extend(done)), reported


def ascii_pair(text: str, start: int) -> str:
    """The first two ASCII characters in a row of ``text`` from ``start`` on: a stop sequence that
    certainly occurs there and spans two byte tokens."""
    for k in range(start, len(text) - 1):
        pair = text[k : k + 2]
        if pair.isascii():
            return pair
    raise AssertionError(f"no ASCII pair in {text!r}")


def test_continuous_batching_equals_one_request_at_a_time(tiny_backend):
    backend = tiny_backend(batch_size=3)  # 7 requests over 3 slots: four join as others leave
    max_new = [20, 6, 18, 12, 20, 9, 16]
    free = [alone(backend, p, n) for p, n in zip(PROMPTS, max_new, strict=True)]
    # Stops hit at different steps (searched from the first, third or fifth character); the others run to their
    # limit.
    stops = {0: ascii_pair(free[0], 2), 1: ascii_pair(free[1], 0), 2: ascii_pair(free[2], 4), 5: ascii_pair(free[5], 0)}
    requests = [
        GenerationRequest(p, n, (stops[i],) if i in stops else ())
        for i, (p, n) in enumerate(zip(PROMPTS, max_new, strict=True))
    ]
    got = backend.generate(requests)
    assert got == [alone(backend, r.prompt, r.max_new_tokens, r.until) for r in requests]
    assert all(stops[i] not in got[i] for i in stops)
    assert backend.policy.sizes_used == {3: 1}


def test_a_finished_row_stops_computing(tiny_backend):
    backend = tiny_backend(batch_size=2)
    assert alone(backend, "Hello, world. ", 8) == "y" * 8  # this model repeats "y" after that prompt
    (text,) = backend.generate([GenerationRequest("Hello, world. ", 100, ("yyy",))])
    assert text == ""
    # The stop spans three tokens and is caught by the pass that completes it: 3 passes, not 100.
    assert backend.engine.stats.forwards == 3


def test_stop_split_across_tokens_is_caught_at_the_token_that_completes_it(tiny_backend):
    tokenizer = tiny_backend().tokenizer  # one token per UTF-8 byte: every stop below spans several tokens
    text = "abc Q: déjà vu é. end"
    tokens = tokenizer(text, add_special_tokens=False).input_ids
    for stop in ("Q:", "é.", "vu é", " end"):
        check = StopCheck(tokenizer, (stop,))
        first = next(n for n in range(1, len(tokens) + 1) if check.hit(tokens[:n]))
        assert first == len((text[: text.index(stop)] + stop).encode())  # bytes up to the stop's last one


def test_stop_check_confirms_on_the_whole_text(tiny_backend):
    tokenizer = tiny_backend().tokenizer
    check = StopCheck(tokenizer, ("\n",))
    assert not check.hit(tokenizer("no newline here", add_special_tokens=False).input_ids)
    assert check.hit(tokenizer("line\n", add_special_tokens=False).input_ids)
    assert not StopCheck(tokenizer, ()).hit(tokenizer("a\nb", add_special_tokens=False).input_ids)


def test_out_of_memory_restarts_the_running_rows_with_fewer_slots(tiny_backend):
    requests = [GenerationRequest(p, 10) for p in PROMPTS]
    expected = [alone(tiny_backend(), r.prompt, r.max_new_tokens) for r in requests]
    backend = tiny_backend(batch_size=4)
    short_of_memory_at_pass(backend, 5)  # mid-run: some requests finished, others running, others waiting
    got, reported = generate_reporting(backend, requests)
    assert got == expected
    assert sorted(reported) == list(range(len(requests)))  # each request reported once


def test_out_of_memory_on_one_row_is_a_clear_error(tiny_backend):
    backend = tiny_backend(batch_size=2)

    def short_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("simulated")

    backend.model.forward = short_of_memory
    with pytest.raises(LlamabenchError, match="out of GPU memory generating a single sequence"):
        backend.generate([GenerationRequest("a", 4), GenerationRequest("b", 4)])


# Two paragraphs, each asked about three times: 40+ shared bytes (tokens, with the byte tokenizer) per paragraph.
PARAGRAPHS = ["The tower was finished in 1889 for the fair. ", "Rivers carry water from the hills down to sea. "]
QUESTIONS = ["Q: When? A:", "Q: What for? A:", "Q: Where is it? A:"]


def test_prompts_sharing_a_prefix_reuse_it_and_equal_one_request_at_a_time(tiny_backend):
    prompts = [p + q for p in PARAGRAPHS for q in QUESTIONS] + ["unrelated prompt"]
    backend = tiny_backend(batch_size=2)  # 7 requests over 2 slots: shared prefixes found at joins too
    got = backend.generate([GenerationRequest(p, 12) for p in prompts])
    assert got == [alone(backend, p, 12) for p in prompts]
    # Each paragraph's prompts after the first reuse at least the paragraph (one token short of the prompt at
    # most): 2 paragraphs x 2 later prompts x len(paragraph) bytes.
    assert backend.engine.stats.reused_prompt_tokens >= sum(2 * len(p.encode()) for p in PARAGRAPHS)


def test_prompts_admitted_together_prefill_their_shared_prefix_once(tiny_backend):
    prompts = [PARAGRAPHS[0] + q for q in QUESTIONS]
    backend = tiny_backend(batch_size=3)
    got, widths = generate_recording_widths(backend, [GenerationRequest(p, 4) for p in prompts])
    assert got == [alone(backend, p, 4) for p in prompts]
    # The three prompts share "<paragraph>Q: Wh" (When, What, Where); that prefix runs once, then the three
    # rests, then three decoding steps (the fourth token ends each request).
    shared = len(os.path.commonprefix([p.encode() for p in prompts]))
    assert shared == len((PARAGRAPHS[0] + "Q: Wh").encode())
    rests = max(len((PARAGRAPHS[0] + q).encode()) - shared for q in QUESTIONS)
    assert widths[:2] == [(1, shared), (3, rests)]
    assert widths[2:] == [(3, 1)] * 3


def test_draft_tokens_confirmed_and_rejected_leave_outputs_unchanged(tiny_backend):
    # 40 tokens each: the tiny random model falls into repeats that the row's own text predicts, and also
    # leaves them, so some drafts are confirmed and some cut short (their cache columns masked, then dropped).
    backend = tiny_backend(batch_size=3)
    got = backend.generate([GenerationRequest(p, 40) for p in PROMPTS])
    assert got == [alone(backend, p, 40) for p in PROMPTS]
    stats = backend.engine.stats
    assert 0 < stats.accepted < stats.drafted


def test_a_repeating_row_takes_fewer_passes_than_tokens(tiny_backend):
    backend = tiny_backend(batch_size=1)
    (text,) = backend.generate([GenerationRequest("Hello, world. ", 60)])
    # This model repeats "y" after that prompt, then "@": each run is predicted by the row's own text.
    assert text == alone(backend, "Hello, world. ", 60) == "y" * 28 + "@" * 32
    # One row is all weight reading: drafts of the repeat are checked several at a time.
    assert backend.engine.stats.forwards < 30


def test_prompts_of_very_different_lengths_prefill_in_separate_passes(tiny_backend):
    prompts = ["A", "The rain in Spain stays mainly in the plain, and the plain in Spain is mainly rain. " * 2]
    backend = tiny_backend(batch_size=2)
    got, widths = generate_recording_widths(backend, [GenerationRequest(p, 4) for p in prompts])
    assert got == [alone(backend, p, 4) for p in prompts]
    # One token per byte: one pass padded to the long prompt would compute 2 x 172 tokens, two passes 173.
    assert widths[:2] == [(1, len(prompts[1].encode())), (1, 1)]


def test_sampled_rows_beside_drafting_rows_draw_as_they_would_alone(tiny_backend):
    # Sampled rows take no drafts (a draw is not the model's one choice to check); in a pass where greedy rows
    # carry drafts they are padded, and each still draws from its own seed at its own position.
    sampled = [GenerationRequest(f"Once {i}", 30, (), False, 1000 + i) for i in range(2)]
    backend = tiny_backend(batch_size=3)
    got = backend.generate([*sampled, GenerationRequest("Hello, world. ", 30)])
    assert got[:2] == [tiny_backend(batch_size=1).generate([request])[0] for request in sampled]
    assert got[2] == alone(backend, "Hello, world. ", 30)
    assert backend.engine.stats.accepted > 0


def test_a_row_drafts_no_more_tokens_than_it_has_left(tiny_backend):
    backend = tiny_backend(batch_size=1)
    (text,), widths = generate_recording_widths(backend, [GenerationRequest("Hello, world. ", 5)])
    assert text == "yyyyy"
    # The prefill gives "y"; "y" never occurred before, so one plain step gives the second; then "y" repeats and
    # 3 tokens are left: the newest token and 2 drafts (not the 3 an unlimited row of acceptance 1/2 would take:
    # see test_step_cost) finish the row in one pass.
    assert widths == [(1, len(b"Hello, world. ")), (1, 1), (1, 3)]


# --- faults and other architectures (found by review) ------------------------------------------------------------


def test_out_of_memory_in_a_later_prefill_pass_reruns_no_reported_request(tiny_backend):
    # The long prompt prefills in a pass of its own and finishes there (one new token); the pass for "A" fails.
    requests = [GenerationRequest("A", 4), GenerationRequest(PROMPTS[2] * 5, 1)]
    expected = [alone(tiny_backend(), r.prompt, r.max_new_tokens) for r in requests]
    backend = tiny_backend(batch_size=2)
    short_of_memory_at_pass(backend, 2)
    got, reported = generate_reporting(backend, requests)
    assert got == expected
    assert sorted(reported) == [0, 1]


def test_out_of_memory_while_dropping_finished_rows_loses_none(tiny_backend, monkeypatch):
    requests = [GenerationRequest(p, n) for p, n in zip(PROMPTS[:3], [3, 10, 10], strict=True)]
    expected = [alone(tiny_backend(), r.prompt, r.max_new_tokens) for r in requests]
    backend = tiny_backend(batch_size=3)
    select, calls = generation._Batch._select, []

    def short_of_memory_once(batch, keep):
        calls.append(1)
        if len(calls) == 1:  # the rows are chosen, then the copy of their cache fails
            batch.rows = [batch.rows[r] for r in keep]
            raise torch.OutOfMemoryError("simulated")
        return select(batch, keep)

    monkeypatch.setattr(generation._Batch, "_select", short_of_memory_once)
    got, reported = generate_reporting(backend, requests)
    assert got == expected
    assert sorted(reported) == [0, 1, 2]


def test_padding_beside_drafts_stays_within_learned_positions():
    # GPT-2 learns 32 positions; an 8-token request whose 24-token prompt fills the rest shares passes with a row
    # that drafts. Padding given positions past its row's last would index past the position table.
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=258, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=256, eos_token_id=257
    )
    backend = HFBackend(GPT2LMHeadModel(config).eval(), byte_tokenizer(), model_id="g", progress=False, batch_size=2)
    full = "".join(chr(33 + (i * 37) % 94) for i in range(24))
    requests = [GenerationRequest(full, 8), GenerationRequest("ab" * 6, 20)]
    assert backend.generate(requests) == [alone(backend, r.prompt, r.max_new_tokens) for r in requests]
    assert backend.engine.stats.drafted > 0


def test_a_sliding_window_model_keeps_rows_contiguous_and_generates_as_alone():
    # Mistral's window counts cache columns: an empty column among a row's own (a rejected draft, the gap after
    # a reused prefix) would shrink it. So no drafts and no prefix reuse there.
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=258, hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, sliding_window=8, bos_token_id=256, eos_token_id=257,
    )  # fmt: skip
    backend = HFBackend(MistralForCausalLM(config).eval(), byte_tokenizer(), model_id="m", progress=False, batch_size=2)
    prompts = [*PROMPTS, *(p + q for p in PARAGRAPHS for q in QUESTIONS)]
    assert backend.generate([GenerationRequest(p, 40) for p in prompts]) == [alone(backend, p, 40) for p in prompts]
    assert backend.engine.stats.drafted == backend.engine.stats.reused_prompt_tokens == 0
