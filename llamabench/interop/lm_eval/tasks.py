"""lm-eval tasks inside llamabench runs.

lm-eval's own task objects build the requests (prompts, few-shot examples, filters) and score the answers
(``process_results``, aggregation, standard errors) in lm-eval's ``evaluate``, with a llamabench backend as
the model; the output becomes llamabench's tidy results rows (task ``lm_eval:<name>``) and per-sample tables.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import lm_eval
import numpy as np
import pandas as pd
from lm_eval.api.group import Group
from lm_eval.api.task import ConfigurableTask, Task
from lm_eval.evaluator import evaluate as lm_eval_evaluate
from lm_eval.tasks import TaskManager

from llamabench import __version__
from llamabench.backends.base import Backend
from llamabench.config import RunConfig
from llamabench.errors import LlamabenchError
from llamabench.interop import LM_EVAL_PREFIX
from llamabench.interop.lm_eval.model import LlamabenchLM
from llamabench.metrics.perplexity import word_rule_signature
from llamabench.records import settings
from llamabench.records.comparability import data_hash
from llamabench.records.results import MetricValue, RunResult, result_rows, results_frame

# Metrics llamabench reports on 0-100, as its native SQuAD metrics; lm-eval's own metric code gives them on 0-1.
PERCENT_METRICS = ("exact_match", "f1")


@dataclass
class LmEvalTasks:
    """lm-eval tasks and groups, loaded and configured: ``TaskManager.load``'s ``tasks``/``groups`` dict."""

    loaded: dict[str, Any]
    include_paths: list[Path]

    def objects(self) -> dict[str, Task | Group]:
        """Every task and group by its lm-eval name."""
        return {**self.loaded["tasks"], **self.loaded["groups"]}

    @cached_property  # hashes every document: once per run or watch, not once per stored run compared
    def identities(self) -> dict[str, tuple[str, str | None]]:
        """Each task's (and group's) recorded name with the hashes of its definition and of its documents, as a
        run records them in its settings (``task_hash``, ``data_hash``): known before any model runs."""
        return {LM_EVAL_PREFIX + name: (_config_hash(item), _data_hash(item)) for name, item in self.objects().items()}


def load_lm_eval_tasks(
    names: Sequence[str], include_paths: Sequence[Path] = (), *, num_fewshot: int | None = None, seed: int = 0
) -> LmEvalTasks:
    """Load lm-eval tasks or groups by name, their YAMLs first looked up under ``include_paths``.

    lm-eval's own catalogue (thousands of YAMLs, slow to index) is read only for names not found there.
    ``num_fewshot`` overrides every task's count except where a task fixes it at 0, as lm-eval's
    ``simple_evaluate`` does; ``seed`` seeds the few-shot sampling.
    """
    paths = [Path(path) for path in include_paths]
    for path in paths:
        if not path.is_dir():
            raise LlamabenchError(f"--include-path {path} is not a folder of lm-eval task YAML files")
    folders = [str(path) for path in paths]
    manager = TaskManager(include_path=folders, include_defaults=False)
    if not set(names) <= set(manager.all_tasks):
        manager = TaskManager(include_path=folders or None)
    unknown = [name for name in names if name not in manager.all_tasks]
    if unknown:
        raise LlamabenchError(
            f"unknown lm-eval task {', '.join(unknown)}; see `lm-eval ls tasks`, or pass the folder of your "
            "task YAML with --include-path"
        )
    loaded = manager.load(list(names))
    for task in loaded["tasks"].values():
        if num_fewshot is not None and task.get_config("num_fewshot") != 0:
            task.set_config(key="num_fewshot", value=num_fewshot)
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=seed)
    return LmEvalTasks(loaded, paths)


def evaluate_lm_eval_tasks(backend: Backend, tasks: LmEvalTasks, config: RunConfig) -> RunResult:
    """Run ``tasks`` through lm-eval's evaluator with ``backend`` as the model.

    Results get one row per task or group x metric (``<metric>,<filter>`` for filters other than ``none``),
    with lm-eval's values, standard errors (NaN where lm-eval gives none), sample counts and directions.
    The manifest holds only the per-task notes and lm-eval's version, for merging into a run's manifest.
    """
    started = datetime.now(timezone.utc)
    tick = time.perf_counter()
    output = lm_eval_evaluate(
        lm=LlamabenchLM(backend, seed=config.seed),
        task_dict=tasks.loaded,
        limit=config.limit,
        bootstrap_iters=config.bootstrap_iters,
        log_samples=True,
    )
    info = backend.info()  # once: the settings every task of this evaluation ran with
    context = {
        "model": backend.model_id,
        "model_fingerprint": backend.fingerprint,
        "limit": config.limit,
        "seed": config.seed,
        "llamabench_version": __version__,
        "timestamp": started.isoformat(timespec="seconds"),
    }
    objects = tasks.objects()
    rows, notes = [], {}
    for name, entry in output["results"].items():
        task = LM_EVAL_PREFIX + name
        task_hash = _config_hash(objects[name])
        rows += result_rows(
            _metric_values(entry, output["higher_is_better"][name], _scored_by_lm_eval(objects[name])),
            {
                **context,
                "task": task,
                "task_version": str(output["versions"][name]),
                "task_hash": task_hash,
                "num_fewshot": output["n-shot"][name],
            },
        )
        recorded = settings.make(
            task_hash=task_hash,
            num_fewshot=output["n-shot"][name],
            limit=config.limit,
            seed=config.seed,
            backend=info,
            chat_template=False,
            data_hash=_data_hash(objects[name]),
            metric_versions={"lm_eval": lm_eval.__version__},
        ).record()
        notes[task] = {"documents": entry["sample_len"], "task_hash": task_hash, "settings": recorded}
    samples = {
        LM_EVAL_PREFIX + name: _samples_frame(objects[name], logged) for name, logged in output["samples"].items()
    }
    manifest = {
        "tasks": notes,
        "lm_eval": {
            "version": lm_eval.__version__,
            "include_paths": [str(path) for path in tasks.include_paths],
            "seconds": round(time.perf_counter() - tick, 2),
        },
    }
    return RunResult(results_frame(rows), samples, manifest)


