"""The one path of every evaluation: ``llamabench run``, ``watch``, :func:`evaluate_checkpoint` and
:func:`~llamabench.training.in_memory.evaluate_model` all go prepare -> backend -> evaluate -> record through here, so
the request cache, the ranks of torchrun and lm-eval tasks work the same in each.

- :func:`prepare` resolves and renders the tasks once, before any model loads (data errors come first);
- :func:`open_cache` opens the request cache (a broken one fails before any model loads);
- :func:`load_checkpoint` is the backend factory for files, :func:`serve` wraps a backend in the cache and,
  across ranks, in the sharding (replicated models split the requests, a sharded one runs them together);
- :func:`evaluate` runs the prepared tasks; :func:`record` writes the run folder and adds it to the run store.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from llamabench.backends.base import Backend
from llamabench.backends.hf.backend import HFBackend
from llamabench.backends.loading.cache_dir import CACHE_DB, cache_root
from llamabench.backends.wrappers.cache import CachedBackend, RequestCache
from llamabench.backends.wrappers.sharded import ShardedBackend
from llamabench.distributed import agree, init_distributed, is_main_process, world_size
from llamabench.errors import LlamabenchError, warn
from llamabench.interop.mixed import PreparedRun, evaluate_run, prepare_run
from llamabench.records.results import RunResult, ensure_writable, write_run
from llamabench.records.store import RunStore
from llamabench.runner import RunConfig

CACHE_MODES = ("use", "refresh", "off")
# How a model lies over the ranks of the process group: one process, one copy per rank, or one sharded copy.
LAYOUTS = ("single", "replicated", "sharded")


def join_ranks(config: RunConfig) -> RunConfig:
    """Under torchrun, join the process group and pick this rank's device; refuse what cannot run there."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return config
    if config.device_map:
        raise LlamabenchError(
            f"--device-map {config.device_map} cannot run under torchrun (WORLD_SIZE={os.environ['WORLD_SIZE']}): "
            "one model sharded over GPUs and data-parallel replicas do not combine; run a single process with "
            "--device-map, or drop --device-map for one replica per GPU"
        )
    return replace(config, device=init_distributed(config.device))


def prepare(config: RunConfig, include_paths: Sequence[Path] = ()) -> PreparedRun:
    """Every task of ``config`` resolved, loaded and rendered (on every rank, which agree on any failure)."""
    return agree(lambda: prepare_run(config, include_paths), "preparing the tasks")


def open_cache(mode: str) -> RequestCache | None:
    """The request cache (``use`` or ``refresh``, which rebuilds a corrupt one), or None for ``off``."""
    if mode not in CACHE_MODES:
        raise LlamabenchError(f"cache mode {mode!r} is not one of {', '.join(CACHE_MODES)}")
    return None if mode == "off" else RequestCache(cache_root() / CACHE_DB, rebuild=mode == "refresh")


def load_checkpoint(config: RunConfig, *, trust_remote_code: bool = False) -> HFBackend:
    """The backend of the checkpoint ``config.model`` names (directory, .gguf, hub id or alias)."""

    def load() -> HFBackend:
        return HFBackend.load(
            config.model,
            device=config.device,
            dtype=config.dtype,
            device_map=config.device_map,
            kv_cache=config.kv_cache,
            batch_size=config.batch_size,
            max_length=config.max_length,
            trust_remote_code=trust_remote_code,
        )

    return agree(load, "loading the model")


def serve(backend: HFBackend, cache: RequestCache | None, *, refresh: bool = False, layout: str = "single") -> Backend:
    """``backend`` behind the request cache (when it has a content fingerprint) and spread over the ranks."""
    served: Backend = backend
    if cache is not None and backend.fingerprint == Backend.fingerprint:
        warn(f"model {backend.model_id} has no content fingerprint (its files are not local): results are not cached")
    elif cache is not None:
        served = CachedBackend(backend, cache, refresh=refresh)
    if layout == "sharded":
        from llamabench.backends.wrappers.fully_sharded import FullyShardedBackend

        # Every rank runs every request: each rank's cache would serve the same results, so it is not consulted.
        return FullyShardedBackend(backend)
    if layout == "replicated" and world_size() > 1:
        return ShardedBackend(served)
    return served


def evaluate(
    backend: Backend,
    prepared: PreparedRun,
    config: RunConfig,
    *,
    step: int | None = None,
    sections: dict | None = None,
) -> RunResult:
    """Run the prepared tasks on ``backend``; ``step`` (a training step) and ``sections`` go into the manifest."""
    return evaluate_run(backend, prepared, config, step=step, sections=sections)


def record(run: RunResult, output_dir: Path) -> Path | None:
    """Write the run folder and record it in the store of ``output_dir`` (rank 0 only); returns the folder."""
    if not is_main_process():
        return None
    folder = write_run(run, output_dir)
    RunStore.in_dir(output_dir).add(run, folder)
    return folder


def evaluate_checkpoint(
    model: str | None,
    tasks: Sequence[str],
    *,
    step: int | None = None,
    cache: str = "use",
    include_paths: Sequence[Path] = (),
    trust_remote_code: bool = False,
    **fields,
) -> RunResult:
    """Evaluate a checkpoint on ``tasks`` as ``llamabench run`` does; ``fields`` are :class:`RunConfig`'s
    (``limit``, ``batch_size``, ``data_dir``, ...). With ``output_dir`` the run is written and stored there."""
    config = join_ranks(RunConfig(tasks=list(tasks), model=model, **fields))
    if config.output_dir is not None:
        ensure_writable(config.output_dir)
    prepared = prepare(config, include_paths)
    request_cache = open_cache(cache)
    backend = serve(
        load_checkpoint(config, trust_remote_code=trust_remote_code),
        request_cache,
        refresh=cache == "refresh",
        layout="replicated",
    )
    run = evaluate(backend, prepared, config, step=step)
    if config.output_dir is not None:
        record(run, config.output_dir)
    return run
