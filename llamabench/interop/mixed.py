"""Runs that mix native tasks and ``lm_eval:<task>`` names; lm-eval is imported only when a run names one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from llamabench.backends.base import Backend
from llamabench.errors import LlamabenchError
from llamabench.interop import LM_EVAL_PREFIX
from llamabench.records.manifest import build_run
from llamabench.records.results import RunResult
from llamabench.runner import PreparedTask, RunConfig, evaluate_tasks, prepare_tasks

if TYPE_CHECKING:
    from llamabench.interop.lm_eval.tasks import LmEvalTasks


@dataclass
class PreparedRun:
    """Native tasks on llamabench's own path, and the lm-eval tasks (``None`` when the run names none)."""

    native: list[PreparedTask]
    lm_eval: LmEvalTasks | None


def prepare_run(config: RunConfig, include_paths: Sequence[Path] = ()) -> PreparedRun:
    """Resolve and load every task of ``config`` before the model loads; lm-eval YAMLs may be in ``include_paths``."""
    native = [name for name in config.tasks if not name.startswith(LM_EVAL_PREFIX)]
    lm_eval_names = list(
        dict.fromkeys(name.removeprefix(LM_EVAL_PREFIX) for name in config.tasks if name.startswith(LM_EVAL_PREFIX))
    )
    prepared = PreparedRun(prepare_tasks(replace(config, tasks=native)), None)
    if lm_eval_names:
        try:
            from llamabench.interop.lm_eval.tasks import load_lm_eval_tasks
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("lm_eval"):
                raise
            raise LlamabenchError(
                "lm_eval: tasks need lm-eval; install it with pip install 'llamabench[lm-eval]'"
            ) from exc
        prepared.lm_eval = load_lm_eval_tasks(
            lm_eval_names, include_paths, num_fewshot=config.num_fewshot, seed=config.seed
        )
    return prepared


def evaluate_run(
    backend: Backend, prepared: PreparedRun, config: RunConfig, *, step: int | None = None, sections: dict | None = None
) -> RunResult:
    """Evaluate the native tasks, then the lm-eval ones, as one run: one results table, manifest and sample set."""
    started = datetime.now(timezone.utc)
    parts = [evaluate_tasks(backend, prepared.native, config, started)]
    if prepared.lm_eval is not None:
        from llamabench.interop.lm_eval.tasks import evaluate_lm_eval_tasks

        parts.append(evaluate_lm_eval_tasks(backend, prepared.lm_eval, config))
    return build_run(backend, config, started, parts, step=step, sections=sections)
