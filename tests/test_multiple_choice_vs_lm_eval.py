"""The native ``multiple_choice`` kind against lm-eval, per document: the same questions as a llamabench YAML task
(``llamabench run``, its own backend, its own metrics) and as an lm-eval YAML task (``lm_eval.simple_evaluate``
with lm-eval's own HF backend, ``HFLM``, over the same saved tiny model) give the same per-choice
log-likelihoods, the same acc and acc_norm per document, and the same aggregates.

The choices differ in characters, words and UTF-8 bytes (the byte-level test tokenizer's tokens), so that ranking
them by log-likelihood per character (lm-eval's acc_norm), per word, per token or not at all picks different
answers; ``test_the_normalisations_disagree_on_this_data`` proves it on lm-eval's own numbers, so that an acc_norm
normalising by anything but characters cannot pass. Two task variants cover the text around the choice: the
default target delimiter " " after "Answer:", and no delimiter after prompts ending in assorted whitespace
(lm-eval moves a context's trailing whitespace into the continuation it scores).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import lm_eval_instances, save_tiny_model

from llamabench.cli.app import main

# (question, trailing whitespace of the second variant's prompt, choices). Choices of many words against one long
# word, and accented or emoji choices whose UTF-8 bytes (tokens here) outnumber their characters.
QUESTIONS = [
    ("Which one?", "", ["abcdefghijklmnop", "a b c d", "ééééé"]),
    ("What river?", " ", ["Mississippi River", "the big red river", "Rhône"]),
    ("Is it?", "\n", ["x", "yes it is so", "naïve café", "absolutely"]),
    ("Count:", "\t", ["one two three four five", "seventeen", "çàé", "no"]),
    ("Where?", " \n", ["Zürich", "a city in the Alps", "Geneva", "Bern"]),
    ("What do plants do?", "  ", ["photosynthesis", "it is a b c", "ünïcödé", "light"]),
    ("Letters?", "\n\n", ["q r s t u v w x", "quartzwxyz", "🙂🙂", "wa"]),
    ("Which play?", "\u00a0", ["to be or not to be", "Hamlet", "ßßßß", "Shakespearean"]),
    ("Which city?", "", [" Paris", "Lyon ", " Nice  ", "Marseille"]),  # a choice's own spaces are kept and counted
]


@dataclass(frozen=True)
class Variant:
    """One task written both ways: its prompt template (llamabench and lm-eval spell Jinja alike) and delimiter."""

    name: str
    prompt: str
    target_delimiter: str

    def context(self, question: str, tail: str) -> str:
        return self.prompt.replace("{{ q }}", question).replace("{{ tail }}", tail)


VARIANTS = [
    Variant("mc_answer", "Question: {{ q }}\nAnswer:", " "),
    Variant("mc_tail", "Question: {{ q }}{{ tail }}", ""),
]


def pick(loglikelihoods: list[float], counts: list[int]) -> int:
    """The choice ranked first by log-likelihood per counted unit."""
    return int(np.argmax(np.asarray(loglikelihoods) / np.asarray(counts, dtype=float)))


def counts(denominator: str, sample: dict) -> list[int]:
    """Per choice of an lm-eval logged sample, the units a ranking divides by: lm-eval's acc_norm divides by
    ``characters``; ``words``, ``tokens`` (those scored: the byte tokenizer's, one per UTF-8 byte of the
    continuation after lm-eval moved the context's trailing whitespace into it) and ``none`` are what it must
    not be confused with."""
    choices = sample["doc"]["choices"]
    if denominator == "characters":
        return [len(choice) for choice in choices]
    if denominator == "words":
        return [len(choice.split()) for choice in choices]
    if denominator == "tokens":
        scored = [context[len(context.rstrip()) :] + continuation for context, continuation in sample["arguments"]]
        return [len(text.encode()) for text in scored]
    return [1] * len(choices)


def hf_lm(model_dir: Path):
    """lm-eval's own HF backend loading the saved folder itself: the independent reference."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(model_dir), batch_size=1, device="cpu")


def documents(lm, variant: Variant) -> list[dict]:
    """The variant's documents. Labels come from lm-eval's log-likelihoods: mostly the choice best per character
    (so lm-eval's acc_norm is 1 there, and any other normalisation that picks differently loses it), every
    fourth the likeliest choice outright (so acc is not 0 throughout)."""
    delimiter = variant.target_delimiter
    pairs = [(variant.context(q, tail), delimiter + c) for q, tail, choices in QUESTIONS for c in choices]
    scores = iter(ll for ll, _ in lm.loglikelihood(lm_eval_instances("loglikelihood", pairs)))
    docs = []
    for i, (question, tail, choices) in enumerate(QUESTIONS):
        lls = [next(scores) for _ in choices]
        label = pick(lls, [1] * len(choices) if i % 4 == 3 else [len(choice) for choice in choices])
        docs.append({"id": f"d{i}", "q": question, "tail": tail, "choices": choices, "label": label})
    return docs


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A saved tiny model, each variant's JSON lines, and its task as a llamabench YAML and an lm-eval YAML."""
    root = tmp_path_factory.mktemp("mc_vs_lm_eval")
    model_dir = save_tiny_model(root / "model")
    lm = hf_lm(model_dir)
    for folder in ("data", "native", "lm_eval"):
        (root / folder).mkdir()
    for variant in VARIANTS:
        write_jsonl(root / "data" / f"{variant.name}.jsonl", documents(lm, variant))
        native = {
            "name": variant.name,
            "kind": "multiple_choice",
            "dataset": {"local": f"{variant.name}.jsonl"},
            "doc_id": "{{ id }}",
            "prompt": variant.prompt,
            "choices": "{{ choices }}",
            "label": "{{ label }}",
            "target_delimiter": variant.target_delimiter,
            "metrics": ["acc", "acc_norm"],
        }
        (root / "native" / f"{variant.name}.yaml").write_text(yaml.safe_dump(native, allow_unicode=True))
        peer = {
            "task": variant.name,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(root / "data" / f"{variant.name}.jsonl")}},
            "test_split": "test",
            "output_type": "multiple_choice",
            "doc_to_text": variant.prompt,
            "doc_to_choice": "{{ choices }}",
            "doc_to_target": "label",
            "target_delimiter": variant.target_delimiter,
            "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
            "metadata": {"version": 1},
        }
        (root / "lm_eval" / f"{variant.name}.yaml").write_text(yaml.safe_dump(peer, allow_unicode=True))
    return root