def _metric_label(metric: str, filter_name: str) -> str:
    return metric if filter_name == "none" else f"{metric},{filter_name}"


def _scored_by_lm_eval(item: Task | Group) -> bool:
    """Whether lm-eval's own metric code scores the task (every task of a group); a task's own
    ``process_results`` may report its metrics on any scale."""
    tasks = item.get_all_tasks() if isinstance(item, Group) else [item]
    return all(
        type(task).process_results is ConfigurableTask.process_results and not callable(task.config.process_results)
        for task in tasks
    )


def _metric_values(
    entry: dict[str, Any], higher_is_better: dict[str, bool | None], scored_by_lm_eval: bool
) -> list[MetricValue]:
    """lm-eval's ``<metric>,<filter>`` and ``<metric>_stderr,<filter>`` entries of one task or group.

    :data:`PERCENT_METRICS` go on 0-100 where lm-eval's own code computed them on 0-1; where a task's own code did,
    their scale is unknown and they are named ``<metric>_raw`` so that no row is read on the wrong scale.
    """
    values = []
    for key, value in entry.items():
        metric, comma, filter_name = key.partition(",")
        if not comma or metric.endswith("_stderr"):
            continue
        stderr = entry.get(f"{metric}_stderr,{filter_name}")
        scale, label = 1.0, metric
        if metric in PERCENT_METRICS:
            scale, label = (100.0, metric) if scored_by_lm_eval else (1.0, f"{metric}_raw")
        values.append(
            MetricValue(
                metric=_metric_label(label, filter_name),
                value=scale * float(value),
                stderr=float("nan") if stderr in (None, "N/A") else scale * float(stderr),
                n=entry["sample_len"],
                higher_is_better=higher_is_better.get(metric),
                signature=word_rule_signature("lm_eval") if metric == "word_perplexity" else None,
            )
        )
    return values


def _config_hash(item: Task | Group) -> str:
    """Hash of the configuration of a task, or of a group and all its tasks, wherever their YAMLs live."""
    if isinstance(item, Group):
        configs = [item.to_dict()] + [task.dump_config() for task in item.get_all_tasks()]
    else:
        configs = [item.dump_config()]
    for config in configs:
        config["metadata"] = {k: v for k, v in (config.get("metadata") or {}).items() if k != "config_source"}
    return hashlib.sha256(json.dumps(configs, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _data_hash(item: Task | Group) -> str | None:
    """A hash of the documents a task evaluates (None for a group: its tasks have their own)."""
    return data_hash(list(item.eval_docs)) if isinstance(item, Task) else None


def _samples_frame(task: Task, logged: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per document (lm-eval logs one per document and filter) with each metric's per-document value."""
    rows: dict[int, dict[str, Any]] = {}
    for sample in logged:
        if sample["doc_id"] not in rows:
            rows[sample["doc_id"]] = _sample_row(task, sample)
        for metric in sample["metrics"]:
            value = sample[metric]
            if not isinstance(value, int | float):  # a corpus metric's item: its aggregate over this document
                value = task.aggregation()[metric]([value])
            rows[sample["doc_id"]][_metric_label(metric, sample["filter"])] = float(value)
    return pd.DataFrame(list(rows.values()))


def _sample_row(task: Task, sample: dict[str, Any]) -> dict[str, Any]:
    """The model's raw output for one document (first repeat of each request) and its targets."""
    outputs = [responses[0] for responses in sample["resps"]]
    targets = sample["target"] if isinstance(sample["target"], list) else [sample["target"]]
    prediction = loglikelihood = None
    if task.OUTPUT_TYPE == "generate_until":
        prediction = outputs[0]
    elif task.OUTPUT_TYPE == "multiple_choice":
        choices = task.doc_to_choice(sample["doc"])
        scores = [score for score, _ in outputs]
        prediction = choices[int(np.argmax(scores))]
        loglikelihood = json.dumps([round(score, 6) for score in scores])
        targets = [choices[t] if isinstance(t, int) else t for t in targets]
    elif task.OUTPUT_TYPE == "loglikelihood_rolling":
        loglikelihood = outputs[0]
    else:  # loglikelihood: a (log-likelihood, is-greedy) pair
        loglikelihood = outputs[0][0]
    return {
        "doc_id": str(sample["doc_id"]),
        "prompt_hash": sample["prompt_hash"][:12],  # sha256 of the prompt, as llamabench's own tables
        "prompt": sample["arguments"][0][0],
        "prediction": prediction,
        "target": json.dumps(targets, ensure_ascii=False, default=str),
        "loglikelihood": loglikelihood,
    }
