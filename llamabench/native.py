"""The native evaluator: llamabench's own tasks (YAML and --text) prepared before any model loads, then run
through a backend and scored into results rows, samples and per-task notes (one evaluator of the pipeline; lm-eval
tasks are the other, in ``interop/lm_eval/tasks.py``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from llamabench import __version__
from llamabench.backends.base import Backend, BackendInfo
from llamabench.backends.finite import NonFiniteError
from llamabench.config import RunConfig
from llamabench.distributed import is_main_process
from llamabench.errors import LlamabenchError, note, warn
from llamabench.metrics import get_metric
from llamabench.metrics.loading import load_metric_modules
from llamabench.records import settings
from llamabench.records.comparability import data_hash, seed_changes_numbers
from llamabench.records.results import RunResult, result_rows, results_frame
from llamabench.requests import DocRequests, request_size
from llamabench.scale.shards import split_documents
from llamabench.scoring import score, truncation_notes
from llamabench.shard_spec import Shard
from llamabench.tasks import registry
from llamabench.tasks.build import build_requests
from llamabench.tasks.data import describe_source, load_documents
from llamabench.tasks.kinds import kind_of, run_documents
from llamabench.tasks.spec import TaskSpec
from llamabench.tasks.text_task import text_task


@dataclass
class PreparedTask:
    """A task with its documents and their rendered requests (rendering also validates the templates).

    ``requests`` holds the documents that will be scored: empty perplexity texts are left out and counted in
    ``skipped_empty``. ``data_hash`` fingerprints every loaded document (few-shot pool included).
    """

    spec: TaskSpec
    docs: list[dict]
    requests: list[DocRequests]
    skipped_empty: int = 0
    data_hash: str | None = None
    available: int | None = None  # documents before --limit: a limit at or above it is no limit
    positions: list[int] | None = None  # the documents (positions in ``requests``) a --shard runs; None: all

    @property
    def selected(self) -> list[DocRequests]:
        """The documents this run scores: every one, or its shard's."""
        return self.requests if self.positions is None else [self.requests[i] for i in self.positions]


def select_shard(tasks: list[PreparedTask], shard: Shard) -> list[PreparedTask]:
    """``tasks`` with the documents of ``shard`` selected (:func:`~llamabench.scale.shards.split_documents`, by the
    characters of each document's requests); every document stays rendered, so settings see the whole task."""
    sizes = [[sum(map(request_size, doc.requests)) for doc in task.requests] for task in tasks]
    mine = split_documents(sizes, shard.count)[shard.index]
    return [replace(task, positions=positions) for task, positions in zip(tasks, mine, strict=True)]


def prepare_tasks(config: RunConfig) -> list[PreparedTask]:
    """Resolve tasks and load their documents; done before the model loads so data errors come first. ``config``
    has been validated (:meth:`RunConfig.validate`)."""
    load_metric_modules(config.metrics_module)  # before the tasks are parsed: they check their metrics' names
    specs = registry.resolve(
        config.tasks, registry.task_dirs(config.tasks_dir), data_dir_given=config.data_dir is not None
    )
    sources = [(spec, config.data_dir, config.allow_data_outside, "dataset.local") for spec in specs]
    # --text paths are the user's own, given on the command line: read relative to the working directory, anywhere.
    sources += [
        (text_task(path, config.text_format_used, config.word_rule_used), Path.cwd(), True, "--text")
        for path in config.text
    ]
    _refuse_shared_text_names(sources)
    prepared, used = [], []
    for spec, data_dir, allow_outside, named_by in sources:
        pool = load_documents(spec.dataset, spec.name, data_dir, allow_outside=allow_outside, named_by=named_by)
        used.append(f"{spec.name}: {describe_source(spec.dataset, data_dir, len(pool))}")
        docs = pool[: config.limit]
        built = build_requests(spec, docs, num_fewshot=config.num_fewshot, fewshot_pool=pool, seed=config.seed)
        requests = [doc for doc in built if kind_of(spec).scorable(doc)]
        skipped = len(built) - len(requests)
        if not requests:
            raise LlamabenchError(
                f"task {spec.name}: all {len(docs)} documents are empty texts, so there is nothing to score; "
                "check the data file and the task's prompt template"
            )
        if skipped:
            warn(f"task {spec.name}: {skipped} empty document(s) skipped (no perplexity); counted in the manifest")
        if config.max_length is not None:
            kind_of(spec).check_fits(spec.name, requests, config.max_length)
        prepared.append(PreparedTask(spec, docs, requests, skipped, data_hash(pool), len(pool)))
    # Said when llamabench chose the data (a shipped sample, the hub), not when the user named every file.
    chosen = [spec for spec, data_dir, *_ in sources if spec.dataset.shipped or not (data_dir and spec.dataset.local)]
    if chosen and is_main_process():
        shipped = [spec.name for spec in chosen if spec.dataset.shipped]
        note(_data_line(used, shipped if config.data_dir is None else []))
    return prepared


def _data_line(used: list[str], sampled: list[str]) -> str:
    """The one line a run says about its data: each task's source, and why a shipped sample ran with no data
    folder given (the aliases ``ppl``, ``bleu``, ``rouge``, ``qa`` run the samples then)."""
    line = "data: " + "; ".join(used)
    if sampled:
        line += (
            f"; no --data-dir given, so the task aliases ran the samples ({', '.join(sampled)}); with --data-dir "
            "they run the full sets"
        )
    return line


