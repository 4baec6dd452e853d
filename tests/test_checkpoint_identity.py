"""What a checkpoint is: every byte that can change its numbers is in its fingerprint and the request cache's key,
a checkpoint rewritten while llamabench reads it never has its numbers stored under the other bytes' fingerprint,
one checkpoint named several ways is evaluated once, and names and caches that are wrong fail in one line before
the model loads.

Oracles: token perplexities computed here with torch from a pristine copy of the bytes, token counts by hand,
file hashes with hashlib, SQLite row counts.
"""

import hashlib
import json
import math
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch
import transformers
from builders import TOKEN_PPL_TASK
from conftest import byte_tokenizer, save_tiny_model, tiny_llama

from llamabench.backends.hf.backend import HFBackend
from llamabench.backends.loading.fingerprint import DigestMemo, fingerprint_files, model_files
from llamabench.backends.loading.model_source import ModelSource, fingerprint
from llamabench.cli.app import main
from llamabench.errors import LlamabenchError
from llamabench.records.results import read_run

TEXTS = ["The cat sat on the mat.", "Then the dog barked at the moon."]


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """Task, data, an isolated cache, and two tiny checkpoints ``a`` and ``b`` (other seeds, same file sizes)."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_ppl.yaml").write_text(TOKEN_PPL_TASK)
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    save_tiny_model(tmp_path / "a", seed=0)
    save_tiny_model(tmp_path / "b", seed=1)
    return tmp_path


def run(ws: Path, *models: str | Path, out: str = "out", extra: tuple = ()) -> int:
    argv = ["run", "--tasks", "tiny_ppl", "--tasks-dir", str(ws / "tasks"), "--data-dir", str(ws)]
    for model in models:
        argv += ["--model", str(model)]
    return main([*argv, "--output-dir", str(ws / out), "--device", "cpu", *extra])


def the_run(ws: Path, out: str):
    (folder,) = [p for p in (ws / out).iterdir() if p.is_dir() and not p.name.startswith(".")]
    return read_run(folder)


def oracle_token_perplexity(folder: Path, texts=TEXTS) -> float:
    """exp(-mean log-probability per token), each text scored after the <s> token, computed here with torch."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = model(torch.tensor([[tokenizer.bos_token_id, *ids]])).logits[0, :-1].double()
        total += logits.log_softmax(-1)[torch.arange(len(ids)), torch.tensor(ids)].sum().item()
        count += len(ids)
    return math.exp(-total / count)


def copy_files(source: Path, target: Path, *, in_place: bool) -> None:
    """Make ``target`` hold ``source``'s bytes: rewriting each file in place (same inode, the old size and
    modification time put back), or as a trainer saving by rename does (new files renamed over the old)."""
    for file in sorted(p for p in source.iterdir() if p.is_file()):
        dest = target / file.name
        if in_place and dest.exists():
            before = dest.stat()
            with open(dest, "r+b") as handle:
                handle.write(file.read_bytes())
                handle.truncate()
            os.utime(dest, ns=(before.st_atime_ns, before.st_mtime_ns))
        else:
            shutil.copyfile(file, target / f".{file.name}.tmp")
            os.replace(target / f".{file.name}.tmp", dest)


def stored_results(ws: Path) -> int:
    path = ws / "cache" / "requests.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]


# --- 1. a checkpoint overwritten while llamabench reads it --------------------------------------------------------


