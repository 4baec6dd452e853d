"""lm-eval tasks on SmolLM2, fp32 CPU: llamabench (``lm_eval:<task>`` through its own backend, into its tidy
table) and lm-eval's HF backend give the same aggregates on real data from ``../shared/data``.

The tests write small lm-eval YAMLs over subsets of the shared files: rolling perplexity on WikiText-2
paragraphs, 2-shot SQuAD exact match and WMT22 de-en BLEU by greedy generation, and a multiple-choice task
that picks the right English reference for a German source among four.
"""

import json
import math
import random
from pathlib import Path

import pytest
import yaml
from conftest import LM_EVAL_ROLLING_TASK, PERPLEXITIES

from llamabench.backends.hf.backend import HFBackend
from llamabench.config import RunConfig
from llamabench.pipeline import Evaluation

MAX_LENGTH = 512  # WikiText documents of two long paragraphs (600-900 tokens) take two rolling windows
N_DOCS = 8
TASKS = {
    "smol_wikitext": LM_EVAL_ROLLING_TASK,
    "smol_squad": {
        "output_type": "generate_until",
        "num_fewshot": 2,
        "fewshot_split": "train",
        "fewshot_config": {"sampler": "first_n"},
        "doc_to_text": "{{context}}\n\nQ: {{question}}\nA (a short span copied from the text above):",
        "doc_to_target": "{{answers[0]}}",
        "target_delimiter": " ",
        "fewshot_delimiter": "\n\n",
        "generation_kwargs": {"until": ["\n", "Q:"], "max_gen_toks": 16, "do_sample": False},
        "metric_list": [
            {
                "metric": "exact_match",
                "aggregation": "mean",
                "higher_is_better": True,
                "ignore_case": True,
                "ignore_punctuation": True,
                "regexes_to_ignore": [r"^\s+", r"\s+$"],
            }
        ],
    },
    "smol_wmt": {
        "output_type": "generate_until",
        "doc_to_text": "Translate the following German text into English.\nGerman: {{source}}\nEnglish:",
        "doc_to_target": "{{reference}}",
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": 32, "do_sample": False},
        "metric_list": [{"metric": "bleu"}],
    },
    "smol_wmt_mc": {
        "output_type": "multiple_choice",
        "doc_to_text": "German: {{source}}\nEnglish:",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "label",
        "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
    },
}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return str(path)


def reference_choices(rows: list[dict], rng: random.Random) -> list[dict]:
    """Each source with its reference and three other sources' references, shuffled; ``label`` marks its own."""
    docs = []
    for i, row in enumerate(rows):
        others = rng.sample([r["reference"] for j, r in enumerate(rows) if j != i], 3)
        choices = [row["reference"], *others]
        rng.shuffle(choices)
        docs.append({"source": row["source"], "choices": choices, "label": choices.index(row["reference"])})
    return docs


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory, data_dir) -> Path:
    root = tmp_path_factory.mktemp("smol_lm_eval")
    paragraphs = [
        row["text"] for row in read_jsonl(data_dir / "wikitext2_raw_test/test.jsonl") if len(row["text"]) > 1500
    ]
    documents = [{"text": "\n".join(paragraphs[i : i + 2])} for i in range(0, 2 * N_DOCS, 2)]
    # short passages, so that two solved examples and the question fit in the window with room to answer
    squad = [row for row in read_jsonl(data_dir / "squad_v1.1_dev/dev.jsonl") if len(row["context"]) < 600]
    wmt = read_jsonl(data_dir / "wmt22_generaltest_de-en/test.jsonl")
    files = {
        "smol_wikitext": {"test": write_jsonl(root / "wikitext.jsonl", documents)},
        "smol_squad": {
            "train": write_jsonl(root / "squad_shots.jsonl", [r for r in squad if r["title"] == "Warsaw"][:2]),
            "test": write_jsonl(root / "squad.jsonl", squad[:N_DOCS]),  # questions on Super Bowl 50
        },
        "smol_wmt": {"test": write_jsonl(root / "wmt.jsonl", wmt[:N_DOCS])},
        "smol_wmt_mc": {"test": write_jsonl(root / "wmt_mc.jsonl", reference_choices(wmt[:N_DOCS], random.Random(0)))},
    }
    for name, config in TASKS.items():
        task = {
            "task": name,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": files[name]},
            "test_split": "test",
            "metadata": {"version": 1},
            **config,
        }
        (root / f"{name}.yaml").write_text(yaml.safe_dump(task, allow_unicode=True))
    return root


