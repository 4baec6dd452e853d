"""A lone surrogate in a generation prompt or stop sequence is named as a data problem, in one line, before the
model computes anything (never a tokenizer TypeError, nor a 'check the disk' encoding error after the work)."""

import pytest

from llamabench.cli.app import _one_line
from llamabench.errors import LlamabenchError
from llamabench.requests import GenerationRequest


@pytest.mark.parametrize("kv_cache", ["dynamic", "static"])
@pytest.mark.parametrize(
    "request_",
    [GenerationRequest("Q: caf\ud800\nA:", 4), GenerationRequest("Q: 2+2?\nA:", 4, until=("\n", "\udcff"))],
    ids=["prompt", "stop"],
)
def test_lone_surrogate_in_a_generation_request_is_a_data_error(tiny_backend, kv_cache, request_):
    backend = tiny_backend(kv_cache=kv_cache)
    calls = []
    backend.model.register_forward_pre_hook(lambda *args: calls.append(1))
    with pytest.raises(LlamabenchError, match="lone surrogate") as error:
        backend.generate([GenerationRequest("fine", 4), request_])
    assert "disk" not in _one_line(error.value) and "\n" not in str(error.value)
    assert calls == []