def _refuse_shared_text_names(sources: list[tuple]) -> None:
    """Two ``--text`` paths whose task names are one (a name keeps only letters, digits, ``.``, ``_`` and ``-`` of
    the path, each other run of characters becoming one ``_``) would mix their rows: one line naming both."""
    paths: dict[str, list[str]] = {}
    for spec, *_ in sources:
        paths.setdefault(spec.name, []).append(spec.dataset.local)
    for name, given in paths.items():
        if len(given) > 1:
            listed = " and ".join(f"--text {path}" for path in given)
            raise LlamabenchError(
                f"{listed} both become task {name} (a --text task is named text: plus its path, each run of "
                "characters other than letters, digits, '.', '_' and '-' turned into one '_'); "
                + (
                    "give each path once"
                    if len(set(given)) < len(given)
                    else "rename or move one of them, or put both in one folder and give the folder"
                )
            )


def evaluate_tasks(backend: Backend, tasks: list[PreparedTask], config: RunConfig, started: datetime) -> RunResult:
    """Every task's results and samples, and a manifest of their notes only (see ``manifest.build_run``)."""
    rows, samples, task_notes = [], {}, {}
    info = backend.info()
    # Before any request runs, so that a task that cannot fit, or asks for a chat template the model lacks,
    # fails before work is spent on the tasks ahead of it.
    wrapped = []
    for task in tasks:
        kind = kind_of(task.spec)
        if info.max_length:  # every document, a shard's or not: a task that cannot fit fails on every shard
            kind.check_fits(task.spec.name, task.requests, info.max_length)
        if kind.generates:
            backend.require_generation(task.spec.name)
        else:
            backend.require_loglikelihoods(task.spec.name)
        chat = task.spec.chat_template
        wrapped.append(
            [kind.with_chat_template(doc, backend.apply_chat_template) for doc in task.selected]
            if chat
            else task.selected
        )
    for task, docs in zip(tasks, wrapped, strict=True):
        spec = task.spec
        if not docs:  # a shard given none of this task's documents: the other shards score them
            continue
        tick = time.perf_counter()
        try:
            outcomes = run_documents(backend, spec, docs)
        except NonFiniteError as exc:  # the backend cannot tell which task it runs: say so here
            raise NonFiniteError(f"model {backend.model_id}, task {spec.name}: {exc}") from exc
        values, samples[spec.name] = score(
            spec, docs, outcomes, bootstrap_iters=config.bootstrap_iters, seed=config.seed, model=backend.model_id
        )
        fewshot = spec.num_fewshot if config.num_fewshot is None else config.num_fewshot
        rows += result_rows(
            values,
            {
                "model": backend.model_id,
                "model_fingerprint": backend.fingerprint,
                "task": spec.name,
                "task_version": spec.version,
                "task_hash": spec.config_hash,
                "num_fewshot": fewshot,
                "limit": config.limit,
                "seed": config.seed,
                "llamabench_version": __version__,
                "timestamp": started.isoformat(timespec="seconds"),
            },
        )
        task_notes[spec.name] = {
            "documents": len(docs),
            "skipped_empty": task.skipped_empty,
            "seconds": round(time.perf_counter() - tick, 2),
            "task_hash": spec.config_hash,
            **truncation_notes(spec.name, samples[spec.name]),
            # A shard's settings are the whole task's, as the unsharded run records them.
            "settings": task_settings(task, config, info, docs if task.positions is None else None).record(),
        }
    sections = {} if config.shard is None else {"shard": shard_record(tasks, config.shard)}
    return RunResult(results_frame(rows), samples, {"tasks": task_notes, **sections})


def shard_record(tasks: list[PreparedTask], shard: str) -> dict:
    """The manifest's ``shard`` section of a partial run: which shard, and each task's documents in it (positions
    among the task's scored documents, which ``llamabench merge`` puts back in order) out of how many."""
    return {
        "shard": shard,
        "positions": {task.spec.name: task.positions for task in tasks},
        "documents": {task.spec.name: len(task.requests) for task in tasks},
    }


def task_settings(task: PreparedTask, config: RunConfig, info: BackendInfo, docs: list[DocRequests] | None = None):
    """A native task's :class:`~llamabench.records.settings.Settings` on a backend described by ``info`` (``watch``: as
    requested, before loading); ``docs`` are the requests as run (default: as prepared)."""
    fewshot = task.spec.num_fewshot if config.num_fewshot is None else config.num_fewshot
    docs = task.requests if docs is None else docs
    return settings.make(
        task_hash=task.spec.config_hash,
        num_fewshot=fewshot,
        limit=config.limit,
        seed=config.seed,
        backend=info,
        chat_template=task.spec.chat_template,
        data_hash=task.data_hash,
        metric_versions={name: get_metric(name).version for name in task.spec.metrics},
        available=task.available,
        seed_used=seed_changes_numbers(docs, fewshot, task.spec.metrics, config.bootstrap_iters),
        generates=kind_of(task.spec).generates,
    )