@pytest.mark.parametrize("when", ["before-read-by-rename", "after-read-in-place", "after-read-by-rename"])
def test_a_checkpoint_overwritten_during_the_load_is_refused_and_nothing_is_stored(ws, monkeypatch, capsys, when):
    ckpt = ws / "ckpt"
    shutil.copytree(ws / "a", ckpt)
    real = transformers.AutoModelForCausalLM.from_pretrained
    calls = []

    def trainer_saves_meanwhile(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1 and when.startswith("before"):
            copy_files(ws / "b", ckpt, in_place=False)
        model = real(*args, **kwargs)
        if len(calls) == 1 and when.startswith("after"):
            copy_files(ws / "b", ckpt, in_place=when.endswith("in-place"))
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", trainer_saves_meanwhile)
    assert run(ws, ckpt) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("llamabench: error: ") and "changed while" in err[-1] and str(ckpt) in err[-1]
    assert stored_results(ws) == 0 and not (ws / "out").exists() or not any((ws / "out").iterdir())
    # The bytes now there (b's) give b's numbers; a's bytes put back give a's, served from nothing poisoned.
    assert run(ws, ckpt, out="now-b") == 0
    assert the_run(ws, "now-b").value("tiny_ppl", "token_perplexity") == pytest.approx(
        oracle_token_perplexity(ws / "b"), rel=1e-5
    )
    copy_files(ws / "a", ckpt, in_place=False)
    assert run(ws, ckpt, out="again-a") == 0
    assert the_run(ws, "again-a").value("tiny_ppl", "token_perplexity") == pytest.approx(
        oracle_token_perplexity(ws / "a"), rel=1e-5
    )


def test_loaded_weights_do_not_follow_the_file_rewritten_in_place_after_the_load(tmp_path):
    """transformers maps safetensors files into memory on the CPU: a rewrite in place would change the weights in
    the middle of an evaluation, after every check of the files."""
    save_tiny_model(tmp_path / "a", seed=0)
    save_tiny_model(tmp_path / "b", seed=1)
    backend = HFBackend.load(str(tmp_path / "a"), device="cpu", dtype="float32")
    expected = tiny_llama(seed=0).state_dict()
    copy_files(tmp_path / "b", tmp_path / "a", in_place=True)
    loaded = backend.model.state_dict()
    assert all(torch.equal(loaded[name], expected[name]) for name in expected)


@pytest.mark.parametrize("how", ["in-place-same-mtime", "rename-same-mtime"])
def test_the_digest_memo_never_serves_a_file_changed_under_its_old_size_and_time(tmp_path, monkeypatch, how):
    monkeypatch.setattr("llamabench.backends.loading.fingerprint.SETTLE_SECONDS", 0.0)
    save_tiny_model(tmp_path / "a", seed=0)
    save_tiny_model(tmp_path / "b", seed=1)
    model = tmp_path / "a"
    memo = DigestMemo(tmp_path / "memo.sqlite")
    before = fingerprint_files(model, model_files(model), memo)
    copy_files(tmp_path / "b", model, in_place=how.startswith("in-place"))
    if how.startswith("rename"):
        old = (tmp_path / "b" / "model.safetensors").stat()
        os.utime(model / "model.safetensors", ns=(old.st_atime_ns, old.st_mtime_ns))
    expected = hashlib.sha256(b"".join((tmp_path / "b" / f.name).read_bytes() for f in model_files(model))).digest()
    got = hashlib.sha256(b"".join(f.read_bytes() for f in model_files(model))).digest()
    assert got == expected  # the folder now holds b's bytes
    after = fingerprint_files(model, model_files(model), DigestMemo(tmp_path / "memo.sqlite"))
    assert after != before
    assert after == fingerprint_files(tmp_path / "b", model_files(tmp_path / "b"), DigestMemo(None))


# --- 2. every byte that can change a number ---------------------------------------------------------------------


def _add_merge(tokenizer_json: Path) -> None:
    """Give "Th" its own token (the id of a byte no test text holds) with the merge T + h: fewer tokens."""
    spec = json.loads(tokenizer_json.read_text())
    vocab = spec["model"]["vocab"]
    spare = next(ch for ch, i in sorted(vocab.items(), key=lambda kv: -kv[1]) if i < 256 and len(ch) == 1)
    vocab["Th"] = vocab.pop(spare)
    spec["model"]["merges"] = [["T", "h"]]
    tokenizer_json.write_text(json.dumps(spec))


# Each file a checkpoint folder can hold that changes a number (or may, with the transformers that reads it), and
# how a test changes it.
CHANGES = {
    "tokenizer.json": lambda p: _add_merge(p),
    "tokenizer_config.json": lambda p: p.write_text(
        p.read_text().replace("}", ', "clean_up_tokenization_spaces": true}', 1)
    ),
    "special_tokens_map.json": lambda p: p.write_text(json.dumps({"bos_token": "</s>"})),
    "added_tokens.json": lambda p: p.write_text(json.dumps({"cat": 258})),
    "chat_template.jinja": lambda p: p.write_text("{{ messages[0]['content'] }}!"),
    "chat_template.json": lambda p: p.write_text(json.dumps({"chat_template": "{{ messages }}"})),
    "tokenizer.model": lambda p: p.write_bytes(b"\x0a\x05hello"),
    "vocab.json": lambda p: p.write_text(json.dumps({"a": 0})),
    "merges.txt": lambda p: p.write_text("#version: 0.2\nT h\n"),
    "generation_config.json": lambda p: p.write_text(p.read_text().replace("}", ', "do_sample": true}', 1)),
    "config.json": lambda p: p.write_text(p.read_text().replace("}", ', "rms_norm_eps": 0.001}', 1)),
    "modeling_custom.py": lambda p: p.write_text("SCALE = 2\n"),
    "adapter_config.json": lambda p: p.write_text(json.dumps({"base_model_name_or_path": "x", "r": 8})),
    "adapter_model.safetensors": lambda p: p.write_bytes(b"adapter"),
    "additional_chat_templates/tools.jinja": lambda p: p.write_text("{{ tools }}"),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_each_file_that_can_change_a_number_is_in_the_fingerprint_and_the_cache_key(tmp_path, name):
    model = save_tiny_model(tmp_path / "m", vocab_size=260)  # rows for an added token
    path = model / name
    path.parent.mkdir(exist_ok=True)
    if not path.exists():  # a file the checkpoint may hold: its first version must count too
        path.write_text("{}")
    source = ModelSource("m", str(model))
    base = fingerprint(source)
    identity = HFBackend.load(str(model), device="cpu", dtype="float32").cache_identity()
    original = hashlib.sha256(path.read_bytes()).hexdigest()
    CHANGES[name](path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() != original
    assert path in model_files(model)
    assert fingerprint(source) != base, name
    assert HFBackend.load(str(model), device="cpu", dtype="float32").cache_identity() != identity, name


def test_a_changed_tokenizer_is_evaluated_again_with_its_own_token_counts(ws):
    ckpt = ws / "ckpt"
    shutil.copytree(ws / "a", ckpt)
    assert run(ws, ckpt, out="first") == 0
    _add_merge(ckpt / "tokenizer.json")
    assert run(ws, ckpt, out="second") == 0
    counts = the_run(ws, "second").samples["tiny_ppl"].n_tokens.tolist()
    assert counts == [len(t.encode()) - t.count("Th") for t in TEXTS]
    assert the_run(ws, "first").samples["tiny_ppl"].n_tokens.tolist() == [len(t.encode()) for t in TEXTS]
    assert the_run(ws, "second").value("tiny_ppl", "token_perplexity") == pytest.approx(
        oracle_token_perplexity(ckpt), rel=1e-5
    )


def test_the_cache_key_holds_the_tokenizer_even_under_the_same_fingerprint(tmp_path):
    """A tokenizer read from outside the folder (tokenizer_config.json may name any file) or a fingerprint that
    missed a file must still never share results: the key holds the loaded tokenizer's own hash."""
    merged = tmp_path / "tok"
    byte_tokenizer().save_pretrained(merged)
    _add_merge(merged / "tokenizer.json")
    other_bos = byte_tokenizer()
    other_bos.bos_token = "</s>"
    plain = HFBackend(tiny_llama(), byte_tokenizer(), model_id="t", model_fingerprint="fp").cache_identity()
    for tokenizer in (transformers.AutoTokenizer.from_pretrained(merged), other_bos):
        assert HFBackend(tiny_llama(), tokenizer, model_id="t", model_fingerprint="fp").cache_identity() != plain


@pytest.mark.parametrize("where", ["sibling-folder", "absolute-path"])
def test_a_shard_the_index_names_outside_the_folder_is_fingerprinted(tmp_path, where):
    model = save_tiny_model(tmp_path / "m")
    outside = tmp_path / "elsewhere" / "model.safetensors"
    outside.parent.mkdir()
    (model / "model.safetensors").rename(outside)
    name = "../elsewhere/model.safetensors" if where == "sibling-folder" else str(outside)
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"lm_head.weight": name}}))
    source = ModelSource("m", str(model))
    base = fingerprint(source)
    outside.write_bytes(outside.read_bytes()[:-4] + b"\0\0\0\1")
    assert fingerprint(source) != base


