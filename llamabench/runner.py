"""The pipeline: tasks -> documents -> requests -> backend -> scores -> results table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from llamabench import __version__, settings
from llamabench.backends.base import Backend, BackendInfo
from llamabench.backends.finite import NonFiniteError
from llamabench.comparability import data_hash, seed_changes_numbers
from llamabench.errors import LlamabenchError, warn
from llamabench.manifest import build_run
from llamabench.metrics import get_metric
from llamabench.requests import DocRequests, GenerationRequest, build_requests, require_prompt_room
from llamabench.results import RunResult, result_rows, results_frame
from llamabench.scoring import score
from llamabench.tasks import registry
from llamabench.tasks.data import load_documents
from llamabench.tasks.kinds import run_documents
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

    def validate(self) -> None:
        """Range-check every number before any work is done; one line naming the flag otherwise."""
        checks = [
            (self.limit is None or self.limit >= 1, f"--limit {self.limit} must be a positive number of documents"),
            (self.num_fewshot is None or self.num_fewshot >= 0, f"--num-fewshot {self.num_fewshot} must be >= 0"),
            (self.max_length is None or self.max_length >= 2, f"--max-length {self.max_length} must be >= 2 tokens"),
            (0 <= self.seed < MAX_SEED, f"--seed {self.seed} must be a whole number from 0 to {MAX_SEED - 1}"),
            (self.bootstrap_iters >= 0, f"--bootstrap-iters {self.bootstrap_iters} must be >= 0 (0 or 1: no stderr)"),
            (
                self.batch_size == "auto" or (isinstance(self.batch_size, int) and self.batch_size >= 1),
                f"--batch-size {self.batch_size} must be 'auto' or a positive whole number",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise LlamabenchError(message)


# Seeds feed numpy, Python and torch generators; 2**63 keeps every one of them happy.
MAX_SEED = 2**63


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


def prepare_tasks(config: RunConfig) -> list[PreparedTask]:
    """Resolve tasks and load their documents; done before the model loads so data errors come first."""
    config.validate()
    specs = registry.resolve(config.tasks, registry.task_dirs(config.tasks_dirs))
    sources = [(spec, config.data_dir, config.allow_data_outside, "dataset.local") for spec in specs]
    # --text paths are the user's own, given on the command line: read relative to the working directory, anywhere.
    sources += [
        (text_task(path, config.text_format, config.text_word_rule), Path.cwd(), True, "--text")
        for path in config.texts
    ]
    names = [spec.name for spec, *_ in sources]
    if len(set(names)) < len(names):
        raise LlamabenchError(f"two tasks of this run share a name ({', '.join(names)}); give each --text once")
    prepared = []
    for spec, data_dir, allow_outside, named_by in sources:
        pool = load_documents(spec.dataset, spec.name, data_dir, allow_outside=allow_outside, named_by=named_by)
        docs = pool[: config.limit]
        built = build_requests(spec, docs, num_fewshot=config.num_fewshot, fewshot_pool=pool, seed=config.seed)
        requests = [doc for doc in built if spec.task_kind.scorable(doc)]
        skipped = len(built) - len(requests)
        if not requests:
            raise LlamabenchError(
                f"task {spec.name}: all {len(docs)} documents are empty texts, so there is nothing to score; "
                "check the data file and the task's prompt template"
            )
        if skipped:
            warn(f"task {spec.name}: {skipped} empty document(s) skipped (no perplexity); counted in the manifest")
        if config.max_length is not None:
            check_generation_fits(spec.name, requests, config.max_length)
        prepared.append(PreparedTask(spec, docs, requests, skipped, data_hash(pool), len(pool)))
    return prepared


def check_generation_fits(task: str, docs: list[DocRequests], max_length: int) -> None:
    """Refuse generation requests whose ``max_new_tokens`` leave no room for a prompt in the context window."""
    longest = max(
        (r.max_new_tokens for doc in docs for r in doc.requests if isinstance(r, GenerationRequest)), default=0
    )
    require_prompt_room(longest, max_length, task)


def _generates(task: PreparedTask) -> bool:
    return any(isinstance(r, GenerationRequest) for doc in task.requests for r in doc.requests)


def evaluate(backend: Backend, tasks: list[PreparedTask], config: RunConfig) -> RunResult:
    """Run every task's requests through ``backend`` and score them: the run."""
    started = datetime.now(timezone.utc)
    return build_run(backend, config, started, [evaluate_tasks(backend, tasks, config, started)])


def evaluate_tasks(backend: Backend, tasks: list[PreparedTask], config: RunConfig, started: datetime) -> RunResult:
    """Every task's results and samples, and a manifest of their notes only (see ``manifest.build_run``)."""
    rows, samples, task_notes = [], {}, {}
    info = backend.info()
    # Before any request runs, so that a task that cannot fit, or asks for a chat template the model lacks,
    # fails before work is spent on the tasks ahead of it.
    wrapped = []
    for task in tasks:
        if info.max_length:
            check_generation_fits(task.spec.name, task.requests, info.max_length)
        if _generates(task):
            backend.require_generation(task.spec.name)
        kind = task.spec.task_kind
        chat = task.spec.chat_template
        wrapped.append(
            [kind.with_chat_template(doc, backend.apply_chat_template) for doc in task.requests]
            if chat
            else task.requests
        )
    for task, docs in zip(tasks, wrapped, strict=True):
        spec = task.spec
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
            "settings": task_settings(task, config, info, docs).record(),
        }
    return RunResult(results_frame(rows), samples, {"tasks": task_notes})


def task_settings(task: PreparedTask, config: RunConfig, info: BackendInfo, docs: list[DocRequests] | None = None):
    """A native task's :class:`~llamabench.settings.Settings` on a backend described by ``info`` (``watch``: as
    requested, before loading); ``docs`` are the requests as run (default: as prepared)."""
    fewshot = task.spec.num_fewshot if config.num_fewshot is None else config.num_fewshot
    docs = task.requests if docs is None else docs
    return settings.of_task(
        task,
        config,
        info,
        num_fewshot=fewshot,
        seed_used=seed_changes_numbers(docs, fewshot, task.spec.metrics, config.bootstrap_iters),
        generates=_generates(task),
        metric_versions={name: get_metric(name).version for name in task.spec.metrics},
    )
