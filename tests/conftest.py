import os
from pathlib import Path

import pytest

# The tiny random LLaMA and its byte tokenizer are those of `llamabench examples` (the docs' checkpoints).
from llamabench.examples import byte_tokenizer, tiny_llama

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
        pytest.skip(
            f"shared test data not found at {path} (WikiText-2 test, WMT22 de-en, CNN/DM REALSumm-100, SQuAD v1.1 dev, "
            "XSum ROUGE pairs): docs/ci.md 'The test data' says where each comes from; set LLAMABENCH_DATA to it"
        )
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
