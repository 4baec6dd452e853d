"""Evaluate the model a training loop holds, as it is: plain, wrapped in DDP, or sharded with FSDP2.

A plain or DDP model is one copy per rank: the ranks of the current process group split the requests, as under
``torchrun ... llamabench run``. An FSDP2 model (``fully_shard``) is one copy over all ranks: every rank runs every
forward together. The result is the :class:`~llamabench.records.results.RunResult` ``llamabench run`` gives,
fingerprinted from the model's parameters (it has no files), so the request cache can never serve one model's
results to another. The model's train/eval flags and grad mode are put back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from llamabench.backends.hf.backend import HFBackend
from llamabench.backends.hf.engine import HFEngine
from llamabench.backends.loading.model_fingerprint import fingerprint_model
from llamabench.config import RunConfig
from llamabench.distributed import RankFailure, every_rank, world_size
from llamabench.errors import LlamabenchError
from llamabench.pipeline import Evaluation
from llamabench.records.results import RunResult

# RunConfig fields that say how to load a checkpoint from files; an in-memory model is already loaded.
_LOADING_FIELDS = ("model", "device", "dtype", "device_map")


def evaluate_model(
    model: torch.nn.Module,
    tokenizer,
    tasks: Sequence[str],
    *,
    step: int | None = None,
    model_id: str | None = None,
    **flags,
) -> RunResult:
    """Evaluate ``model`` (a transformers causal LM, possibly DDP-wrapped or FSDP2-sharded) with ``tokenizer`` on
    ``tasks``. ``flags`` are :class:`~llamabench.config.RunConfig`'s, named as the CLI flags (``limit``,
    ``batch_size``, ``data_dir``, ``output_dir``, ``no_cache``, ``log_to``, ...); with ``output_dir`` the run is
    written and recorded in that folder's run store (by rank 0), with ``log_to`` logged to those trackers. ``step``
    is recorded in the manifest and is the report's (and the trackers') x axis. Call it on every rank of the group.
    Every setting is checked (:func:`prepare_in_memory`) before the model runs."""
    evaluation = prepare_in_memory(tasks, flags)
    try:
        return evaluate_prepared(evaluation, model, tokenizer, step=step, model_id=model_id)
    finally:
        evaluation.trackers.finish()


def prepare_in_memory(tasks: Sequence[str], flags: dict, caller: str = "evaluate_model") -> Evaluation:
    """Every check of :func:`evaluate_model`'s settings that needs no model (flags known and in range, the output
    folder writable, the request cache opened, every task resolved, parsed and its data loaded), and the prepared
    evaluation. Raises :class:`LlamabenchError` (one line) on the first problem."""
    given = [name for name in _LOADING_FIELDS if flags.get(name)]
    if given:
        raise LlamabenchError(
            f"{caller}: {', '.join(given)} apply to checkpoints loaded from files; the model is evaluated "
            "where and as it is (move or cast it first, or use evaluate_checkpoint)"
        )
    engine = flags.get("engine", HFEngine.name)
    if engine != HFEngine.name:
        raise LlamabenchError(
            f"{caller}: engine {engine}: a model in memory runs on the transformers engine that holds it "
            f"(engine='{HFEngine.name}'); save it, then evaluate_checkpoint(path, ..., engine='{engine}')"
        )
    return Evaluation.prepare(RunConfig.from_keywords(caller, tasks, flags))


def evaluate_prepared(
    evaluation: Evaluation, model: torch.nn.Module, tokenizer, *, step: int | None = None, model_id: str | None = None
) -> RunResult:
    """:func:`evaluate_model` with its settings already prepared (the Trainer callback prepares them once)."""
    inner, layout = unwrap(model)
    name = model_id or _default_name(inner, step)
    config = evaluation.config
    with evaluation_mode(inner):
        fingerprint = fingerprint_model(inner, tokenizer, sharded=layout == "sharded")
        if layout == "replicated" and len(set(every_rank(fingerprint))) > 1:
            raise RankFailure(
                "evaluate_model: the ranks hold different weights (their fingerprints differ), so their shares of "
                "the requests would come from different models; evaluate after the ranks synchronise"
            )
        backend = HFBackend(
            inner,
            tokenizer,
            model_id=name,
            model_fingerprint=fingerprint,
            batch_size=config.batch_size,
            max_length=config.max_length,
            kv_cache=config.kv_cache,
            progress=False,
        )
        layout_note = {"in_memory": {"layout": layout, "world_size": world_size()}}
        run = evaluation.run_backend(backend, layout=layout, step=step, sections=layout_note)
    evaluation.record(run)
    return run


def unwrap(model: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """The transformers model inside DDP or ``torch.compile`` wrappers, and how it lies over the ranks."""
    from torch.distributed.fsdp import FSDPModule

    while isinstance(model, torch.nn.parallel.DistributedDataParallel) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model._orig_mod
    if isinstance(model, FSDPModule):
        return model, "sharded"
    return model, "replicated" if world_size() > 1 else "single"


@contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[None]:
    """``model`` in eval mode (no dropout) for the block; then every module's own train/eval flag and the grad
    mode as they were."""
    flags = [(module, module.training) for module in model.modules()]
    grad_enabled = torch.is_grad_enabled()
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training
        torch.set_grad_enabled(grad_enabled)


def _default_name(model: torch.nn.Module, step: int | None) -> str:
    source = getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    name = f"in-memory:{Path(source).name or source}"
    return name if step is None else f"{name}@step{step}"
