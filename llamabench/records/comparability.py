"""When two runs' numbers for a task may be compared: the settings that change them, recorded and checked.

The settings are :class:`~llamabench.records.settings.Settings` (one typed record, from which the cache key, the watch's
"already evaluated" rule and this module's verdicts are derived). Every run records, per task, in
``manifest["tasks"][task]["settings"]``:

========================  =================================================================================
``task_hash``             the task definition (templates, metrics, generation settings, few-shot delimiters)
``num_fewshot``           the effective few-shot count (after ``--num-fewshot``)
``limit``                 ``--limit``
``seed``                  ``--seed`` (few-shot draws and sampled generations)
``max_length``            the effective context window in tokens
``dtype``                 the model's dtype as it ran
``chat_template``         whether prompts were wrapped in the model's chat template
``trust_remote_code``     whether the model ran its own code
``generation_settings``   generation tasks: the checkpoint's generation-config fields that change outputs
``kv_cache``              generation tasks: ``--kv-cache`` (recorded from format 2; older runs do not compare it)
``data_hash``             a hash of the task's documents as loaded (every field, every document)
``metric_versions``       each metric's version (bumped when its definition changes a number)
``no_effect``             the settings above that cannot change a number of this task in this run
========================  =================================================================================

A setting in both runs' ``no_effect`` is not compared: only differences that can change a number refuse a check.
``limit`` has no effect when it is unset or at least the task's document count (it is then no limit); ``seed``
when the task draws no few-shot examples, samples no generation and reports no bootstrap standard error (a
corpus metric's, with ``--bootstrap-iters`` >= 2). Runs that recorded no ``no_effect`` compare every setting.

Two runs are comparable on a task when all of these are equal and every document they share was given the
same prompt (the per-sample ``prompt_hash``, which also catches a different chat template or few-shot draw).
Metrics counted in tokens (``token_perplexity``) also need the same tokenizer (``manifest["backend"]
["tokenizer"]``); checkpoints with different tokenizers are compared on their other metrics only.
``llamabench check`` refuses runs that differ; ``llamabench report`` marks the columns of such tasks.

Example: a baseline run with ``--num-fewshot 2`` and a candidate with ``--num-fewshot 0`` give
``differences(...) == ["num_fewshot 2 vs 0"]`` for the task, and ``check`` stops with that line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import pandas as pd

from llamabench.errors import LlamabenchError
from llamabench.records.manifest import Manifest
from llamabench.records.settings import Settings
from llamabench.requests import DocRequests, GenerationRequest

SETTINGS = Settings.names()


def data_hash(docs: Sequence[dict]) -> str:
    """A hash of documents as loaded: any changed field or document changes it."""
    text = json.dumps(list(docs), sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def seed_changes_numbers(
    docs: Sequence[DocRequests], num_fewshot: int, metrics: Sequence[str], bootstrap_iters: int
) -> bool:
    """Whether ``--seed`` can change a number of a task: it draws few-shot examples, seeds sampled generations,
    and seeds the bootstrap of metrics whose standard error is bootstrapped (from two documents and two draws)."""
    from llamabench.metrics import get_metric  # here: reading settings (report, check) needs no metric code

    sampled = any(isinstance(r, GenerationRequest) and not r.greedy for doc in docs for r in doc.requests)
    bootstrapped = bootstrap_iters >= 2 and len(docs) >= 2 and any(get_metric(m).seeded_standard_error for m in metrics)
    return num_fewshot > 0 or sampled or bootstrapped


def recorded_settings(manifest: Mapping, task: str) -> Settings | None:
    """The settings a run (its manifest, or a manifest's JSON) recorded for ``task``, or None for runs made before
    settings were recorded."""
    return Manifest.from_dict(manifest).settings(task)


def differences(first: Settings | Mapping | None, second: Settings | Mapping | None) -> list[str]:
    """The settings that differ (:meth:`Settings.differences`; records are read); unknown settings (an old run)
    differ."""
    if first is None or second is None:
        return ["settings not recorded (a run from before llamabench 0.2: re-run it)"]
    return _read(first).differences(_read(second))


def _read(settings: Settings | Mapping) -> Settings:
    return settings if isinstance(settings, Settings) else Settings.from_record(settings)


def same_tokenizer(baseline: Mapping, candidate: Mapping) -> bool:
    """Whether two runs' manifests name the same tokenizer (runs that do not record one: assume not)."""
    first, second = (Manifest.from_dict(manifest).backend_info.tokenizer for manifest in (baseline, candidate))
    return first is not None and first == second


def require_same_settings(task: str, baseline: Mapping, candidate: Mapping) -> None:
    """Raise a one-line error naming every setting in which the runs' manifests differ for ``task``."""
    differing = differences(recorded_settings(baseline, task), recorded_settings(candidate, task))
    if differing:
        raise LlamabenchError(
            f"task {task}: the runs are not comparable ({'; '.join(differing)}, baseline vs candidate); "
            "re-run the candidate with the baseline's settings"
        )


def require_same_prompts(task: str, baseline: pd.DataFrame, candidate: pd.DataFrame) -> None:
    """Raise a one-line error unless every document got the same prompt in both per-sample tables, which must
    be aligned (same doc_ids in the same order)."""
    if "prompt_hash" not in baseline or "prompt_hash" not in candidate:
        return
    changed = baseline.prompt_hash.to_numpy() != candidate.prompt_hash.to_numpy()
    if changed.any():
        first = baseline.doc_id.iloc[int(changed.argmax())]
        raise LlamabenchError(
            f"task {task}: {int(changed.sum())} document(s) were given different prompts (first: doc_id {first}), "
            "so the runs are not comparable; re-run the candidate with the baseline's task and data"
        )
