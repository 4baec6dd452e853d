"""lm-eval interop on a tiny random LLaMA: lm-eval tasks through llamabench's backend agree with lm-eval's own
HF backend, land in llamabench's tidy tables, and agree with llamabench's native perplexity task."""

import json
import math
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import (
    LM_EVAL_ROLLING_TASK,
    PERPLEXITIES,
    byte_tokenizer,
    lm_eval_instances,
    save_tiny_model,
    tiny_llama,
)

from llamabench.backends.hf.backend import HFBackend
from llamabench.cli.app import main
from llamabench.config import RunConfig
from llamabench.errors import LlamabenchError
from llamabench.records.results import RESULT_COLUMNS
from llamabench.requests import GenerationRequest

MAX_LENGTH = 64  # short enough that the longer texts are scored in several rolling windows
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Perplexity is the exponentiated average negative log-likelihood of a sequence of tokens, "
    "and it is lower for better language models.",
    "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.",
    "a  b\n c",
]
QUESTIONS = ["2+2=", "Capital of France?", "Colour of the sky?", "Opposite of up?"]
CHOICES = [["red", "blue", "green"], ["cat", "dog", "bird"], ["one", "two", "three"], ["up", "down", "left"]]

LM_EVAL_TASKS = {
    "tiny_roll": LM_EVAL_ROLLING_TASK,
    "tiny_gen": {
        "output_type": "generate_until",
        "doc_to_text": "Q: {{q}}\nA:",
        "doc_to_target": "{{a}}",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": 8, "do_sample": False},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
    },
    "tiny_mc": {
        "output_type": "multiple_choice",
        "doc_to_text": "Question: {{q}}\nAnswer:",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "label",
        "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
    },
    "tiny_mc2": {
        "output_type": "multiple_choice",
        "doc_to_text": "{{q}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "label",
        "metric_list": [{"metric": "acc"}],
    },
}
GROUP = {
    "group": "tiny_group",
    "task": ["tiny_mc", "tiny_mc2"],
    "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": True}],
}
NATIVE_TASK = {
    "name": "tiny_ppl",
    "kind": "loglikelihood_rolling",
    "dataset": {"local": "docs.jsonl"},
    "prompt": "{{ text }}",
    "metrics": PERPLEXITIES,
}
ALL_TASKS = ["tiny_roll", "tiny_gen", "tiny_mc"]


def write_yaml(path: Path, config: dict) -> None:
    path.write_text(yaml.safe_dump(config, allow_unicode=True))


def backend() -> HFBackend:
    return HFBackend(tiny_llama(), byte_tokenizer(), model_id="tiny-0", progress=False, max_length=MAX_LENGTH)


