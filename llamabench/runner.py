"""The pipeline: tasks -> documents -> requests -> backend -> scores -> results table."""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from llamabench import __version__
from llamabench.backends.base import Backend
from llamabench.errors import LlamabenchError
from llamabench.requests import DocRequests, build_requests, with_chat_template
from llamabench.results import RunResult, result_rows, results_frame
from llamabench.scoring import score, to_outcomes
from llamabench.tasks import registry
from llamabench.tasks.data import load_documents
from llamabench.tasks.spec import TaskSpec
from llamabench.tasks.text_task import text_task


@dataclass
class RunConfig:
    """Everything ``llamabench run`` takes; the defaults are the CLI's."""

    tasks: list[str]
    model: str | None = None
    limit: int | None = None
    num_fewshot: int | None = None
    batch_size: int | str = "auto"
    device: str | None = None
    dtype: str | None = None
    max_length: int | None = None
    data_dir: Path | None = None
    output_dir: Path | None = None
    tasks_dirs: list[Path] = field(default_factory=list)
    seed: int = 0
    bootstrap_iters: int = 1000
    device_map: str | None = None
    kv_cache: str = "dynamic"
    allow_data_outside: bool = False
    texts: list[str] = field(default_factory=list)
    text_format: str = "text"
    text_word_rule: str = "lm_eval"


@dataclass
class PreparedTask:
    """A task with its documents and their rendered requests (rendering also validates the templates)."""

    spec: TaskSpec
    docs: list[dict]
    requests: list[DocRequests]


def prepare_tasks(config: RunConfig) -> list[PreparedTask]:
    """Resolve tasks and load their documents; done before the model loads so data errors come first."""
    if config.limit is not None and config.limit < 1:
        raise LlamabenchError(f"--limit {config.limit} must be a positive number of documents (omit it for all)")
    specs = registry.resolve(config.tasks, registry.task_dirs(config.tasks_dirs))
    sources = [(spec, config.data_dir, config.allow_data_outside) for spec in specs]
    # --text paths are the user's own, given on the command line: read relative to the working directory, anywhere.
    sources += [(text_task(path, config.text_format, config.text_word_rule), Path.cwd(), True) for path in config.texts]
    names = [spec.name for spec, _, _ in sources]
    if len(set(names)) < len(names):
        raise LlamabenchError(f"two tasks of this run share a name ({', '.join(names)}); give each --text once")
    prepared = []
    for spec, data_dir, allow_outside in sources:
        pool = load_documents(spec.dataset, spec.name, data_dir, allow_outside=allow_outside)
        docs = pool[: config.limit]
        requests = build_requests(spec, docs, num_fewshot=config.num_fewshot, fewshot_pool=pool, seed=config.seed)
        prepared.append(PreparedTask(spec, docs, requests))
    return prepared


def evaluate(backend: Backend, tasks: list[PreparedTask], config: RunConfig) -> RunResult:
    """Run every task's requests through ``backend`` and score them."""
    started = datetime.now(timezone.utc)
    rows, samples, task_notes = [], {}, {}
    for task in tasks:
        spec = task.spec
        tick = time.perf_counter()
        docs = with_chat_template(task.requests, backend.apply_chat_template) if spec.chat_template else task.requests
        docs, skipped = _drop_empty(spec, docs)
        if not docs:
            raise LlamabenchError(f"task {spec.name}: every document is empty; check the data file and templates")
        results = _run_requests(backend, spec, docs)
        outcomes = to_outcomes(spec, docs, results)
        values, samples[spec.name] = score(
            spec, docs, outcomes, bootstrap_iters=config.bootstrap_iters, seed=config.seed
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
            "skipped_empty": skipped,
            "seconds": round(time.perf_counter() - tick, 2),
            "task_hash": spec.config_hash,
        }
    manifest = {
        "run_id": started.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6],
        "model": backend.model_id,
        "backend": backend.describe(),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "tasks": task_notes,
        "llamabench_version": __version__,
        "started": started.isoformat(timespec="seconds"),
    }
    return RunResult(results_frame(rows), samples, manifest)


def _drop_empty(spec: TaskSpec, docs: list[DocRequests]) -> tuple[list[DocRequests], int]:
    """Empty texts have no perplexity: they are skipped and counted rather than scored as zero."""
    if spec.kind != "loglikelihood_rolling":
        return docs, 0
    kept = [doc for doc in docs if doc.prompt.strip()]
    return kept, len(docs) - len(kept)


def _run_requests(backend: Backend, spec: TaskSpec, docs: list[DocRequests]) -> list:
    requests = [request for doc in docs for request in doc.requests]
    if spec.kind == "loglikelihood_rolling":
        return backend.loglikelihood_rolling(requests)
    if spec.kind == "generate":
        return backend.generate(requests)
    return backend.loglikelihood(requests)
