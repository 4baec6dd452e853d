"""Builders shared by several test files: task texts, workspaces, hand-made runs, watched checkpoints.

Test modules import these (``from builders import ...``), never each other. A run is built with the product's
own builders (``task_settings``, ``result_rows``, ``manifest.build_run``) over a real tiny backend, so a change
to the manifest's schema reaches every test that uses a hand-made run.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from conftest import byte_tokenizer, tiny_llama

from llamabench.cli.app import main

# A generation task over ``<data>/tiny/qa.jsonl`` (the workspace of ``write_qa_workspace``).
GOOD_TASK = """\
name: tiny_qa
kind: generate
dataset: {local: tiny/qa.jsonl}
prompt: "Q: {{ question }}\\nA:"
target: "{{ answer }}"
metrics: [exact_match]
"""

# A perplexity task over ``texts.jsonl`` in the data folder.
# The token perplexity of each document's ``text`` in ``<data>/texts.jsonl``.
TOKEN_PPL_TASK = """\
name: tiny_ppl
kind: loglikelihood_rolling
dataset: {local: texts.jsonl}
prompt: "{{ text }}"
metrics: [token_perplexity]
"""
# Both perplexities of the same documents.
PPL_TASK = TOKEN_PPL_TASK.replace("[token_perplexity]", "[word_perplexity, token_perplexity]")


def write_qa_workspace(root: Path) -> Path:
    """``root/tasks/tiny_qa.yaml`` (GOOD_TASK) and one question under ``root/data``; returns ``root``."""
    (root / "tasks").mkdir()
    (root / "data" / "tiny").mkdir(parents=True)
    (root / "tasks" / "tiny_qa.yaml").write_text(GOOD_TASK)
    (root / "data" / "tiny" / "qa.jsonl").write_text('{"question": "2+2?", "answer": "4"}\n')
    return root


def run_cli_error(capsys, workspace: Path, *args: str) -> str:
    """``llamabench run`` in a ``write_qa_workspace`` folder, which must fail with one error line: that line."""
    argv = ["run", "--tasks-dir", str(workspace / "tasks"), "--data-dir", str(workspace / "data")]
    assert main([*argv, "--output-dir", str(workspace / "out"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("llamabench: error: ")
    return err


def cli_error(capsys, *args: str) -> str:
    """``llamabench *args``, which must fail (exit 2) with one error line: that line (earlier output is dropped)."""
    capsys.readouterr()
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("llamabench: error: "), err
    return err


# --- hand-made runs ---------------------------------------------------------------------------------------------


def _backend(model: str, other_tokenizer: bool):
    """A real tiny backend whose ``describe()`` goes into the manifest (2048 positions, float32)."""
    from llamabench.backends.hf.backend import HFBackend

    tokenizer = byte_tokenizer()
    if other_tokenizer:
        tokenizer.add_tokens(["<another token>"])  # another vocabulary: another tokenizer hash
    model_ = tiny_llama(max_positions=2048)
    if other_tokenizer:
        model_.resize_token_embeddings(len(tokenizer))
    return HFBackend(model_, tokenizer, model_id=model, model_fingerprint=f"fp-{model}", max_length=2048)


def make_run(
    model: str,
    stats_by_task: dict[str, dict[str, list[list[float]]]],
    *,
    started: str = "2025-01-01T00:00:00+00:00",
    task_hash: str = "hash",
    texts: dict[str, list] | None = None,
    num_fewshot: int = 0,
    other_tokenizer: bool = False,
):
    """A RunResult from given statistics: ``stats_by_task[task][metric]`` lists each document's statistics row.

    ``texts`` optionally overrides per-document columns (doc_id, prompt, prediction) of every task. The
    manifest comes from ``results.build_run`` (settings from ``settings.make``): seed 0, no
    limit, float32, 2048 tokens, the byte tokenizer (``other_tokenizer``: a tokenizer with one more token).
    """
    from llamabench.config import RunConfig
    from llamabench.metrics import get_metric
    from llamabench.records import settings as run_settings
    from llamabench.records.results import MetricValue, RunResult, build_run, result_rows, results_frame

    backend = _backend(model, other_tokenizer)
    info = backend.info()
    rows, samples, notes = [], {}, {}
    for task, stats in stats_by_task.items():
        n = len(next(iter(stats.values())))
        frame = pd.DataFrame(
            {
                "doc_id": [f"doc{i}" for i in range(n)],
                "prompt": [f"Question {i}?" for i in range(n)],
                "prediction": [f"answer {i}" for i in range(n)],
                "target": [json.dumps([f"gold {i}"]) for i in range(n)],
                **(texts or {}),
            }
        )
        values = []
        for name, metric_rows in stats.items():
            metric, array = get_metric(name), np.array(metric_rows, dtype=float)
            frame[name] = metric.per_sample(array)
            error = metric.standard_error(array, iters=50)
            values.append(MetricValue(name, metric.aggregate(array), error, n, metric.higher_is_better))
        frame["stats"] = [
            json.dumps({name: list(map(float, rows[i])) for name, rows in stats.items()}) for i in range(n)
        ]
        samples[task] = frame
        context = {
            "model": model,
            "model_fingerprint": backend.fingerprint,
            "task": task,
            "task_version": 1,
            "task_hash": task_hash,
            "num_fewshot": num_fewshot,
            "limit": None,
            "seed": 0,
            "llamabench_version": "0.1.0",
            "timestamp": started,
        }
        rows += result_rows(values, context)
        settings = run_settings.make(
            task_hash=task_hash,
            num_fewshot=num_fewshot,
            limit=None,
            seed=0,
            backend=info,
            chat_template=False,
            data_hash="data",
            metric_versions={},
        )
        notes[task] = {"documents": n, "task_hash": task_hash, "settings": settings.record()}
    part = RunResult(results_frame(rows), samples, {"tasks": notes})
    config = RunConfig(tasks=list(stats_by_task)).record(model)
    return build_run(backend, config, datetime.fromisoformat(started), [part])


def em_rows(correct: list[int]) -> list[list[float]]:
    """Exact-match statistics rows (0 or 100 per document)."""
    return [[100.0 * c] for c in correct]


# --- watched checkpoints ----------------------------------------------------------------------------------------


def write_checkpoint(folder: Path, head_scale: float, weights_after: float = 0.0) -> None:
    """A tiny LLaMA checkpoint; with ``weights_after``, config and tokenizer first and the weights that much later."""
    model = tiny_llama(0)
    with torch.no_grad():
        model.lm_head.weight *= head_scale
    staging = folder.with_name(f".staging-{folder.name}")
    model.save_pretrained(staging)
    folder.mkdir()
    byte_tokenizer().save_pretrained(folder)
    weights = staging / "model.safetensors"
    for part in sorted(staging.iterdir(), key=lambda p: p == weights):
        if part == weights:
            time.sleep(weights_after)
        part.rename(folder / part.name)


def watch_argv(root: Path, tmp_path: Path, data_dir: Path, *flags: str) -> list[str]:
    """``llamabench watch`` of ``root`` on a notes file; runs go to ``tmp_path/runs``, reports to ``.../reports``."""
    notes = tmp_path / "notes.txt"
    return [
        *("watch", str(root), "--text", str(notes), "--text-format", "lines", "--batch-size", "1", "--no-cache"),
        *("--data-dir", str(data_dir), "--output-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "reports")),
        *flags,
    ]


# --- a workspace for whole runs ---------------------------------------------------------------------------------

# GOOD_TASK over ``qa.jsonl`` at the workspace root (the workspace of ``write_run_workspace``), generating at most
# 4 tokens up to a newline.
QA_TASK = GOOD_TASK.replace("{local: tiny/qa.jsonl}", "{local: qa.jsonl}").replace(
    "metrics:", 'generation: {max_new_tokens: 4, until: ["\\n"]}\nmetrics:'
)
# Two texts of ``texts.jsonl`` (PPL_TASK's documents in a ``write_run_workspace`` folder).
TEXTS = ["The cat sat on the mat.", "Dogs bark at night, and the moon is up."]


def write_run_workspace(root: Path, monkeypatch) -> Path:
    """Task files (tiny_ppl, tiny_qa), their data and an isolated cache (request results, file digests) in
    ``root``, which is also the data folder; returns ``root``."""
    (root / "tasks").mkdir()
    (root / "tasks" / "tiny_ppl.yaml").write_text(PPL_TASK)
    (root / "tasks" / "tiny_qa.yaml").write_text(QA_TASK)
    (root / "texts.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    qa = [{"question": f"{i}+{i}?", "answer": str(2 * i)} for i in range(6)]
    (root / "qa.jsonl").write_text("".join(json.dumps(row) + "\n" for row in qa))
    monkeypatch.setenv("LLAMABENCH_CACHE", str(root / "cache"))
    return root


def cli_run(workspace: Path, model: Path, out: str, *extra: str):
    """``llamabench run`` of ``model`` in a ``write_run_workspace`` folder into ``workspace/out``: the run read back."""
    from llamabench.records.results import read_run

    argv = ["run", "--model", str(model), "--tasks-dir", str(workspace / "tasks"), "--data-dir", str(workspace)]
    assert main([*argv, "--output-dir", str(workspace / out), "--device", "cpu", *extra]) == 0
    (folder,) = [p for p in (workspace / out).iterdir() if p.is_dir()]
    return read_run(folder)


def spec_of(text: str, **overrides):
    """The TaskSpec of a task YAML text, with top-level keys replaced by ``overrides``."""
    import yaml

    from llamabench.tasks.task_file import parse_task

    return parse_task({**yaml.safe_load(text), **overrides}, "test.yaml")


def task_dict(name: str, kind: str, local: str, metrics: list[str], **keys) -> dict:
    """A task file's mapping, keys in file order: name, kind, a local dataset, ``keys`` (prompt, ...), metrics."""
    return {"name": name, "kind": kind, "dataset": {"local": local}, **keys, "metrics": metrics}


# --- metrics ----------------------------------------------------------------------------------------------------


def define_metric(base: type, name: str, scale: str, needs: tuple[str, ...], score) -> object:
    """Define a ``base`` subclass called ``name`` (higher is better) scoring each outcome by ``score(outcome)``.
    Defining it registers it: the registered instance; the caller pops ``REGISTRY[name]`` when done."""
    from llamabench.metrics.base import REGISTRY

    attributes = {"name": name, "higher_is_better": True, "scale": scale, "needs": needs}
    type(name, (base,), {**attributes, "score": lambda self, outcome: score(outcome)})
    return REGISTRY[name]
