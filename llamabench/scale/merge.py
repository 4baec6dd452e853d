"""``llamabench merge``: the partial runs of ``--shard 0/N`` .. ``--shard N-1/N`` joined into the unsharded run.

Each shard's per-sample table holds its documents' rows, with every metric's sufficient statistics per document
(the ``stats`` column, see :func:`~llamabench.scoring.score`), and its manifest names the positions of those
documents in the task. The merge puts every task's rows back in the task's order and scores them as a run scores
a task (:func:`~llamabench.scoring.metric_value`): corpus figures (BLEU, chrF, perplexity) from the summed
statistics, standard errors from the joined documents with the run's seed. So the merged run's aggregates and
standard errors are the unsharded run's whenever the per-document values are (to float rounding: 1e-9 relative).

Shards are joined only when they are one split of one evaluation: all N present once, and the same settings of
every task (``records/settings.py``: task definition, data hash, few-shot count, seed, ...), model fingerprint,
llamabench version and run-wide flags; anything else is refused with one line. A merged run (its manifest has
``merged_from``, whatever its folder is called) is never taken for a shard: named among shards (the docs' glob
over the runs folder, run a second time) it is left out with a note; named alone, refused.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from llamabench.errors import LlamabenchError, note
from llamabench.records.manifest import Manifest
from llamabench.records.results import RunResult, result_rows, results_frame, sample_file_stems
from llamabench.records.settings import NO_NUMBER_FLAGS
from llamabench.scoring import metric_value, sample_stats, truncation_notes
from llamabench.shard_spec import parse_shard

# The manifest section of a merged run: the shards it joined.
MERGED = "merged_from"


def merge_runs(shards: Sequence[RunResult], names: Sequence[str] | None = None) -> RunResult:
    """The run the shards (``names`` name them in errors, default their run ids) are parts of; see the module."""
    names = list(names or [shard.manifest.run_id or "?" for shard in shards])
    shards, names = _without_merged_runs(shards, names)
    ordered = _in_order(shards, names)
    first = ordered[0].manifest
    for shard, name in zip(ordered[1:], names[1:], strict=False):
        _require_same(first, shard.manifest, names[0], name)
    started = min(shard.manifest.started or "" for shard in ordered)
    rows, samples, notes = [], {}, {}
    for task in first.sections["shard"]["documents"]:
        parts = [(shard, shard.manifest.sections["shard"]["positions"][task]) for shard in ordered]
        if sorted(i for _, positions in parts for i in positions) != list(
            range(first.sections["shard"]["documents"][task])
        ):
            raise LlamabenchError(
                f"merge: task {task}: the shards' documents do not cover the task once each; a manifest was "
                "edited or damaged: rerun the shards"
            )
        joined = _join_samples(task, [(shard.samples[task], positions) for shard, positions in parts if positions])
        shard_rows = [shard.results[shard.results.task == task] for shard, positions in parts if positions]
        rows += _task_rows(task, joined, pd.concat(shard_rows), first.config, started)
        samples[task] = joined
        notes[task] = _task_notes(task, joined, [shard.manifest.tasks.get(task) for shard, _ in parts])
    manifest = Manifest(
        run_id=_run_id(started),
        model=first.model,
        started=started,
        backend=first.backend,
        config={**first.config, "shard": None},
        tasks=notes,
        llamabench_version=first.llamabench_version,
        step=first.step,
        sample_files=sample_file_stems(list(samples)),
        sections={
            **{key: value for key, value in first.sections.items() if key != "shard"},
            MERGED: [
                {"shard": shard.manifest.sections["shard"]["shard"], "run_id": shard.manifest.run_id}
                for shard in ordered
            ],
        },
    )
    return RunResult(results_frame(rows), samples, manifest)


def _without_merged_runs(shards: Sequence[RunResult], names: list[str]) -> tuple[list[RunResult], list[str]]:
    """The runs that are not merged runs, and their names; a note for each merged run left out."""
    kept = [(shard, name) for shard, name in zip(shards, names, strict=True) if MERGED not in shard.manifest.sections]
    for shard in shards:
        if MERGED in shard.manifest.sections:
            parts = ", ".join(str(part.get("run_id")) for part in shard.manifest.sections[MERGED])
            if not kept:
                raise LlamabenchError(
                    f"merge: run {shard.manifest.run_id} is a merged run (of {parts}), not a shard; merge only shards"
                )
            note(f"merge: {shard.manifest.run_id} is a merged run (of {parts}), not a shard; left out")
    return [shard for shard, _ in kept], [name for _, name in kept]


def _in_order(shards: Sequence[RunResult], names: list[str]) -> list[RunResult]:
    """The shards by index; refuses runs that are not shards, a shard given twice, a missing one."""
    if not shards:
        raise LlamabenchError("merge: name the shards' runs (run ids, unique prefixes or folders)")
    by_index: dict[int, tuple[RunResult, str]] = {}
    counts = set()
    for shard, name in zip(shards, names, strict=True):
        record = shard.manifest.sections.get("shard")
        if not isinstance(record, dict) or "shard" not in record:
            raise LlamabenchError(f"merge: run {name} is not a shard (it ran without --shard); merge only shards")
        part = parse_shard(record["shard"])
        counts.add(part.count)
        if part.index in by_index:
            raise LlamabenchError(
                f"merge: shard {part} is given twice (runs {by_index[part.index][1]} and {name}); name each shard once"
            )
        by_index[part.index] = (shard, name)
    if len(counts) > 1:
        raise LlamabenchError(f"merge: the runs are shards of different splits (of {sorted(counts)}); merge one split")
    (count,) = counts
    missing = [f"{index}/{count}" for index in range(count) if index not in by_index]
    if missing:
        raise LlamabenchError(
            f"merge: shard(s) {', '.join(missing)} missing ({len(by_index)} of {count} given); run them "
            "(llamabench run ... --shard I/N) and name every shard"
        )
    names[:] = [by_index[index][1] for index in range(count)]
    return [by_index[index][0] for index in range(count)]


def _require_same(first: Manifest, other: Manifest, first_name: str, name: str) -> None:
    """Refuse two shards that are not parts of one evaluation (one line naming the difference)."""

    def refuse(what: str, mine, theirs=None) -> None:
        detail = mine if theirs is None else f"{mine} vs {theirs}"
        raise LlamabenchError(
            f"merge: shards {first_name} and {name} differ in {what} ({detail}); they are not parts of "
            "one run: rerun the odd shard with the others' model, data, flags and llamabench"
        )

    if first.backend_info.fingerprint != other.backend_info.fingerprint:
        refuse("model fingerprint", first.backend_info.fingerprint, other.backend_info.fingerprint)
    if first.llamabench_version != other.llamabench_version:
        refuse("llamabench version", first.llamabench_version, other.llamabench_version)
    mine, theirs = first.sections["shard"]["documents"], other.sections["shard"]["documents"]
    if mine != theirs:
        refuse("tasks or document counts", mine, theirs)
    for task in mine:
        differences = _settings_differences(first, other, task)
        if differences:
            refuse(f"the settings of task {task}", differences[0])
    flags = sorted(
        key
        for key in set(first.config) | set(other.config)
        if key not in NO_NUMBER_FLAGS and first.config.get(key) != other.config.get(key)
    )
    if flags:
        refuse(f"--{flags[0].replace('_', '-')}", first.config.get(flags[0]), other.config.get(flags[0]))


def _settings_differences(first: Manifest, other: Manifest, task: str) -> list[str]:
    """What differs between the settings two shards recorded for ``task`` (a shard that scored none of its
    documents recorded none: nothing to compare)."""
    from llamabench.records.comparability import differences

    if task not in first.tasks or task not in other.tasks:
        return []
    return differences(first.settings(task), other.settings(task))


def _join_samples(task: str, parts: list[tuple[pd.DataFrame, list[int]]]) -> pd.DataFrame:
    """The per-sample rows of the shards back in the task's order (each shard's rows are in its positions' order)."""
    frames = []
    for frame, positions in parts:
        if len(frame) != len(positions):
            raise LlamabenchError(
                f"merge: task {task}: a shard holds {len(frame)} per-sample rows for {len(positions)} documents; "
                "its run folder is damaged: rerun that shard"
            )
        frames.append(frame.assign(_position=positions))
    joined = pd.concat(frames, ignore_index=True).sort_values("_position", kind="stable")
    return joined.drop(columns="_position").reset_index(drop=True)


