"""``llamabench watch DIR``: evaluate each checkpoint a training run writes under DIR, once, when it is complete.

A sub-folder whose name carries a step (``checkpoint-1000``, ``step2000``) is evaluated once it holds weights and
its files (names, sizes, modification times) are the same at two polls ``--every`` seconds apart. Each run is
recorded with its step in the run store of ``--output-dir`` and checked against ``--baseline`` or else the
previous checkpoint; after each poll that recorded a run (and when the watch stops) the report under ``--out`` is
rewritten with every run of this watch. A checkpoint already in the store with the same files (its content
fingerprint) and the same settings of every task (:func:`llamabench.records.settings.watch_differences`:
anything that can change one of its numbers) is skipped, so a restarted watch goes on where it stopped; another
``--batch-size`` changes no number beyond rounding and is no reason to evaluate again.

Training writes, rewrites and deletes checkpoints while the watch reads them. A folder with a temporary name
(``tmp-checkpoint-500``) is not a checkpoint yet. One that fails to load (a corrupt or truncated file) is noted
once and retried only when its files change; one deleted or changed while it is being loaded or evaluated is
noted once and not recorded (its numbers might mix two versions of its files): a changed one is evaluated again
once its files stop changing, a deleted one is skipped. The watch goes on with the other checkpoints.

Report cost: the watch keeps what the report shows of each run (aggregates and the first sample rows, see
:class:`~llamabench.records.summary.RunSummary`) in memory, adding each new run's as it is recorded, so a
checkpoint costs one run's reading however many came before; the check reads only its reference run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llamabench.errors import LlamabenchError, first_line, note, warn
from llamabench.escaping import terminal

if TYPE_CHECKING:  # the rest loads torch and transformers: imported when a watch starts, not for `--help`
    from llamabench.analysis.check import MaxDrop
    from llamabench.config import RunConfig
    from llamabench.pipeline import Evaluation
    from llamabench.records.manifest import Manifest
    from llamabench.records.results import RunResult
    from llamabench.records.store import RunStore
    from llamabench.records.summary import RunSummary
    from llamabench.training.checkpoints import Checkpoint


@dataclass
class Watcher:
    """The state of one watch: what it evaluates, where runs go, and what it has seen of each checkpoint."""

    root: Path
    evaluation: Evaluation
    store: RunStore
    report_dir: Path
    baseline: RunResult | None
    max_drops: dict[str, MaxDrop]
    alpha: float
    seen: dict[Path, tuple | None] = field(default_factory=dict)
    # Recorded checkpoints whose files, as snapshot, were found to be those of a run of this watch's settings.
    matched: dict[Path, tuple] = field(default_factory=dict)
    expected: dict | None = None  # this watch's settings by native task (see `expected_settings`)
    failed: dict[Path, tuple | None] = field(default_factory=dict)
    # What the report shows of each run of this watch, by run_id (None until the first report is due).
    summaries: dict[str, RunSummary] | None = None
    report_due: bool = False

    @property
    def config(self) -> RunConfig:
        return self.evaluation.config

    def loop(self, every: float, once: bool) -> int:
        """Poll until interrupted (or, with ``once``, twice); 1 when ``once`` found a regression or a check that
        could not run (refused, or numbers that are not numbers), else 0 (an INCONCLUSIVE check too, as ``check``
        exits)."""
        regressions, polls = 0, 0
        print(f"watching {self.root} every {every:g} s; runs go to {self.config.output_dir}", flush=True)
        try:
            while True:
                found, waiting = self.poll()
                self.write_report()
                regressions += found
                polls += 1
                if once and polls >= 2:
                    if waiting:
                        note(f"{waiting} checkpoint(s) still being written were not evaluated")
                    return int(regressions > 0)
                time.sleep(every)
        finally:  # interrupted mid-poll (Ctrl-C): the runs recorded so far are in the report
            self.write_report()
            self.evaluation.trackers.finish()

    def poll(self) -> tuple[int, int]:
        """Evaluate every checkpoint that is complete and not yet recorded; returns (regressions, still waiting)."""
        from llamabench.training.checkpoints import snapshot, step_folders

        regressions, waiting = 0, 0
        recorded: dict[str, set] = {}
        for manifest in self.watched_manifests():
            recorded.setdefault(manifest.config["model"], set()).add(manifest.backend_info.fingerprint)
        listed = step_folders(self.root)
        for gone in set(self.seen) - {checkpoint.path for checkpoint in listed}:  # deleted (or renamed) since
            self.seen.pop(gone)
            self.failed.pop(gone, None)
        for checkpoint in listed:
            if self.evaluated(checkpoint.path, recorded.get(str(checkpoint.path), set())):
                continue
            now, before = snapshot(checkpoint.path), self.seen.get(checkpoint.path)
            self.seen[checkpoint.path] = now
            if now is None and not checkpoint.path.is_dir():
                self.forget(checkpoint, "was deleted before it was evaluated; skipped")
            elif now is None or now != before:
                waiting += 1
            elif checkpoint.path not in self.failed or self.failed[checkpoint.path] != now:
                regressions += self.evaluate(checkpoint, now)
        return regressions, waiting

    def evaluate(self, checkpoint: Checkpoint, files: tuple) -> int:
        """Evaluate, record and check one checkpoint whose files were ``files``; returns its number of regressed
        metrics. A checkpoint whose files change or vanish meanwhile is noted and not recorded."""
        from llamabench.backends.factory import load_backend
        from llamabench.records.results import format_table
        from llamabench.records.summary import summarize

        model = str(checkpoint.path)
        backend = None
        try:
            self.evaluation.check_before_loading([model])  # as `run` checks it: its small files, before its weights
            backend = load_backend(self.config, model)
            run = self.evaluation.run_backend(backend, model=model, step=checkpoint.step)
        except _checkpoint_errors() as exc:
            if backend is not None and not isinstance(exc, LlamabenchError) and self.unchanged(checkpoint, files):
                raise  # the model loaded and its files are as they were: a failure of llamabench, not of them
            return self.not_evaluated(checkpoint, files, exc)
        finally:
            if backend is not None:
                backend.close()  # before the next checkpoint loads
        if not self.unchanged(checkpoint, files):
            return self.changed(checkpoint)
        folder = self.evaluation.record(run)
        print(terminal(f"{checkpoint.path.name} (step {checkpoint.step}): results written to {folder}"))
        print(format_table(run.results), flush=True)
        self.report_runs()[run.manifest.run_id] = summarize(run)
        self.report_due = True
        reference = self.baseline or self.previous(checkpoint.step)
        return 0 if reference is None else self.check(reference, run)

    def evaluated(self, path: Path, fingerprints: set) -> bool:
        """Whether the checkpoint's files now are those a stored run of this watch's settings evaluated (their
        content fingerprint, computed again only when their snapshot changed: digests are memoised)."""
        from llamabench.backends.loading.model_source import fingerprint, resolve_model
        from llamabench.training.checkpoints import snapshot

        if not fingerprints:
            return False
        now = snapshot(path)
        if now is not None and self.matched.get(path) == now:
            return True
        try:
            same = now is not None and fingerprint(resolve_model(str(path))) in fingerprints
        except (OSError, LlamabenchError):  # being rewritten or deleted: the polls below see to it
            same = False
        if same:
            self.matched[path] = now
        else:
            self.matched.pop(path, None)
        return same

    def not_evaluated(self, checkpoint: Checkpoint, files: tuple, exc: Exception) -> int:
        """Note a checkpoint that failed to load or evaluate: retried when its files change (at once if they
        already did: the failure may have come from the change)."""
        if not self.unchanged(checkpoint, files):
            return self.changed(checkpoint)
        self.failed[checkpoint.path] = files
        why = first_line(exc) if isinstance(exc, LlamabenchError) else f"{type(exc).__name__}: {first_line(exc)}"
        note(terminal(f"{checkpoint.path.name} not evaluated ({why}); retried when its files change"))
        return 0

    def unchanged(self, checkpoint: Checkpoint, files: tuple) -> bool:
        from llamabench.training.checkpoints import snapshot

        return snapshot(checkpoint.path) == files

    def changed(self, checkpoint: Checkpoint) -> int:
        """Note a checkpoint whose files were deleted or changed while it was loaded or evaluated."""
        if not checkpoint.path.is_dir():
            return self.forget(checkpoint, "was deleted while it was being loaded or evaluated; skipped")
        self.seen[checkpoint.path] = None  # evaluated again once two polls see the same files
        note(
            terminal(
                f"{checkpoint.path.name} changed while it was being loaded or evaluated; not recorded, evaluated again "
                "once its files stop changing"
            )
        )
        return 0

    def forget(self, checkpoint: Checkpoint, why: str) -> int:
        self.seen.pop(checkpoint.path, None)
        self.failed.pop(checkpoint.path, None)
        note(terminal(f"{checkpoint.path.name} {why}"))
        return 0

    def previous(self, step: int) -> RunResult | None:
        """The stored run of this watch's latest checkpoint before ``step`` (the only full run a check reads)."""
        earlier = [manifest for manifest in self.watched_manifests() if manifest.step < step]
        return self.store.load(earlier[-1].run_id) if earlier else None

    def report_runs(self) -> dict[str, RunSummary]:
        """What the report shows of each run of this watch; read from the store once, one run at a time."""
        if self.summaries is None:
            self.summaries = {m.run_id: self.store.summary(m.run_id) for m in self.watched_manifests()}
        return self.summaries

    def write_report(self) -> None:
        """Rewrite the report if a run was recorded since it was last written."""
        from llamabench.analysis.report import write_report
        from llamabench.records.summary import summarize

        if not self.report_due:
            return
        runs = sorted(self.report_runs().values(), key=lambda run: run.manifest.step)
        write_report(([summarize(self.baseline)] if self.baseline else []) + runs, self.report_dir)
        self.report_due = False

    def check(self, reference: RunResult, run: RunResult) -> int:
        """Check ``run`` against ``reference``; returns its failed rows, or 1 when the check is refused: a refused
        check is one warning line every time and counts as failed, so regression checking never stops silently."""
        from llamabench.analysis.check import compare_runs, format_comparisons, unchecked

        try:
            rows = compare_runs(
                reference,
                run,
                max_drops=self.max_drops,
                alpha=self.alpha,
                iters=self.config.bootstrap_iters,
                seed=self.config.seed,
            )
        except LlamabenchError as exc:
            warn(
                f"check refused: {run.manifest.model} is not checked for regressions against "
                f"{reference.manifest.model}: {first_line(exc)}"
            )
            self.evaluation.trackers.log_values({"check/passed": 0.0, "check/refused": 1.0}, run.manifest.step)
            return 1
        print(terminal(f"check: {run.manifest.model} vs {reference.manifest.model}"))
        print(format_comparisons(rows, self.alpha, unchecked(reference, run)), flush=True)
        regressed = [f"{row.task}/{row.metric}" for row in rows if row.failed]
        undecided = [f"{row.task}/{row.metric}" for row in rows if row.inconclusive]
        verdict = {
            "check/passed": float(not regressed),
            "check/regressed_metrics": float(len(regressed)),
            "check/inconclusive_metrics": float(len(undecided)),
        }
        self.evaluation.trackers.log_values(verdict, run.manifest.step)
        if regressed:
            print(terminal(f"REGRESSION at step {run.manifest.step}: {', '.join(regressed)}"), flush=True)
        elif undecided:
            print(terminal(f"INCONCLUSIVE at step {run.manifest.step}: {', '.join(undecided)}"), flush=True)
        return len(regressed)

    def watched_manifests(self) -> list[Manifest]:
        """The manifests of the stored runs of checkpoints under this folder made with this watch's settings, by
        step (read without the runs' tables, which every poll would otherwise load)."""
        manifests = [
            manifest
            for manifest in self.store.manifests()
            if manifest.step is not None
            and Path(manifest.config.get("model") or "").parent == self.root
            and not self.differences(manifest)
        ]
        return sorted(manifests, key=lambda manifest: manifest.step)

    def differences(self, manifest: Manifest) -> list[str]:
        """Why a stored run is not this watch's evaluation of its checkpoint (empty: it is)."""
        from llamabench.interop import LM_EVAL_PREFIX
        from llamabench.records.settings import flag_differences, watch_differences

        if self.expected is None:
            self.expected = self.expected_settings()
        config = manifest.config
        stored = {task: manifest.settings(task) for task in manifest.tasks if not task.startswith(LM_EVAL_PREFIX)}
        why = watch_differences(config, stored, self.config, self.expected)
        if self.evaluation.lm_eval is not None:
            # lm-eval tasks' settings are recorded once lm-eval ran them: compared by what asked for them, and by
            # their definitions and documents, which are known before.
            why += flag_differences(config, self.config)
            for task, (task_hash, data) in self.evaluation.lm_eval.identities.items():
                before = manifest.settings(task)
                if before is None or (before.task_hash, before.data_hash) != (task_hash, data):
                    why.append(f"task {task}: its lm-eval definition or documents changed")
        return why

    def expected_settings(self) -> dict:
        """This watch's settings of each native task, as far as they are known before a checkpoint loads."""
        from llamabench.backends.base import BackendInfo
        from llamabench.native import task_settings

        requested = BackendInfo(
            model="", fingerprint="", kv_cache=self.config.kv_cache, trust_remote_code=self.config.trust_remote_code
        )
        return {task.spec.name: task_settings(task, self.config, requested) for task in self.evaluation.native}


def _checkpoint_errors() -> tuple[type[BaseException], ...]:
    """What loading a checkpoint that training is writing, rewriting or deleting raises: transformers, safetensors
    and torch each have their own types for a missing, truncated or half-written file (an AttributeError or
    TypeError is a bug, never the files')."""
    import pickle
    import struct
    import zipfile

    from safetensors import SafetensorError

    # Truncated files: safetensors headers, torch's zip and pickle formats (.bin), GGUF's packed structs.
    truncated = (SafetensorError, zipfile.BadZipFile, pickle.UnpicklingError, struct.error, EOFError)
    return (LlamabenchError, OSError, ValueError, RuntimeError, KeyError, UnicodeError, *truncated)
