import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    return Path(os.environ.get("LLAMABENCH_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The public evaluation data beside the checkout (../shared/data or $LLAMABENCH_DATA)."""
    path = _shared_data_dir()
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data not found at {path}; CI must have ../shared beside the checkout")
        pytest.skip(f"shared data not found at {path}; set LLAMABENCH_DATA")
    return path


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M, the embedded default model, in fp32 on CPU."""
    from llamabench.backends.hf.backend import HFBackend

    return HFBackend.load(None, device="cpu", dtype="float32")


PERPLEXITIES = ["word_perplexity", "byte_perplexity", "bits_per_byte"]


# The body of an lm-eval task YAML: the rolling log-likelihood of each document's ``text``, with lm-eval's perplexities.
LM_EVAL_ROLLING_TASK = {
    "output_type": "loglikelihood_rolling",
    "doc_to_text": "",
    "doc_to_target": "{{text}}",
    "metric_list": [{"metric": metric} for metric in PERPLEXITIES],
}


def byte_tokenizer():
    """A byte-level tokenizer (one token per UTF-8 byte) with <s>=256 and </s>=257, built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab.update({"<s>": 256, "</s>": 257})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="</s>")


def tiny_llama(
    seed: int = 0, max_positions: int = 256, hidden_size: int = 48, intermediate_size: int = 96, vocab_size: int = 258
):
    """A randomly initialised 2-layer LlamaForCausalLM over the byte vocabulary (``vocab_size`` rows: more leave
    room for added tokens)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=257,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def save_tiny_model(folder: Path, seed: int = 0, **sizes) -> Path:
    """Write ``tiny_llama(seed, **sizes)`` and the byte tokenizer to ``folder`` as a checkpoint ``--model`` can
    load."""
    tiny_llama(seed, **sizes).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


def lm_eval_instances(kind: str, arguments: list[tuple]) -> list:
    """lm-eval requests of one ``kind`` (``loglikelihood``, ``generate_until``, ...), one per argument tuple."""
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=args, idx=i) for i, args in enumerate(arguments)]


@pytest.fixture
def tiny_backend():
    """Factory for an HFBackend over a tiny random model: tiny_backend(batch_size=..., max_length=...)."""
    from llamabench.backends.hf.backend import HFBackend

    def make(seed: int = 0, **kwargs):
        return HFBackend(tiny_llama(seed), byte_tokenizer(), model_id=f"tiny-{seed}", progress=False, **kwargs)

    return make


# Three short English lines: a perplexity task (`--text NOTES --text-format lines`) that a tiny model scores in
# milliseconds, for tests that evaluate many times.
NOTES = "The cat sat on the mat.\nA quick brown fox jumps over the lazy dog.\nRain fell all night on the old town.\n"


@pytest.fixture
def notes_file(tmp_path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text(NOTES)
    return path
