"""Find task YAML files (built-in ``tasks/`` plus user folders) and resolve names and aliases."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from llamabench.errors import LlamabenchError
from llamabench.tasks.spec import TaskSpec, load_task_file


def builtin_tasks_dir() -> Path:
    """The repository's ``tasks/`` folder (installed as ``llamabench/builtin_tasks`` in a wheel)."""
    here = Path(__file__).resolve().parents[1]
    for candidate in (here.parent / "tasks", here / "builtin_tasks"):
        if candidate.is_dir():
            return candidate
    raise LlamabenchError("built-in tasks folder not found; reinstall llamabench")


def task_dirs(extra: Sequence[Path] = ()) -> list[Path]:
    """Folders searched for tasks, later ones overriding earlier: built-in, $LLAMABENCH_TASKS, --tasks-dir."""
    dirs = [builtin_tasks_dir()]
    dirs += [Path(p) for p in os.environ.get("LLAMABENCH_TASKS", "").split(os.pathsep) if p]
    for folder in extra:
        if not Path(folder).is_dir():
            raise LlamabenchError(f"--tasks-dir {folder} is not a folder; pass a folder of task .yaml files")
        dirs.append(Path(folder))
    return dirs


def discover(dirs: Sequence[Path]) -> dict[str, TaskSpec]:
    """All tasks by name and alias; every name and alias belongs to exactly one task.

    A task in a later folder replaces an earlier task of the same name, with all of that task's aliases (so
    no alias still points at the replaced definition). Any other clash, within a folder or across folders, is
    an error naming both files.
    """
    by_name: dict[str, TaskSpec] = {}
    origin: dict[str, Path] = {}
    for folder in dirs:
        found: dict[str, tuple[TaskSpec, Path]] = {}
        for path in sorted(Path(folder).glob("*.yaml")):
            spec = load_task_file(path)
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
    return by_name


def resolve(names: Sequence[str], dirs: Sequence[Path]) -> list[TaskSpec]:
    """The tasks named (by name or alias), in order, without duplicates."""
    known = discover(dirs)
    specs: list[TaskSpec] = []
    for name in names:
        if name not in known:
            raise LlamabenchError(
                f"unknown task '{name}'; known tasks: {', '.join(sorted(known))} (add a YAML with --tasks-dir)"
            )
        if known[name] not in specs:
            specs.append(known[name])
    return specs
