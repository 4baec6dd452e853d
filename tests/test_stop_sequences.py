"""Stop sequences cut a generation at the earliest stop in the text, whatever the order they are listed in, on both
engine paths: checked by hand and against lm-eval's own stop handling."""

import pytest
from lm_eval.models.utils import postprocess_generated_text

from llamabench.backends.common.stops import cut_at_stop
from llamabench.requests import GenerationRequest

PROMPTS = ["Once upon a time", "A", "The rain in Spain stays mainly in the", "1, 2, 3,"]


@pytest.mark.parametrize(
    ("text", "until", "expected"),
    [
        ("abc.def\nghi", ("\n", "."), "abc"),  # the second listed stop comes first
        ("abc.def\nghi", (".", "\n"), "abc"),
        ("one two; three. four", ("four", ".", ";"), "one two"),  # the last listed comes first
        ("aXbYc", ("Y", "Z", "X"), "a"),
        ("no stop", ("Z", "Y"), "no stop"),
        ("stop at start", ("start", "s"), ""),
    ],
)
def test_cut_at_stop_takes_the_earliest_stop_in_the_text(text, until, expected):
    assert cut_at_stop(text, until) == expected
    assert postprocess_generated_text(text, list(until), None) == expected  # lm-eval's rule agrees


@pytest.fixture(params=["dynamic", "static"])
def unstopped(request, tiny_backend):
    """A backend (batches of two, the parameter's KV cache) and its 24 new tokens after each prompt, with no stop."""
    backend = tiny_backend(batch_size=2, kv_cache=request.param)
    return backend, backend.generate([GenerationRequest(p, max_new_tokens=24) for p in PROMPTS])


def test_generation_stops_at_the_earliest_stop_when_a_later_listed_one_occurs_first(unstopped):
    backend, free = unstopped
    requests, expected = [], []
    for prompt, text in zip(PROMPTS, free, strict=True):
        # Two-character stops where they first occur: the one listed first occurs later, after the other ends.
        # (Not a replacement character: a byte of a partial character decodes otherwise at another cut.)
        pairs = [text[i : i + 2] for i in range(1, len(text) - 1) if "\ufffd" not in text[i : i + 2]]
        firsts = sorted({text.find(pair): pair for pair in pairs}.items())
        (start, early), (_, late) = firsts[0], firsts[-1]
        assert start + len(early) <= text.find(late)
        until = (late, "\x00never\x00", early)
        requests.append(GenerationRequest(prompt, 24, until=until))
        expected.append(text[: text.find(early)])  # by hand: everything before the earliest stop
        assert postprocess_generated_text(text, list(until), None) == expected[-1]
    assert backend.generate(requests) == expected


def test_two_stops_completed_by_one_token_cut_at_the_one_that_starts_first(unstopped):
    """``"c"`` listed before ``"abc"``: the token ``c`` completes both, and the text ends before ``a``."""
    backend, free = unstopped
    requests, expected = [], []
    for prompt, text in zip(PROMPTS, free, strict=True):
        i = next(
            i
            for i in range(1, len(text) - 2)
            if text[i + 2] not in text[: i + 2] and "\ufffd" not in text[i : i + 3] and text.find(text[i : i + 3]) == i
        )
        until = (text[i + 2], text[i : i + 3])
        requests.append(GenerationRequest(prompt, 24, until=until))
        expected.append(text[:i])  # by hand
    assert backend.generate(requests) == expected