def test_a_symlinked_weights_file_outside_the_folder_is_fingerprinted_by_its_target(tmp_path):
    model = save_tiny_model(tmp_path / "m")
    outside = tmp_path / "store" / "weights.safetensors"
    outside.parent.mkdir()
    (model / "model.safetensors").rename(outside)
    (model / "model.safetensors").symlink_to(outside)
    source = ModelSource("m", str(model))
    base = fingerprint(source)
    outside.write_bytes(outside.read_bytes()[:-4] + b"\0\0\0\1")
    assert fingerprint(source) != base


# --- 3. one checkpoint named several ways -------------------------------------------------------------------------


def test_one_checkpoint_named_four_ways_is_evaluated_once(ws, monkeypatch, capsys):
    monkeypatch.chdir(ws)
    (ws / "link").symlink_to(ws / "a")
    loads = []
    real = HFBackend.load.__func__
    monkeypatch.setattr(HFBackend, "load", classmethod(lambda cls, *a, **k: loads.append(a) or real(cls, *a, **k)))
    assert run(ws, "a", "./a/", str(ws / "a"), "link", "b") == 0
    assert len(loads) == 2
    folders = sorted(p.name for p in (ws / "out").iterdir() if p.is_dir())
    assert len(folders) == 2 and folders[0].startswith("a-") and folders[1].startswith("b-")
    notes = [line for line in capsys.readouterr().err.splitlines() if "same checkpoint" in line]
    assert len(notes) == 1 and notes[0].startswith("llamabench: note: ")