@pytest.fixture(scope="module")
def peer(workspace) -> dict:
    """lm-eval's results and logged samples for every variant."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tasks = TaskManager(include_path=str(workspace / "lm_eval"), include_defaults=False)
    names = [variant.name for variant in VARIANTS]
    return simple_evaluate(
        model=hf_lm(workspace / "model"), tasks=names, task_manager=tasks, log_samples=True, bootstrap_iters=0
    )


@pytest.fixture(scope="module")
def ours(workspace, tmp_path_factory) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """llamabench's results table and each variant's per-document samples from one ``llamabench run``."""
    out = tmp_path_factory.mktemp("native_run")
    argv = ["run", "--model", str(workspace / "model"), "--tasks", ",".join(v.name for v in VARIANTS)]
    argv += ["--tasks-dir", str(workspace / "native"), "--data-dir", str(workspace / "data")]
    argv += ["--device", "cpu", "--dtype", "float32", "--output-dir", str(out / "runs"), "--no-cache"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLAMABENCH_CACHE", str(out / "cache"))
        assert main(argv) == 0
    (folder,) = [path for path in (out / "runs").iterdir() if path.is_dir()]
    files = json.loads((folder / "manifest.json").read_text())["sample_files"]
    samples = {v.name: pd.read_parquet(folder / f"{files[v.name]}.parquet") for v in VARIANTS}
    return pd.read_csv(folder / "results.csv"), samples


def peer_samples(peer: dict, variant: Variant) -> list[dict]:
    return sorted(peer["samples"][variant.name], key=lambda sample: sample["doc_id"])


def peer_loglikelihoods(sample: dict) -> list[float]:
    """Each choice's log-likelihood in an lm-eval logged sample (``resps``: per choice, [(ll, is_greedy)])."""
    return [response[0][0] for response in sample["resps"]]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_the_normalisations_disagree_on_this_data(peer, variant):
    """Per character, per word, per token and unnormalised rankings pick different answers here, in lm-eval's
    own numbers, on enough documents that an acc_norm normalising any other way changes per-document values."""
    samples = peer_samples(peer, variant)

    def acc_norm_by(denominator: str, sample: dict) -> float:
        return float(pick(peer_loglikelihoods(sample), counts(denominator, sample)) == sample["doc"]["label"])

    # lm-eval's acc_norm is the per-character ranking: the definition this file holds llamabench to.
    assert [s["acc_norm"] for s in samples] == [acc_norm_by("characters", s) for s in samples]
    for other in ("none", "words", "tokens"):
        changed = [s["doc_id"] for s in samples if acc_norm_by(other, s) != s["acc_norm"]]
        assert len(changed) >= 2, f"{variant.name}: ranking by {other} changes acc_norm only on {changed}"


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_requests_are_lm_eval_s(workspace, ours, peer, variant):
    """Each choice's (context, continuation) is lm-eval's: the same prompt, and the choice after the same target
    delimiter; the prompt is also the one the run recorded."""
    from llamabench.config import RunConfig
    from llamabench.native import prepare_tasks

    config = RunConfig([variant.name], tasks_dir=[workspace / "native"], data_dir=workspace / "data")
    (task,) = prepare_tasks(config)
    _, samples = ours
    peers = peer_samples(peer, variant)
    for doc, row, sample in zip(task.requests, samples[variant.name].itertuples(), peers, strict=True):
        assert [(r.context, r.continuation) for r in doc.requests] == [tuple(a) for a in sample["arguments"]]
        assert row.prompt == doc.prompt


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_per_choice_loglikelihoods_equal_lm_eval_hf(ours, peer, variant):
    _, samples = ours
    table = samples[variant.name]
    peers = peer_samples(peer, variant)
    assert table.doc_id.tolist() == [s["doc"]["id"] for s in peers]
    for row, sample in zip(table.itertuples(), peers, strict=True):
        assert json.loads(row.loglikelihood) == pytest.approx(peer_loglikelihoods(sample), rel=1e-5), row.doc_id


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_acc_and_acc_norm_per_document_equal_lm_eval_hf(ours, peer, variant):
    _, samples = ours
    table = samples[variant.name]
    peers = peer_samples(peer, variant)
    for metric in ("acc", "acc_norm"):
        assert table[metric].tolist() == [s[metric] for s in peers], metric


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_aggregates_equal_lm_eval_hf(ours, peer, variant):
    results, _ = ours
    rows = results.set_index(["task", "metric"])
    for metric in ("acc", "acc_norm"):
        row = rows.loc[(variant.name, metric)]
        assert row.n == len(QUESTIONS)
        assert row.value == pytest.approx(peer["results"][variant.name][f"{metric},none"], abs=1e-12), metric
    # The data is chosen so that the two aggregates differ: equal ones could hide acc_norm ranking like acc.
    assert rows.loc[(variant.name, "acc")].value != rows.loc[(variant.name, "acc_norm")].value
