"""No silent wrong number: content fingerprints, cache keys, comparable runs, no guessing, seeded sampling.

Each test here failed on the code before the trust fixes (issue 10); the expectations come from the data the
test writes (hand-built checkpoints, documents and runs), never from llamabench's own output.
"""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import transformers
from conftest import byte_tokenizer, save_tiny_model, tiny_llama
from safetensors.torch import load_file, save_file
from test_bad_input import PPL_TASK

from llamabench.backends.hf.backend import HFBackend
from llamabench.backends.loading.fingerprint import DigestMemo, fingerprint_files, model_files
from llamabench.backends.loading.model_source import ModelSource, fingerprint
from llamabench.cli.app import main
from llamabench.config import RunConfig
from llamabench.errors import LlamabenchError
from llamabench.native import prepare_tasks
from llamabench.records.results import RunResult, read_run, results_frame, sample_file_stems, write_run
from llamabench.requests import GenerationRequest, LoglikelihoodRequest, sampling_seed
from llamabench.tasks import registry
from llamabench.tasks.build import build_requests
from llamabench.tasks.spec import parse_task
from llamabench.tasks.templates import render_list

MC_TASK = {
    "name": "mc",
    "kind": "multiple_choice",
    "dataset": {"local": "x.jsonl"},
    "prompt": "{{ q }}",
    "choices": "{{ options }}",
    "label": "{{ answer }}",
    "metrics": ["acc"],
}
QA_TASK = """\
name: tiny_qa
kind: generate
dataset: {local: qa.jsonl}
prompt: "Q: {{ question }}\\nA:"
target: "{{ answer }}"
generation: {max_new_tokens: 4, until: ["\\n"]}
metrics: [exact_match]
"""


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """Task files, data and an isolated cache (request results and file digests)."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "tiny_ppl.yaml").write_text(PPL_TASK)
    (tmp_path / "tasks" / "tiny_qa.yaml").write_text(QA_TASK)
    texts = ["The cat sat on the mat.", "Dogs bark at night, and the moon is up."]
    (tmp_path / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    qa = [{"question": f"{i}+{i}?", "answer": str(2 * i)} for i in range(6)]
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(row) + "\n" for row in qa))
    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def cli_run(workspace: Path, model: Path, out: str, *extra: str) -> RunResult:
    argv = ["run", "--model", str(model), "--tasks-dir", str(workspace / "tasks"), "--data-dir", str(workspace)]
    assert main([*argv, "--output-dir", str(workspace / out), "--device", "cpu", *extra]) == 0
    (folder,) = [p for p in (workspace / out).iterdir() if p.is_dir()]
    return read_run(folder)


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


# --- 1. fingerprints over every byte --------------------------------------------------------------------------


def test_checkpoints_differing_in_one_middle_tensor_never_share_results(workspace):
    first, second = save_wide_model(workspace / "a"), save_wide_model(workspace / "b")
    edit_middle_tensor(second)
    assert (first / "model.safetensors").stat().st_size > 4 << 20
    cached = [cli_run(workspace, model, f"out-{model.name}", "--tasks", "tiny_ppl") for model in (first, second)]
    truth = cli_run(workspace, second, "out-truth", "--tasks", "tiny_ppl", "--no-cache")
    assert cached[0].results.model_fingerprint[0] != cached[1].results.model_fingerprint[0]
    assert cached[1].value("tiny_ppl", "token_perplexity") == truth.value("tiny_ppl", "token_perplexity")
    assert cached[0].value("tiny_ppl", "token_perplexity") != truth.value("tiny_ppl", "token_perplexity")


def test_fingerprint_covers_config_tokenizer_and_generation_config_but_not_training_state(tmp_path):
    model = save_tiny_model(tmp_path / "m")
    source = ModelSource("m", str(model))
    base = fingerprint(source, DigestMemo(None))
    (model / "optimizer.pt").write_bytes(b"optimizer state")
    (model / "trainer_state.json").write_text("{}")
    (model / "README.md").write_text("notes")
    assert fingerprint(source, DigestMemo(None)) == base
    for name in ("generation_config.json", "tokenizer_config.json", "config.json"):
        path = model / name
        original = path.read_bytes()
        path.write_bytes(original.replace(b"}", b', "x": 1}', 1))
        assert fingerprint(source, DigestMemo(None)) != base, name
        path.write_bytes(original)
    assert fingerprint(source, DigestMemo(None)) == base


def test_same_bytes_in_another_folder_give_the_same_fingerprint(tmp_path):
    first = save_tiny_model(tmp_path / "first")
    second = tmp_path / "elsewhere" / "second"
    second.mkdir(parents=True)
    for file in model_files(first):
        (second / file.name).write_bytes(file.read_bytes())
    memo = DigestMemo(tmp_path / "memo.sqlite")
    assert fingerprint(ModelSource("a", str(first)), memo) == fingerprint(ModelSource("b", str(second)), memo)


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


# --- 2. cache keys hold everything that changes a number --------------------------------------------------------


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


# --- 3. comparable means comparable ---------------------------------------------------------------------------


def check(workspace: Path, baseline: RunResult, candidate: RunResult, capsys) -> tuple[int, str]:
    folders = [write_run(run, workspace / "check-runs") for run in (baseline, candidate)]
    argv = ["check", "--results-dir", str(workspace), "--baseline", str(folders[0]), "--candidate", str(folders[1])]
    code = main(argv)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    ("baseline_flags", "candidate_flags", "difference"),
    [
        (["--num-fewshot", "2"], ["--num-fewshot", "0"], "num_fewshot 2 vs 0"),
        (["--max-length", "64"], ["--max-length", "128"], "max_length 64 vs 128"),
        (["--seed", "1"], ["--seed", "2"], "seed 1 vs 2"),
    ],
)
def test_check_refuses_runs_with_different_settings(workspace, capsys, baseline_flags, candidate_flags, difference):
    model = save_tiny_model(workspace / "m")
    runs = [
        cli_run(workspace, model, f"out-{i}", "--tasks", "tiny_qa", "--no-cache", *flags)
        for i, flags in enumerate((baseline_flags, candidate_flags))
    ]
    capsys.readouterr()
    code, err = check(workspace, *runs, capsys)
    assert code == 2 and len(err.splitlines()) == 1
    assert f"task tiny_qa: the runs are not comparable ({difference}, baseline vs candidate)" in err


def test_check_refuses_runs_whose_prompts_differ(workspace, capsys):
    model = save_tiny_model(workspace / "m")
    base = cli_run(workspace, model, "out-a", "--tasks", "tiny_qa", "--no-cache")
    cand = cli_run(workspace, model, "out-b", "--tasks", "tiny_qa", "--no-cache")
    samples = cand.samples["tiny_qa"].copy()
    samples.loc[3, "prompt_hash"] = "0" * 12
    capsys.readouterr()
    code, err = check(workspace, base, RunResult(cand.results, {"tiny_qa": samples}, cand.manifest), capsys)
    assert code == 2 and "1 document(s) were given different prompts (first: doc_id 3)" in err


def test_data_change_makes_runs_incomparable(workspace, capsys):
    model = save_tiny_model(workspace / "m")
    base = cli_run(workspace, model, "out-a", "--tasks", "tiny_ppl", "--no-cache", "--limit", "1")
    with (workspace / "texts.jsonl").open("a") as handle:  # a document past --limit: same prompts, other data
        handle.write(json.dumps({"text": "A third text."}) + "\n")
    cand = cli_run(workspace, model, "out-b", "--tasks", "tiny_ppl", "--no-cache", "--limit", "1")
    capsys.readouterr()
    code, err = check(workspace, base, cand, capsys)
    assert code == 2 and "data_hash" in err


# --- 4. no guessing, no coercion --------------------------------------------------------------------------------


def spec_of(text: str, **overrides):
    import yaml

    return parse_task({**yaml.safe_load(text), **overrides}, "test.yaml")


def test_text_that_looks_like_a_list_stays_one_string():
    assert render_list("{{ t }}", {"t": "[1, 2]"}) == ["[1, 2]"]
    assert render_list("{{ t }}", {"t": "[Applause]"}) == ["[Applause]"]
    with pytest.raises(TypeError, match="prints a list as text"):  # never a Python spelling in a prompt
        render_list("Answer: {{ a }}", {"a": ["x", "y"]})


def test_lists_come_from_list_valued_fields_and_yaml_lists():
    assert render_list("{{ answers }}", {"answers": ["Paris", "paris"]}) == ["Paris", "paris"]
    assert render_list("{{ a.text }}", {"a": {"text": ["x", 1984]}}) == ["x", "1984"]
    assert render_list(["{{ a }}", "{{ b }}"], {"a": "[1]", "b": "c"}) == ["[1]", "c"]


def test_bracketed_targets_are_scored_as_written():
    spec = spec_of(QA_TASK)
    docs = [{"question": "q", "answer": "[Applause]"}, {"question": "q", "answer": "[1, 2]"}]
    assert [doc.targets for doc in build_requests(spec, docs)] == [["[Applause]"], ["[1, 2]"]]


@pytest.mark.parametrize(
    ("task", "doc", "message"),
    [
        (QA_TASK, {"question": "q", "answer": None}, "null value"),
        (QA_TASK, {"question": None, "answer": "a"}, "null value"),
        (QA_TASK, {"question": "q", "answer": ""}, "empty gold answer"),
        (QA_TASK, {"question": "q", "answer": []}, "no gold answer"),
        (QA_TASK, {"question": "q", "answer": ["a", None]}, "null value"),
        (PPL_TASK, {"text": None}, "null value"),
    ],
)
def test_null_and_empty_values_are_errors_naming_the_document(task, doc, message):
    with pytest.raises(LlamabenchError, match=message) as caught:
        build_requests(spec_of(task), [{"question": "q", "answer": "a", "text": "t"}, doc])
    assert "document 1" in str(caught.value)


def test_single_choice_question_is_refused():
    spec = parse_task(MC_TASK, "mc.yaml")
    with pytest.raises(LlamabenchError, match="at least two non-empty choices"):
        build_requests(spec, [{"q": "q", "options": ["only"], "answer": 0}])
    assert [d.choices for d in build_requests(spec, [{"q": "q", "options": ["a", "b"], "answer": 1}])] == [["a", "b"]]


def test_all_empty_perplexity_task_fails_before_the_model_loads(workspace):
    (workspace / "texts.jsonl").write_text('{"text": ""}\n{"text": "  "}\n')
    config = RunConfig(tasks=["tiny_ppl"], tasks_dir=[workspace / "tasks"], data_dir=workspace)
    with pytest.raises(LlamabenchError, match="all 2 documents are empty"):
        prepare_tasks(config)


# --- 5. sampling seeded per request -----------------------------------------------------------------------------


def test_sampling_repeats_reproducibly_and_independently_of_the_batch(tiny_backend):
    requests = [GenerationRequest(f"Once {i}", 12, (), False, sampling_seed(0, "t", i)) for i in range(4)]
    alone = [tiny_backend(batch_size=1).generate([r])[0] for r in requests]
    batched = tiny_backend(batch_size=4).generate(requests)
    assert batched == alone == tiny_backend(batch_size=4).generate(requests)
    same_prompt = [
        GenerationRequest("Once", 12, (), False, sampling_seed(0, "t", "doc", repeat)) for repeat in range(3)
    ]
    assert len(set(tiny_backend().generate(same_prompt))) == 3  # repeats are distinct samples


def test_sampled_requests_need_a_seed_and_get_one_per_document():
    with pytest.raises(ValueError, match="needs a seed"):
        GenerationRequest("p", 4, (), greedy=False)
    spec = spec_of(QA_TASK.replace('until: ["\\n"]', 'until: ["\\n"], greedy: false'))
    docs = [{"question": "q", "answer": "a"}] * 3
    seeds = [doc.requests[0].seed for doc in build_requests(spec, docs, seed=7)]
    assert len(set(seeds)) == 3 and seeds == [doc.requests[0].seed for doc in build_requests(spec, docs, seed=7)]
    assert seeds != [doc.requests[0].seed for doc in build_requests(spec, docs, seed=8)]


def test_lm_eval_repeats_are_distinct_seeded_samples(tiny_backend):
    from lm_eval.api.instance import Instance

    from llamabench.interop.lm_eval.model import LlamabenchLM

    args = ("Once upon", {"until": ["\n\n"], "max_gen_toks": 10, "do_sample": True})
    request = Instance(request_type="generate_until", doc={}, arguments=args, idx=0, metadata=("t", 0, 3))
    first = LlamabenchLM(tiny_backend(), seed=1).generate_until([request] * 3)  # lm-eval lists repeats so
    assert len(set(first)) == 3
    assert LlamabenchLM(tiny_backend(), seed=1).generate_until([request] * 3) == first


# --- 6. stop at every EOS of the generation config --------------------------------------------------------------


def test_generation_stops_at_every_eos_in_the_generation_config():
    tokenizer, model = byte_tokenizer(), tiny_llama()
    prompt = "The quick brown fox"
    ids = torch.tensor([tokenizer(prompt).input_ids])
    free = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=257)[0, ids.shape[1] :].tolist()
    stop = free[3]  # the fourth greedy token becomes a second end-of-turn token, as <|eot_id|> in Llama-3-Instruct
    model.generation_config.eos_token_id = [257, stop]
    (text,) = HFBackend(model, tokenizer, model_id="t", progress=False).generate([GenerationRequest(prompt, 8, ())])
    assert text == tokenizer.decode(free[: free.index(stop)])


# --- 7. numeric flags validated before the model loads ----------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--max-length", "-1"], "--max-length -1"),
        (["--max-length", "1"], "--max-length 1"),
        (["--seed", "-1"], "--seed -1"),
        (["--bootstrap-iters", "-5"], "--bootstrap-iters -5"),
        (["--max-length", "4"], "max_new_tokens 4 leaves no room"),
    ],
)
def test_numeric_flags_fail_before_the_model_loads(workspace, capsys, flags, named):
    argv = ["run", "--model", str(workspace / "no-such-model"), "--tasks", "tiny_qa"]
    argv += ["--tasks-dir", str(workspace / "tasks"), "--data-dir", str(workspace), *flags]
    assert main([*argv, "--output-dir", str(workspace / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err and "no-such-model" not in err


def test_context_length_below_two_tokens_is_refused_by_the_backend():
    with pytest.raises(LlamabenchError, match="--max-length -1"):
        HFBackend(tiny_llama(), byte_tokenizer(), model_id="t", max_length=-1)


def test_context_past_the_trained_positions_is_refused():
    with pytest.raises(LlamabenchError, match="exceeds the 256 positions model t was trained for"):
        HFBackend(tiny_llama(max_positions=256), byte_tokenizer(), model_id="t", max_length=257)


# --- 8. one file per task, one task per name --------------------------------------------------------------------


def test_sample_files_never_collide(tmp_path):
    names = ["lm_eval:x", "lm_eval_x", "Squad", "squad", "a/b", "a_b"]
    stems = sample_file_stems(names)
    assert len({stem.casefold() for stem in stems.values()}) == len(names)
    frames = {name: pd.DataFrame({"doc_id": [name]}) for name in names}
    row = {"task": names[0], "metric": "acc", "value": 1.0}
    run = RunResult(results_frame([row]), frames, {"model": "m", "run_id": "r1", "started": "2026-01-01"})
    back = read_run(write_run(run, tmp_path))
    assert {task: frame.doc_id.tolist() for task, frame in back.samples.items()} == {n: [n] for n in names}


def write_task(folder: Path, name: str, aliases: list[str], file: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    task = PPL_TASK.replace("name: tiny_ppl", f"name: {name}\naliases: {json.dumps(aliases)}")
    (folder / f"{file or name}.yaml").write_text(task)


def test_an_alias_cannot_take_another_tasks_name_or_alias(tmp_path):
    write_task(tmp_path / "base", "corpus", ["ppl"])
    write_task(tmp_path / "user", "mine", ["ppl"])
    with pytest.raises(LlamabenchError, match="'ppl' is already the name or an alias of task corpus"):
        registry.discover([tmp_path / "base", tmp_path / "user"])
    write_task(tmp_path / "same", "one", ["x"])
    write_task(tmp_path / "same", "two", ["x"])
    with pytest.raises(LlamabenchError, match="'x' is defined twice"):
        registry.discover([tmp_path / "same"])


def test_a_task_replaced_by_name_takes_its_aliases_along(tmp_path):
    write_task(tmp_path / "base", "corpus", ["ppl"])
    write_task(tmp_path / "user", "corpus", ["mine"])
    known = registry.discover([tmp_path / "base", tmp_path / "user"])
    assert sorted(known) == ["corpus", "mine"]
    (spec,) = registry.resolve(["corpus", "mine"], [tmp_path / "base", tmp_path / "user"])
    assert spec.aliases == ("mine",)


@pytest.mark.parametrize("name", [12, ["a"], "lm_eval:x", "a/b", "", "x" * 101])
def test_task_names_must_be_plain_text(name):
    with pytest.raises(LlamabenchError, match="must be text of 1 to 100"):
        spec_of(PPL_TASK, name=name)


# --- found by attacking the change (red team) -------------------------------------------------------------------


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
    base = fingerprint(source, DigestMemo(None))
    assert {p.relative_to(model).as_posix() for p in model_files(model)} >= {
        "w/model.safetensors",
        "custom_generate/generate.py",
    }
    edit_middle_tensor_at(model / "w" / "model.safetensors")
    assert fingerprint(source, DigestMemo(None)) != base


def edit_middle_tensor_at(path: Path) -> None:
    tensors = load_file(path)
    name = sorted(tensors)[len(tensors) // 2]
    tensors[name] = torch.zeros_like(tensors[name])
    save_file(tensors, path, metadata={"format": "pt"})


def test_remote_code_and_code_versions_are_in_the_cache_identity():
    from llamabench import __version__

    plain = HFBackend(tiny_llama(), byte_tokenizer(), model_id="t", model_fingerprint="fp").cache_identity()
    remote = HFBackend(tiny_llama(), byte_tokenizer(), model_id="t", model_fingerprint="fp", trust_remote_code=True)
    assert remote.cache_identity() != plain and f"llamabench={__version__}" in plain and "tokenizers=" in plain


def test_models_that_reshape_logits_in_forward_are_refused():
    model = tiny_llama()
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(LlamabenchError, match="post-processes its logits"):
        HFBackend(model, byte_tokenizer(), model_id="t")


def test_a_label_that_is_both_an_index_and_another_choices_text_is_refused():
    spec = parse_task(MC_TASK, "mc.yaml")
    with pytest.raises(LlamabenchError, match="both choice number 3"):
        build_requests(spec, [{"q": "1+2?", "options": ["2", "3", "4", "1"], "answer": "3"}])
    (doc,) = build_requests(spec, [{"q": "1+2?", "options": ["two", "three"], "answer": "three"}])
    assert doc.label == 1


@pytest.mark.parametrize(
    ("template", "doc"),
    [
        ("{{ s | join(', ') }}", {"s": ["a", None]}),
        ("{{ s | trim }}", {"s": None}),
        ("Q: {{ s ~ '?' }}", {"s": None}),
        ("{{ s | lower }}", {"s": None}),
        ("{{ s }}", {"s": float("nan")}),
    ],
)
def test_nulls_and_nans_never_become_text_through_filters(template, doc):
    from llamabench.tasks.templates import NullValueError

    with pytest.raises(NullValueError):
        render_list(template, doc)


def test_defaults_for_nulls_and_containers_printed_as_text():
    assert render_list("{{ s or '' }}", {"s": None}) == [""]
    for value in ({"text": ["a"]}, ["a"]):
        with pytest.raises(TypeError, match="as text"):
            render_list("{{ v }}\n", {"v": value})  # text around the field: a container would be printed


def test_squad_target_reads_both_the_local_list_and_the_hub_mapping():
    spec = registry.resolve(["squad"], registry.task_dirs())[0]
    local = {"id": "1", "context": "c", "question": "q", "answers": ["Denver Broncos", "Broncos"]}
    hub = {**local, "answers": {"text": ["Denver Broncos", "Broncos"], "answer_start": [177, 184]}}
    assert build_requests(spec, [local], num_fewshot=0)[0].targets == ["Denver Broncos", "Broncos"]
    assert build_requests(spec, [hub], num_fewshot=0)[0].targets == ["Denver Broncos", "Broncos"]


@pytest.mark.parametrize(
    ("generation", "named"),
    [
        ({"until": ""}, "generation.until"),
        ({"until": None}, "generation.until"),
        ({"until": ["\n", 7]}, "generation.until"),
        ({"greedy": "false"}, "generation.greedy"),
        ({"max_new_tokens": True}, "max_new_tokens"),
    ],
)
def test_generation_settings_are_typed(generation, named):
    with pytest.raises(LlamabenchError, match=named):
        spec_of(QA_TASK, generation=generation)


@pytest.mark.parametrize(
    ("key", "value"),
    [("chat_template", "false"), ("num_fewshot", True), ("stride", True), ("prompt", 12), ("target", [1, 2])],
)
def test_task_keys_are_typed(key, value):
    with pytest.raises(LlamabenchError, match=key):
        spec_of(QA_TASK, **{key: value})


def test_an_empty_generation_prompt_is_refused():
    with pytest.raises(LlamabenchError, match="empty prompt"):
        build_requests(spec_of(QA_TASK, prompt="{{ question }}"), [{"question": "", "answer": "a"}])


def test_a_changed_metric_definition_makes_runs_incomparable():
    from llamabench.records.comparability import differences

    base = {"task_hash": "h", "metric_versions": {"f1": "1"}}
    assert differences(base, {**base, "metric_versions": {"f1": "2"}}) == ["metric_versions {'f1': '1'} vs {'f1': '2'}"]


def test_scoring_builds_no_key_value_cache(tiny_backend):
    backend = tiny_backend()
    outputs = []
    backend.model.base_model.register_forward_hook(lambda module, args, output: outputs.append(output))
    backend.loglikelihood([LoglikelihoodRequest("The cat", " sat")])
    assert len(outputs) == 1 and outputs[0].past_key_values is None


def test_token_perplexity_is_not_compared_across_tokenizers(tmp_path, capsys):
    from test_store_report_check import make_run

    from llamabench.analysis.report import build_leaderboard
    from llamabench.records.store import RunStore

    stats = {"corpus": {"word_perplexity": [[-50.0, 10], [-40.0, 8]], "token_perplexity": [[-50.0, 20], [-40.0, 16]]}}
    base = make_run("llama2", stats)
    other = make_run("llama3", stats, started="2025-01-02T00:00:00+00:00", settings={"tokenizer": "another"})
    same = make_run("llama2-ft", stats, started="2025-01-03T00:00:00+00:00")
    store = RunStore.in_dir(tmp_path)
    for run in (base, other, same):
        store.add(run)
    argv = ["check", "--results-dir", str(tmp_path), "--baseline", base.manifest["run_id"], "--candidate"]
    assert main([*argv, other.manifest["run_id"]]) == 0
    out = capsys.readouterr().out
    assert "not checked: corpus/token_perplexity (the runs' tokenizers differ)" in out
    assert "word_perplexity" in out and "token_perplexity  " not in out.split("\n\n")[0]
    assert main([*argv, same.manifest["run_id"]]) == 0
    assert "not checked" not in capsys.readouterr().out
    marks = {column.metric: column.marks for column in build_leaderboard([base, other]).columns}
    assert marks == {"word_perplexity": " ↓", "token_perplexity": " ↓ ≠"}
