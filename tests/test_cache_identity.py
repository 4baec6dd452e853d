"""The request cache's key holds every setting and code version that changes a number."""

import torch
import transformers
from conftest import byte_tokenizer, tiny_llama

from llamabench.backends.hf.backend import HFBackend


def test_cache_identity_names_every_setting_that_changes_numbers():
    model, tokenizer = tiny_llama(), byte_tokenizer()
    base = HFBackend(model, tokenizer, model_id="t", model_fingerprint="fp", max_length=64)
    identity = base.cache_identity()
    assert f"torch={torch.__version__}" in identity and f"transformers={transformers.__version__}" in identity
    variants = [
        HFBackend(model, tokenizer, model_id="t", model_fingerprint="fp", max_length=32),
        HFBackend(model, tokenizer, model_id="t", model_fingerprint="fp", max_length=64, kv_cache="static"),
        HFBackend(model, tokenizer, model_id="t", model_fingerprint="other", max_length=64),
        HFBackend(tiny_llama().to(torch.bfloat16), tokenizer, model_id="t", model_fingerprint="fp", max_length=64),
    ]
    assert len({identity, *(v.cache_identity() for v in variants)}) == 5


def test_remote_code_and_code_versions_are_in_the_cache_identity():
    from llamabench import __version__

    plain = HFBackend(tiny_llama(), byte_tokenizer(), model_id="t", model_fingerprint="fp").cache_identity()
    remote = HFBackend(tiny_llama(), byte_tokenizer(), model_id="t", model_fingerprint="fp", trust_remote_code=True)
    assert remote.cache_identity() != plain and f"llamabench={__version__}" in plain and "tokenizers=" in plain
