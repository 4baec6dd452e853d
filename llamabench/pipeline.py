"""The one evaluation path. ``llamabench run``, ``watch``, :func:`evaluate_checkpoint`,
:func:`~llamabench.training.in_memory.evaluate_model`, the Trainer callback, the benchmarks and the tests all
evaluate through an :class:`Evaluation`::

    evaluation = Evaluation.prepare(config)        # flags checked, tasks read and rendered, cache opened
    run = evaluation.run_checkpoint("out/checkpoint-500", step=500)   # load -> serve -> evaluate -> record
    run = evaluation.run_backend(backend, step=500)                  # a backend already built (model in memory)

:meth:`Evaluation.prepare` does everything that needs no model, so bad input fails before any weights load.
A run is the work of its evaluators, each turning the prepared tasks and the served backend into a partial
:class:`~llamabench.records.results.RunResult`: llamabench's own tasks (``native.py``) and, when the run names
``lm_eval:<task>``, lm-eval's (``interop/lm_eval/tasks.py``); :func:`~llamabench.records.manifest.build_run`
joins them into the run. Serving puts the backend behind the request cache and spreads it over the ranks of a
torchrun job (replicated models split the requests, a sharded one runs them together).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from llamabench.backends.base import Backend
from llamabench.backends.factory import load_backend
from llamabench.backends.loading.cache_dir import CACHE_DB, cache_root
from llamabench.backends.registry import check_engines
from llamabench.backends.wrappers.cache import CachedBackend, RequestCache
from llamabench.backends.wrappers.sharded import ShardedBackend
from llamabench.config import RunConfig
from llamabench.digits import environment_int
from llamabench.distributed import agree, init_distributed, is_main_process, world_size
from llamabench.errors import LlamabenchError, warn
from llamabench.interop import LM_EVAL_PREFIX
from llamabench.native import PreparedTask, evaluate_tasks, prepare_tasks, select_shard
from llamabench.records.results import RunResult, build_run, ensure_writable, write_run
from llamabench.records.store import RunStore
from llamabench.shard_spec import parse_shard
from llamabench.trackers import Trackers

if TYPE_CHECKING:
    from llamabench.interop.lm_eval.tasks import LmEvalTasks

# How a model lies over the ranks of the process group: one process, one copy per rank, or one sharded copy.
LAYOUTS = ("single", "replicated", "sharded")


@dataclass
class Evaluation:
    """A run's tasks prepared once (for every model it evaluates), its request cache, its configuration, and the
    experiment trackers it logs to (``--log-to``; ended with ``trackers.finish()`` by whoever prepared it)."""

    config: RunConfig
    native: list[PreparedTask]
    lm_eval: LmEvalTasks | None
    cache: RequestCache | None
    trackers: Trackers = field(default_factory=Trackers)

    @classmethod
    def prepare(cls, config: RunConfig) -> Evaluation:
        """Check ``config`` (:meth:`RunConfig.validate`), join the ranks of a torchrun job, check each model's
        engine and its options (``backends/registry.py``), check the output folder, resolve and render every task
        (on every rank, which agree on any failure) and open the request cache: all before any model loads."""
        if not (config.tasks or config.text):  # `--tasks ""` or `--tasks ,` would store an empty run
            raise LlamabenchError("nothing to run: pass --tasks NAMES, or --text PATH to score your own text files")
        config = join_ranks(config.validate())
        check_engines(config)
        if config.output_dir is not None:
            ensure_writable(config.output_dir)
        native, lm_eval = agree(lambda: _prepare_tasks(config), "preparing the tasks")
        if config.shard is not None:
            native = select_shard(native, parse_shard(config.shard))
        return cls(config, native, lm_eval, open_cache(config.cache_mode), Trackers(config.log_to, config.output_dir))

    def check_before_loading(self, models: list[str | None]) -> None:
        """Refuse what the tasks ask of each of ``models`` that it cannot give, from its small files, before any
        weights load (``preflight.py``): ``run``, ``evaluate_checkpoint`` and ``watch`` all check here."""
        from llamabench.preflight import check_before_loading

        for model in models:
            check_before_loading(model, self.native, self.config.max_length)

    def run_checkpoint(self, model: str | None, *, step: int | None = None, replicas: int | None = None) -> RunResult:
        """Load ``model`` (a directory, ``.gguf``, hub id, or None for the embedded default) and evaluate it; with
        ``--ray``, in ``replicas`` Ray actors (default: one per free slot of the cluster) answering this driver."""
        if self.config.ray is None:
            backend, layout = load_backend(self.config, model), "replicated"
        else:
            from llamabench.scale.ray_backend import RayBackend

            backend, layout = RayBackend.start(self.config, model, replicas), "single"
        try:
            return self.run_backend(backend, model=model, layout=layout, step=step)
        finally:
            backend.close()  # before the next model loads: its engine's memory goes back

    def run_backend(
        self,
        backend: Backend,
        *,
        model: str | None = None,
        layout: str = "replicated",
        step: int | None = None,
        sections: dict | None = None,
    ) -> RunResult:
        """Evaluate ``backend`` (recorded as ``model``, default its id) served as ``layout`` over the ranks;
        ``step`` (a training step) and ``sections`` go into the manifest."""
        served = self.serve(backend, layout)
        try:
            return self.evaluate(
                served, model=backend.model_id if model is None else model, step=step, sections=sections
            )
        finally:
            if layout == "sharded":
                served.release()

    def record(self, run: RunResult) -> Path | None:
        """Write the run folder and add it to the store of ``output_dir``, then log the run to the trackers (rank 0
        only); returns the folder, or None where nothing is written (no ``output_dir``, or another rank)."""
        if not is_main_process():
            return None
        folder = None
        if self.config.output_dir is not None:
            folder = write_run(run, self.config.output_dir)
            RunStore.in_dir(self.config.output_dir).add(run, folder)
        self.trackers.log_run(run, folder)  # after the store: a tracker never costs the recorded run
        return folder

    def serve(self, backend: Backend, layout: str = "replicated") -> Backend:
        """``backend`` behind the request cache (when it has a content fingerprint) and spread over the ranks."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
        served: Backend = backend
        if self.cache is not None and backend.fingerprint == Backend.fingerprint:
            warn(
                f"model {backend.model_id} has no content fingerprint (its files are not local): results are not cached"
            )
        elif self.cache is not None:
            served = CachedBackend(backend, self.cache, refresh=self.config.refresh)
        if layout == "sharded":
            from llamabench.backends.wrappers.fully_sharded import FullyShardedBackend

            # Every rank runs every request: each rank's cache would serve the same results, so it is not consulted.
            return FullyShardedBackend(backend)
        if layout == "replicated" and world_size() > 1:
            return ShardedBackend(served)
        return served

    def evaluate(
        self, backend: Backend, *, model: str | None, step: int | None = None, sections: dict | None = None
    ) -> RunResult:
        """Run every evaluator on the served ``backend``: one results table, manifest and sample set."""
        started = datetime.now(timezone.utc)
        parts = [evaluate_tasks(backend, self.native, self.config, started)]
        if self.lm_eval is not None:
            from llamabench.interop.lm_eval.tasks import evaluate_lm_eval_tasks

            parts.append(evaluate_lm_eval_tasks(backend, self.lm_eval, self.config))
        backend.verify_identity()  # recorded only under the identity that computed it (base.py: Identity)
        return build_run(backend, self.config.record(model), started, parts, step=step, sections=sections)


