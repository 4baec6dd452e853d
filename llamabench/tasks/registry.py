"""Find task YAML files (built-in ``tasks/`` plus user folders) and resolve names and aliases."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from llamabench.errors import LlamabenchError, warn
from llamabench.tasks.data import builtin_tasks_dir
from llamabench.tasks.spec import TaskSpec
from llamabench.tasks.task_file import load_task_file, names_in_task_file

# Both spellings of the YAML suffix are task files; a folder holding `qa.yml` means it as much as `qa.yaml`.
TASK_FILE_SUFFIXES = (".yaml", ".yml")


def task_dirs(extra: Sequence[Path] = ()) -> list[Path]:
    """Folders searched for tasks, later ones overriding earlier: built-in, $LLAMABENCH_TASKS, --tasks-dir."""
    dirs = [builtin_tasks_dir()]
    dirs += [Path(p) for p in os.environ.get("LLAMABENCH_TASKS", "").split(os.pathsep) if p]
    for folder in extra:
        if not Path(folder).is_dir():
            raise LlamabenchError(f"--tasks-dir {folder} is not a folder; pass a folder of task .yaml/.yml files")
        dirs.append(Path(folder))
    return dirs


@dataclass
class Catalogue:
    """The tasks found, by name and alias, and the task files that could not be read, with their error and the
    names they might define (the file's stem, and its ``name`` and ``aliases`` when those still read)."""

    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    broken: dict[Path, tuple[LlamabenchError, set[str]]] = field(default_factory=dict)

    def blocking(self, name: str) -> LlamabenchError | None:
        """The error of a broken file that might define ``name``; any broken file when no task has that name."""
        for error, names in self.broken.values():
            if name in names:
                return error
        if name not in self.tasks and self.broken:
            first = next(iter(self.broken.values()))[0]
            return LlamabenchError(f"unknown task '{name}'; a task file that might define it cannot be read: {first}")
        return None

    def warn_broken(self, except_for: Sequence[Path] = ()) -> None:
        """One warning line per unreadable task file: it defines none of the tasks asked for, so the run goes on."""
        for path, (error, _) in self.broken.items():
            if path not in except_for:
                warn(f"task file {path} skipped: {error}")


def task_files(folder: Path) -> list[Path]:
    """The task files of ``folder``, in name order (none when it is not a folder: a stale LLAMABENCH_TASKS entry)."""
    if not Path(folder).is_dir():
        return []
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in TASK_FILE_SUFFIXES and p.is_file())


def scan(dirs: Sequence[Path]) -> Catalogue:
    """Every task of ``dirs`` (see :func:`discover`); a file that cannot be read is set aside in ``broken`` instead
    of stopping the others, so one broken file in a shared folder blocks only the tasks it might define."""
    catalogue = Catalogue()
    by_name = catalogue.tasks
    origin: dict[str, Path] = {}
    for folder in dirs:
        found: dict[str, tuple[TaskSpec, Path]] = {}
        for path in task_files(folder):
            try:
                spec = load_task_file(path)
            except LlamabenchError as exc:
                catalogue.broken[path] = (exc, {path.stem, *names_in_task_file(path)})
                continue
            for key in dict.fromkeys((spec.name, *spec.aliases)):
                if key in found:
                    raise LlamabenchError(
                        f"task name or alias '{key}' is defined twice, in {found[key][1]} and {path}; rename one"
                    )
                found[key] = (spec, path)
        for key, (spec, path) in found.items():
            earlier = by_name.get(key)
            if earlier is None or earlier is spec:
                continue
            if key != spec.name or key != earlier.name:
                raise LlamabenchError(
                    f"{path}: '{key}' is already the name or an alias of task {earlier.name} ({origin[key]}); "
                    "a task may replace another only under the same name: rename it or its alias"
                )
            for stale in [k for k, other in by_name.items() if other is earlier]:
                del by_name[stale]
        for key, (spec, path) in found.items():
            by_name[key], origin[key] = spec, path
    return catalogue


def discover(dirs: Sequence[Path]) -> dict[str, TaskSpec]:
    """All tasks by name and alias; every name and alias belongs to exactly one task.

    A task in a later folder replaces an earlier task of the same name, with all of that task's aliases (so
    no alias still points at the replaced definition). Any other clash, within a folder or across folders, is
    an error naming both files. A task file that cannot be read is skipped with one warning line.
    """
    catalogue = scan(dirs)
    catalogue.warn_broken()
    return catalogue.tasks


def resolve(names: Sequence[str], dirs: Sequence[Path], *, data_dir_given: bool = True) -> list[TaskSpec]:
    """The tasks named (by name or alias), in order, without duplicates. A broken task file is an error when it
    might define a name asked for (or when a name is unknown), else one warning line.

    Without a data folder (``data_dir_given`` false) an alias of a task that names a ``sample`` runs that sample
    task instead (``ppl`` is ``wikitext2-sample``), so the quick start needs no data; a task's own name always
    means its own data, and results carry the name of the task that ran, so a sample never passes for a full set.
    """
    catalogue = scan(dirs)
    known = catalogue.tasks
    for name in names:
        error = catalogue.blocking(name)
        if error is not None:
            raise error
    catalogue.warn_broken()
    specs: list[TaskSpec] = []
    for name in names:
        if name not in known:
            raise LlamabenchError(
                f"unknown task '{name}'; known tasks: {', '.join(sorted(known))} (add a YAML with --tasks-dir)"
            )
        spec = known[name]
        if not data_dir_given and name != spec.name and spec.sample is not None:
            spec = _sample_of(spec, known)
        if spec not in specs:
            specs.append(spec)
    return specs


def _sample_of(spec: TaskSpec, known: dict[str, TaskSpec]) -> TaskSpec:
    sample = known.get(spec.sample)
    if sample is None or sample.name != spec.sample:
        raise LlamabenchError(
            f"task {spec.name} names sample '{spec.sample}', which no task file defines; add that task or drop "
            "'sample' from the task file"
        )
    return sample
