"""Model fingerprints read every byte that changes a number (weights, config, tokenizer, generation config,
sharded subfolders) and nothing else; the digest memo never serves a rewritten file."""

import json
import math
from pathlib import Path

import pytest
import torch
import transformers
from builders import TEXTS, cli_run, write_run_workspace
from conftest import save_tiny_model
from safetensors.torch import load_file, save_file

from llamabench.backends.loading.fingerprint import DigestMemo, fingerprint_files, model_files
from llamabench.backends.loading.model_source import ModelSource, fingerprint
from llamabench.errors import LlamabenchError


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    return write_run_workspace(tmp_path, monkeypatch)


def save_wide_model(folder: Path) -> Path:
    """A random LLaMA over the byte vocabulary whose weights file (~6 MiB) has tensors more than a MiB from either
    end, where a hash of the first and last MiB cannot see them."""
    return save_tiny_model(folder, hidden_size=256, intermediate_size=1024)


def edit_middle_tensor(checkpoint: Path) -> None:
    """Zero the weight matrix at the middle of model.safetensors: same file size, other numbers."""
    path = checkpoint / "model.safetensors"
    raw = path.read_bytes()
    header_size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_size])
    middle = (len(raw) - 8 - header_size) // 2
    name = next(
        key
        for key, info in header.items()
        if key != "__metadata__" and info["data_offsets"][0] <= middle < info["data_offsets"][1]
    )
    tensors = load_file(path)
    tensors[name] = torch.zeros_like(tensors[name])
    save_file(tensors, path, metadata={"format": "pt"})
    assert path.stat().st_size == len(raw)


def edit_middle_tensor_at(path: Path) -> None:
    tensors = load_file(path)
    name = sorted(tensors)[len(tensors) // 2]
    tensors[name] = torch.zeros_like(tensors[name])
    save_file(tensors, path, metadata={"format": "pt"})


def token_perplexity_by_torch(checkpoint: Path, texts: list[str]) -> float:
    """The reference: the checkpoint loaded by transformers, each text's tokens scored after <s> in one forward
    pass (every text fits the window), exp(-sum of log-probabilities / tokens)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    total, count = 0.0, 0
    for text in texts:
        ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False).input_ids]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1].double()
        total += logits.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None]).sum().item()
        count += len(ids) - 1
    return math.exp(-total / count)


def test_checkpoints_differing_in_one_middle_tensor_never_share_results(workspace):
    first, second = save_wide_model(workspace / "a"), save_wide_model(workspace / "b")
    edit_middle_tensor(second)
    assert (first / "model.safetensors").stat().st_size > 4 << 20
    cached = [cli_run(workspace, model, f"out-{model.name}", "--tasks", "tiny_ppl") for model in (first, second)]
    assert cached[0].results.model_fingerprint[0] != cached[1].results.model_fingerprint[0]
    expected = [token_perplexity_by_torch(model, TEXTS) for model in (first, second)]
    assert abs(expected[0] - expected[1]) > 1e-3 * expected[0]  # the edit changes the number
    for run, value in zip(cached, expected, strict=True):  # the second run was not served the first's results
        assert run.value("tiny_ppl", "token_perplexity") == pytest.approx(value, rel=1e-5)


def test_fingerprint_covers_config_tokenizer_and_generation_config_but_not_training_state(tmp_path):
    model = save_tiny_model(tmp_path / "m")
    source = ModelSource("m", str(model))
    base = fingerprint(source)
    (model / "optimizer.pt").write_bytes(b"optimizer state")
    (model / "trainer_state.json").write_text("{}")
    (model / "README.md").write_text("notes")
    assert fingerprint(source) == base
    for name in ("generation_config.json", "tokenizer_config.json", "config.json"):
        path = model / name
        original = path.read_bytes()
        path.write_bytes(original.replace(b"}", b', "x": 1}', 1))
        assert fingerprint(source) != base, name
        path.write_bytes(original)
    assert fingerprint(source) == base


def test_same_bytes_in_another_folder_give_the_same_fingerprint(tmp_path):
    first = save_tiny_model(tmp_path / "first")
    second = tmp_path / "elsewhere" / "second"
    second.mkdir(parents=True)
    for file in model_files(first):
        (second / file.name).write_bytes(file.read_bytes())
    assert fingerprint(ModelSource("a", str(first))) == fingerprint(ModelSource("b", str(second)))


def test_memo_serves_unchanged_files_and_never_a_rewritten_one(tmp_path, monkeypatch):
    model = save_tiny_model(tmp_path / "m")
    monkeypatch.setattr("llamabench.backends.loading.fingerprint.SETTLE_SECONDS", 0.0)
    files = model_files(model)
    hashed: list[str] = []  # the files whose bytes were read: a memo miss stores a new digest
    real_store = DigestMemo._store
    monkeypatch.setattr(
        DigestMemo, "_store", lambda self, key, digest: hashed.append(key[0]) or real_store(self, key, digest)
    )
    before = fingerprint_files(model, files, DigestMemo(tmp_path / "memo.sqlite"))
    assert len(hashed) == len(files)
    assert fingerprint_files(model, files, DigestMemo(tmp_path / "memo.sqlite")) == before
    assert len(hashed) == len(files)  # a second process reads no byte of unchanged files
    edit_middle_tensor(model)  # same size, rewritten in place: its change time moves
    after = fingerprint_files(model, files, DigestMemo(tmp_path / "memo.sqlite"))
    assert after != before and hashed[len(files) :] == [str((model / "model.safetensors").resolve())]


def test_a_file_changed_moments_ago_is_not_memoised(tmp_path):
    """A file system with one-second timestamps keeps size, times and inode through a quick in-place rewrite."""
    model = save_tiny_model(tmp_path / "m")
    memo = DigestMemo(tmp_path / "memo.sqlite")
    fingerprint_files(model, model_files(model), memo)
    assert memo._db.execute("SELECT COUNT(*) FROM file_digests").fetchone() == (0,)


def test_a_gguf_is_converted_alone_not_with_files_lying_beside_it(tmp_path, monkeypatch):
    """transformers reads a tokenizer.json beside a .gguf, which the GGUF's fingerprint does not cover."""
    import transformers as tf

    from llamabench.backends.loading.gguf import write_dense_copy

    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    (tmp_path / "tokenizer.json").write_text("{}")
    seen = []

    def record(folder, **kwargs):
        seen.append(sorted(p.name for p in Path(folder).iterdir()))
        raise RuntimeError("stop here")

    monkeypatch.setattr(tf.AutoTokenizer, "from_pretrained", record)
    with pytest.raises(LlamabenchError):
        write_dense_copy(ModelSource("m", str(tmp_path), "model.gguf"), tmp_path / "dense")
    assert seen == [["model.gguf"]]


def test_weights_in_a_subfolder_named_by_the_shard_index_are_fingerprinted(tmp_path):
    model = save_tiny_model(tmp_path / "m")
    (model / "w").mkdir()
    (model / "model.safetensors").rename(model / "w" / "model.safetensors")
    index = {"metadata": {}, "weight_map": {"lm_head.weight": "w/model.safetensors"}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))
    (model / "custom_generate").mkdir()
    (model / "custom_generate" / "generate.py").write_text("x = 1\n")
    source = ModelSource("m", str(model))
    base = fingerprint(source)
    assert {p.relative_to(model).as_posix() for p in model_files(model)} >= {
        "w/model.safetensors",
        "custom_generate/generate.py",
    }
    edit_middle_tensor_at(model / "w" / "model.safetensors")
    assert fingerprint(source) != base