def hf_lm():
    """lm-eval's own HF backend on the same tiny model: the independent reference."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=tiny_llama(), tokenizer=byte_tokenizer(), max_length=MAX_LENGTH, batch_size=1, device="cpu")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """lm-eval YAMLs over local JSON lines whose answers and labels make exact match and accuracy exactly 0.5:
    documents 0 and 1 expect the greedy answer and most likely choice of lm-eval's own HF backend on the tiny
    model, 2 and 3 something else."""
    root = tmp_path_factory.mktemp("lm_eval")
    reference = hf_lm()
    gen_kwargs = {"until": ["\n"], "max_gen_toks": 8, "do_sample": False}
    generated = reference.generate_until(
        lm_eval_instances("generate_until", [(f"Q: {q}\nA:", gen_kwargs) for q in QUESTIONS])
    )
    docs = []
    for i, (text, question, choices) in enumerate(zip(TEXTS, QUESTIONS, CHOICES, strict=True)):
        pairs = [(f"Question: {question}\nAnswer:", f" {c}") for c in choices]
        scores = reference.loglikelihood(lm_eval_instances("loglikelihood", pairs))
        ranked = sorted(range(len(choices)), key=lambda c: scores[c][0], reverse=True)
        answer, label = (generated[i], ranked[0]) if i < 2 else ("no such answer", ranked[-1])
        docs.append({"text": text, "q": question, "a": answer, "choices": choices, "label": label})
    (root / "docs.jsonl").write_text("".join(json.dumps(doc, ensure_ascii=False) + "\n" for doc in docs))
    (root / "lm_eval").mkdir()
    (root / "native").mkdir()
    data = {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(root / "docs.jsonl")}}}
    for name, config in LM_EVAL_TASKS.items():
        task = {"task": name, **data, "test_split": "test", "metadata": {"version": 2}, **config}
        write_yaml(root / "lm_eval" / f"{name}.yaml", task)
    write_yaml(root / "lm_eval" / "tiny_group.yaml", GROUP)
    write_yaml(root / "native" / "tiny_ppl.yaml", NATIVE_TASK)
    return root


def run_lm_eval(lm, workspace) -> dict:
    from lm_eval.evaluator import evaluate
    from lm_eval.tasks import TaskManager

    loaded = TaskManager(include_path=str(workspace / "lm_eval"), include_defaults=False).load(ALL_TASKS)
    return evaluate(lm=lm, task_dict=loaded, log_samples=True, bootstrap_iters=0)


@pytest.fixture(scope="module")
def ours(workspace) -> dict:
    from llamabench.interop.lm_eval.model import LlamabenchLM

    return run_lm_eval(LlamabenchLM(backend()), workspace)


@pytest.fixture(scope="module")
def peer(workspace) -> dict:
    return run_lm_eval(hf_lm(), workspace)


def test_rolling_perplexities_equal_lm_eval_hf(ours, peer):
    for metric in PERPLEXITIES:
        value = ours["results"]["tiny_roll"][f"{metric},none"]
        assert value == pytest.approx(peer["results"]["tiny_roll"][f"{metric},none"], rel=1e-5)
    n_bytes = sum(len(text.encode()) for text in TEXTS)
    total = sum(sample["resps"][0][0] for sample in peer["samples"]["tiny_roll"])  # lm-eval HF's log-likelihoods
    assert ours["results"]["tiny_roll"]["byte_perplexity,none"] == pytest.approx(math.exp(-total / n_bytes), rel=1e-5)


def test_generation_equals_lm_eval_hf(ours, peer):
    assert ours["results"]["tiny_gen"]["exact_match,none"] == peer["results"]["tiny_gen"]["exact_match,none"] == 0.5
    predictions = [[s["resps"][0][0] for s in out["samples"]["tiny_gen"]] for out in (ours, peer)]
    assert predictions[0] == predictions[1]


def test_multiple_choice_equals_lm_eval_hf(ours, peer):
    for metric in ("acc,none", "acc_norm,none"):
        assert ours["results"]["tiny_mc"][metric] == peer["results"]["tiny_mc"][metric]
    assert ours["results"]["tiny_mc"]["acc,none"] == 0.5


def test_cli_writes_lm_eval_tasks_as_tidy_tables(workspace, peer, tmp_path, monkeypatch):
    model_dir = save_tiny_model(tmp_path / "tiny-llama")
    monkeypatch.setenv("LLAMABENCH_CACHE", str(tmp_path / "cache"))
    tasks = ",".join(f"lm_eval:{name}" for name in ["tiny_roll", "tiny_gen", "tiny_group"])
    argv = ["run", "--model", str(model_dir), "--tasks", tasks, "--include-path", str(workspace / "lm_eval")]
    argv += ["--max-length", str(MAX_LENGTH), "--device", "cpu", "--output-dir", str(tmp_path / "out")]
    assert main(argv) == 0
    (folder,) = [path for path in (tmp_path / "out").iterdir() if path.is_dir()]
    results = pd.read_csv(folder / "results.csv")
    assert list(results.columns) == RESULT_COLUMNS
    rows = results.set_index(["task", "metric"])
    roll = rows.loc[("lm_eval:tiny_roll", "word_perplexity")]
    assert roll.value == pytest.approx(peer["results"]["tiny_roll"]["word_perplexity,none"], rel=1e-5)
    assert (roll.n, roll.higher_is_better, roll.num_fewshot, roll.task_version) == (4, False, 0, 2)
    assert math.isnan(roll.stderr)  # lm-eval gives perplexities no standard error
    assert roll.signature == "words:lm_eval"  # lm-eval counts words with re.split(r"\s+", text), as native tasks do
    gen = rows.loc[("lm_eval:tiny_gen", "exact_match")]
    assert (gen.value, gen.n, gen.higher_is_better) == (50.0, 4, True)  # 2 of 4 right, on 0-100 as native EM
    assert gen.stderr == pytest.approx(100 * math.sqrt(0.25 * 4 / 3) / 2)  # sample standard deviation over sqrt(n)
    mc, mc2, group = (rows.loc[(f"lm_eval:{name}", "acc")] for name in ["tiny_mc", "tiny_mc2", "tiny_group"])
    assert (group.n, group.value) == (8, pytest.approx((mc.value + mc2.value) / 2))
    assert mc.value == 0.5

    files = json.loads((folder / "manifest.json").read_text())["sample_files"]
    samples = pd.read_parquet(folder / f"{files['lm_eval:tiny_gen']}.parquet")
    assert list(samples.columns) == ["doc_id", "prompt_hash", "prompt", "prediction", "target", "loglikelihood"] + [
        "exact_match"
    ]
    assert samples.prompt.tolist() == [f"Q: {q}\nA:" for q in QUESTIONS]
    assert samples.prediction.tolist() == [s["resps"][0][0] for s in peer["samples"]["tiny_gen"]]
    assert samples.exact_match.tolist() == [1.0, 1.0, 0.0, 0.0]  # per-document values stay lm-eval's own
    assert json.loads(samples.target[2]) == ["no such answer"]
    roll_samples = pd.read_parquet(folder / f"{files['lm_eval:tiny_roll']}.parquet")
    words = [len(re.split(r"\s+", text)) for text in TEXTS]
    expected = [math.exp(-ll / n) for ll, n in zip(roll_samples.loglikelihood, words, strict=True)]
    assert roll_samples.word_perplexity.tolist() == pytest.approx(expected)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["tasks"]["lm_eval:tiny_group"]["documents"] == 8
    assert manifest["lm_eval"]["version"] == "0.4.13"


def test_native_and_lm_eval_rolling_tasks_agree_with_lm_eval_hf(workspace, peer):
    from llamabench.pipeline import Evaluation

    config = RunConfig(
        tasks=["tiny_ppl", "lm_eval:tiny_roll"],
        data_dir=workspace,
        tasks_dir=[workspace / "native"],
        include_path=[workspace / "lm_eval"],
    )
    run = Evaluation.prepare(config).run_backend(backend())
    assert set(run.samples) == {"tiny_ppl", "lm_eval:tiny_roll"}
    for metric in PERPLEXITIES:
        expected = peer["results"]["tiny_roll"][f"{metric},none"]
        assert run.value("tiny_ppl", metric) == pytest.approx(expected, rel=1e-5)
        assert run.value("lm_eval:tiny_roll", metric) == pytest.approx(expected, rel=1e-5)


CUSTOM_SCORER = """\
def process_results(doc, results):
    return {"exact_match": float(results[0] == doc["a"]), "f1": float(results[0] == doc["a"])}