@pytest.fixture(scope="module")
def ours(smollm2, task_dir):
    """llamabench's tidy results table for the four tasks, from ``llamabench run``'s own code path."""
    backend = HFBackend(smollm2.model, smollm2.tokenizer, model_id="smollm2", max_length=MAX_LENGTH, progress=False)
    config = RunConfig(tasks=[f"lm_eval:{name}" for name in TASKS], bootstrap_iters=0, include_path=[task_dir])
    run = Evaluation.prepare(config).run_backend(backend)
    return run.results.set_index(["task", "metric"]).value, run.samples


@pytest.fixture(scope="module")
def peer(smollm2, task_dir):
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    hf = HFLM(pretrained=smollm2.model, tokenizer=smollm2.tokenizer, batch_size=4, max_length=MAX_LENGTH, device="cpu")
    tasks = TaskManager(include_path=str(task_dir), include_defaults=False).load(list(TASKS))
    return evaluate(lm=hf, task_dict=tasks, log_samples=True, bootstrap_iters=0)


def test_rolling_perplexity_equals_lm_eval_hf(ours, peer):
    values, samples = ours
    for metric in PERPLEXITIES:
        expected = peer["results"]["smol_wikitext"][f"{metric},none"]
        assert math.isclose(values["lm_eval:smol_wikitext", metric], expected, rel_tol=1e-4), metric
    per_doc = [s["resps"][0][0] for s in sorted(peer["samples"]["smol_wikitext"], key=lambda s: s["doc_id"])]
    assert samples["lm_eval:smol_wikitext"].loglikelihood.tolist() == pytest.approx(per_doc, rel=1e-4)
    assert 10 < values["lm_eval:smol_wikitext", "word_perplexity"] < 200  # a trained model, not noise


def test_generation_exact_match_and_bleu_equal_lm_eval_hf(ours, peer):
    values, samples = ours
    # llamabench puts lm-eval's 0-1 exact match on 0-100, as its native SQuAD EM; BLEU is 0-100 on both sides.
    for task, metric, scale in (("smol_squad", "exact_match", 100), ("smol_wmt", "bleu", 1)):
        predictions = [s["resps"][0][0] for s in sorted(peer["samples"][task], key=lambda s: s["doc_id"])]
        assert samples[f"lm_eval:{task}"].prediction.tolist() == predictions
        assert values[f"lm_eval:{task}", metric] == pytest.approx(scale * peer["results"][task][f"{metric},none"])
    assert values["lm_eval:smol_squad", "exact_match"] > 0  # 2-shot, SmolLM2 answers with spans, some right
    assert values["lm_eval:smol_wmt", "bleu"] > 1


def test_multiple_choice_equals_lm_eval_hf(ours, peer):
    values, samples = ours
    for metric in ("acc", "acc_norm"):
        assert values["lm_eval:smol_wmt_mc", metric] == peer["results"]["smol_wmt_mc"][f"{metric},none"]
    for ours_row, theirs in zip(
        samples["lm_eval:smol_wmt_mc"].loglikelihood,
        sorted(peer["samples"]["smol_wmt_mc"], key=lambda s: s["doc_id"]),
        strict=True,
    ):
        assert json.loads(ours_row) == pytest.approx([r[0][0] for r in theirs["resps"]], rel=1e-4, abs=1e-5)
    assert values["lm_eval:smol_wmt_mc", "acc"] > 0.25  # better than chance among four