def _prepare_tasks(config: RunConfig) -> tuple[list[PreparedTask], LmEvalTasks | None]:
    """The native tasks and the lm-eval tasks (None when the run names none), resolved and loaded."""
    native = [name for name in config.tasks if not name.startswith(LM_EVAL_PREFIX)]
    lm_eval_names = list(
        dict.fromkeys(name.removeprefix(LM_EVAL_PREFIX) for name in config.tasks if name.startswith(LM_EVAL_PREFIX))
    )
    prepared = prepare_tasks(replace(config, tasks=native))
    if not lm_eval_names:
        return prepared, None
    try:
        from llamabench.interop.lm_eval.tasks import load_lm_eval_tasks
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("lm_eval"):
            raise
        raise LlamabenchError("lm_eval: tasks need lm-eval; install it with pip install 'llamabench[lm-eval]'") from exc
    return prepared, load_lm_eval_tasks(
        lm_eval_names, config.include_path, num_fewshot=config.num_fewshot, seed=config.seed
    )


def join_ranks(config: RunConfig) -> RunConfig:
    """Under torchrun, join the process group and pick this rank's device; refuse what cannot run there."""
    if environment_int("WORLD_SIZE", 1) <= 1:
        return config
    if config.device_map:
        raise LlamabenchError(
            f"--device-map {config.device_map} cannot run under torchrun (WORLD_SIZE={os.environ['WORLD_SIZE']}): "
            "one model sharded over GPUs and data-parallel replicas do not combine; run a single process with "
            "--device-map, or drop --device-map for one replica per GPU"
        )
    return replace(config, device=init_distributed(config.device))


def open_cache(mode: str) -> RequestCache | None:
    """The request cache (``use`` or ``refresh``, which rebuilds a corrupt one), or None for ``off``."""
    return None if mode == "off" else RequestCache(cache_root() / CACHE_DB, rebuild=mode == "refresh")


def evaluate_checkpoint(model: str | None, tasks: list[str], *, step: int | None = None, **flags) -> RunResult:
    """Evaluate a checkpoint on ``tasks`` as ``llamabench run`` does. ``flags`` are :class:`RunConfig`'s fields,
    named as the CLI flags (``limit``, ``batch_size``, ``data_dir``, ``tasks_dir``, ``no_cache``, ``log_to``, ...);
    with ``output_dir`` the run is written and recorded in that folder's store."""
    evaluation = Evaluation.prepare(RunConfig.from_keywords("evaluate_checkpoint", tasks, flags))
    try:
        evaluation.check_before_loading([model])
        run = evaluation.run_checkpoint(model, step=step)
        evaluation.record(run)
    finally:
        evaluation.trackers.finish()
    return run