"""


def test_exact_match_from_a_tasks_own_code_keeps_its_value_under_a_raw_name(workspace, tmp_path):
    """lm-eval's own exact_match goes on 0-100 (above); a task's own process_results may use any scale, so its rows
    are named <metric>_raw rather than rescaled or mixed into exact_match."""
    from llamabench.interop.lm_eval.tasks import evaluate_lm_eval_tasks, load_lm_eval_tasks

    (tmp_path / "utils.py").write_text(CUSTOM_SCORER)
    task = yaml.safe_load((workspace / "lm_eval" / "tiny_gen.yaml").read_text())
    task["task"] = "tiny_own_scorer"
    task["metric_list"] = [
        {"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("exact_match", "f1")
    ]
    text = yaml.safe_dump(task) + "process_results: !function utils.process_results\n"
    (tmp_path / "tiny_own_scorer.yaml").write_text(text)
    run = evaluate_lm_eval_tasks(backend(), load_lm_eval_tasks(["tiny_own_scorer"], [tmp_path]), RunConfig(tasks=[]))
    assert set(run.results.metric) == {"exact_match_raw", "f1_raw"}
    assert run.value("lm_eval:tiny_own_scorer", "exact_match_raw") == 0.5  # documents 0 and 1, as built above


def test_generation_request_maps_gen_kwargs():
    from llamabench.interop.lm_eval.model import generation_request

    greedy = {"until": "\n\n", "max_gen_toks": 5, "do_sample": False, "temperature": 0.0, "top_p": 0.9}
    assert generation_request("Q:", greedy) == GenerationRequest("Q:", 5, ("\n\n",), greedy=True)
    assert generation_request("Q:", {"max_new_tokens": 7}) == GenerationRequest("Q:", 7, (), greedy=True)
    assert generation_request("Q:", {"do_sample": True}, seed=5) == GenerationRequest("Q:", 256, (), False, 5)
    assert generation_request("Q:", greedy, seed=5).seed is None  # greedy requests carry no seed
    with pytest.raises(LlamabenchError, match="temperature"):
        generation_request("Q:", {"do_sample": True, "temperature": 0.7})
    with pytest.raises(LlamabenchError, match="num_beams"):
        generation_request("Q:", {"num_beams": 4})


def test_model_is_registered_and_loads_from_model_args(workspace, tmp_path):
    from lm_eval.api.registry import get_model

    from llamabench.interop.lm_eval.model import LlamabenchLM

    save_tiny_model(tmp_path)
    assert get_model("llamabench") is LlamabenchLM
    assert get_model("hf").__name__ == "HFLM"  # lm-eval's own models stay registered
    lm = LlamabenchLM.create_from_arg_string(
        f"pretrained={tmp_path},dtype=float32,max_length={MAX_LENGTH}", {"batch_size": "auto:4", "device": "cpu"}
    )
    assert (lm.backend.max_length, lm.backend.device.type, lm.backend.policy.max_items) == (MAX_LENGTH, "cpu", None)
    fixed = LlamabenchLM.create_from_arg_obj(
        {"pretrained": str(tmp_path), "kv_cache": "static"}, {"batch_size": 3, "device": None}
    )
    assert (fixed.backend.policy.max_items, fixed.backend.kv_cache, lm.backend.kv_cache) == (3, "static", "dynamic")


def test_bad_include_path_is_one_line_error(capsys, tmp_path):
    argv = ["run", "--tasks", "lm_eval:tiny_roll", "--include-path", str(tmp_path / "nope")]
    argv += ["--output-dir", str(tmp_path / "out")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        f"llamabench: error: --include-path {tmp_path / 'nope'} is not a folder of lm-eval task YAML files"
    )


def test_missing_lm_eval_is_one_line_error(monkeypatch):
    from llamabench.pipeline import Evaluation

    monkeypatch.setitem(sys.modules, "lm_eval", None)
    for module in ("llamabench.interop.lm_eval.tasks", "llamabench.interop.lm_eval.model"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(LlamabenchError, match=r"pip install 'llamabench\[lm-eval\]'"):
        Evaluation.prepare(RunConfig(tasks=["lm_eval:tiny_roll"]))