def test_the_current_folder_as_model_gets_its_own_name(ws, monkeypatch):
    monkeypatch.chdir(ws / "a")
    assert run(ws, ".") == 0
    assert the_run(ws, "out").manifest["model"] == "a"


# --- 4. a deleted checkpoint is a missing path, not a hub id --------------------------------------------------------


@pytest.mark.parametrize("value", ["runs/checkpoint-500", "./runs/checkpoint-500", "runs/checkpoint-500/", "ABS"])
def test_a_missing_local_checkpoint_says_the_path_does_not_exist(ws, monkeypatch, capsys, value):
    monkeypatch.chdir(ws)
    (ws / "runs").mkdir()
    value = str(ws / "runs" / "gone") if value == "ABS" else value
    monkeypatch.setattr(
        transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("the model was loaded")
    )
    assert run(ws, value) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("llamabench: error: ") and "does not exist" in line and value.rstrip("/") in line
    assert "hub" not in line


# --- 5. a corrupt request cache fails before the model loads ------------------------------------------------------


def _write_cache(path: Path, rows: int = 400) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE results (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.executemany(
            "INSERT INTO results VALUES (?, ?)", [(f"k{i:05d}", json.dumps([-1.5, True])) for i in range(rows)]
        )


def _corrupt(path: Path, how: str) -> None:
    if how == "not-sqlite":
        path.write_bytes(b"this is not a database at all\n" * 200)
        return
    _write_cache(path)
    raw = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif how == "garbage-page":
        page = int.from_bytes(raw[16:18], "big")
        raw[page * 2 : page * 3] = b"\xa5" * page
        path.write_bytes(raw)
    elif how == "wrong-table":
        path.unlink()
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE results (key TEXT PRIMARY KEY)")


@pytest.mark.parametrize("how", ["not-sqlite", "truncated", "garbage-page", "wrong-table"])
def test_a_corrupt_request_cache_fails_in_one_line_before_the_model_loads(ws, monkeypatch, capsys, how):
    cache = ws / "cache" / "requests.sqlite"
    cache.parent.mkdir()
    _corrupt(cache, how)
    monkeypatch.setattr(
        transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("the model was loaded")
    )
    assert run(ws, ws / "a") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llamabench: error: ")
    assert str(cache) in err[0] and "--refresh" in err[0] and "--no-cache" in err[0]


@pytest.mark.parametrize("how", ["not-sqlite", "garbage-page"])
def test_refresh_rebuilds_a_corrupt_request_cache(ws, capsys, how):
    cache = ws / "cache" / "requests.sqlite"
    cache.parent.mkdir()
    _corrupt(cache, how)
    assert run(ws, ws / "a", extra=("--refresh",)) == 0
    assert stored_results(ws) == len(TEXTS)
    assert run(ws, ws / "a", out="again") == 0
    assert the_run(ws, "again").manifest["backend"]["cache"]["hits"] == len(TEXTS)


def test_a_stored_result_that_is_not_a_result_is_computed_again(ws):
    assert run(ws, ws / "a", out="first") == 0
    with sqlite3.connect(ws / "cache" / "requests.sqlite") as db:
        db.execute("UPDATE results SET value = 'not json'")
    assert run(ws, ws / "a", out="second") == 0
    assert the_run(ws, "second").value("tiny_ppl", "token_perplexity") == pytest.approx(
        oracle_token_perplexity(ws / "a"), rel=1e-5
    )


# --- 6. a folder name with terminal escapes ------------------------------------------------------------------------


@pytest.mark.parametrize("cache", [(), ("--no-cache",)])
def test_a_folder_named_with_escape_sequences_prints_none(ws, capsys, cache):
    evil = ws / "evil\x1b[2J\x1b]0;pwned\x07name"
    shutil.copytree(ws / "a", evil)
    assert run(ws, evil, extra=cache) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "evil\\x1b[2J" in err  # the bar still names the model, visibly


def test_a_gguf_changed_while_it_is_converted_leaves_no_dense_copy_under_its_old_fingerprint(tmp_path, monkeypatch):
    from llamabench.backends.loading import gguf
    from llamabench.backends.loading.model_source import pin

    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "m.gguf").write_bytes(b"GGUF version one")
    source = ModelSource("m", str(tmp_path), "m.gguf")
    pinned = pin(source)

    def tokenizer_read_while_a_trainer_saves(*args, **kwargs):
        (tmp_path / "m.gguf").write_bytes(b"GGUF version two")
        return byte_tokenizer()

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer_read_while_a_trainer_saves)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *args, **kwargs: tiny_llama())
    with pytest.raises(LlamabenchError, match="changed while it was being converted"):
        gguf.dense_copy(source, pinned.fingerprint, verify=lambda: pinned.check("converted"))
    assert not gguf.dense_copy_dir(pinned.fingerprint).exists()


def test_a_checkpoint_deleted_during_the_load_is_the_same_one_line(ws, monkeypatch, capsys):
    ckpt = ws / "ckpt"
    shutil.copytree(ws / "a", ckpt)
    real = transformers.AutoModelForCausalLM.from_pretrained

    def deleted_meanwhile(*args, **kwargs):
        model = real(*args, **kwargs)
        shutil.rmtree(ckpt)
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", deleted_meanwhile)
    assert run(ws, ckpt) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("llamabench: error: checkpoint ") and "changed while it was being loaded" in line