def _task_rows(task: str, samples: pd.DataFrame, shard_rows: pd.DataFrame, config: dict, started: str) -> list[dict]:
    """The task's aggregate rows from its joined documents; the columns that describe the run come from a shard."""
    rows = []
    for metric, group in shard_rows.groupby("metric", sort=False):
        signatures = set(group.signature.dropna())
        if len(signatures) > 1:
            raise LlamabenchError(f"merge: task {task}, metric {metric}: the shards' signatures differ {signatures}")
        value = metric_value(
            metric,
            sample_stats(samples, metric),
            signature=signatures.pop() if signatures else None,
            bootstrap_iters=config["bootstrap_iters"],
            seed=config["seed"],
        )
        context = group.iloc[0].to_dict()
        context["timestamp"] = started
        rows += result_rows([value], {key: item for key, item in context.items() if key not in _VALUE_COLUMNS})
    return rows


_VALUE_COLUMNS = ("metric", "value", "stderr", "n", "higher_is_better", "signature")


def _task_notes(task: str, samples: pd.DataFrame, notes: list[dict | None]) -> dict:
    """The task's manifest note: the shards' documents and seconds added, truncation recounted, settings as one
    shard recorded them (equal in every shard, checked)."""
    recorded = [note for note in notes if note]
    return {
        **recorded[0],
        "documents": len(samples),
        "seconds": round(sum(note.get("seconds", 0.0) for note in recorded), 2),
        **truncation_notes(task, samples),
    }


def _run_id(started: str) -> str:
    when = datetime.fromisoformat(started) if started else datetime.now()
    return when.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
