"""Metrics from the user's own Python files (``--metrics-module FILE.py``): each file is imported once per process,
and the metric classes it defines register themselves as the built-in ones do (``metrics/base.py``)."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from llamabench.errors import LlamabenchError

_LOADED: set[Path] = set()


def load_metric_modules(paths: Sequence[Path]) -> None:
    """Import each file of ``paths`` (once per process: a second run in one process reuses its metrics).

    A file that is missing, fails to import, or defines a metric lacking a required attribute is one line naming
    the file and what to fix."""
    for given in paths:
        path = Path(given).resolve()
        if path in _LOADED:
            continue
        if not path.is_file() or path.suffix != ".py":
            raise LlamabenchError(f"--metrics-module {given} is not a Python file; give the path of a .py file")
        name = f"llamabench_user_metrics_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except LlamabenchError as exc:
            del sys.modules[name]
            raise LlamabenchError(f"--metrics-module {given}: {exc}") from None
        except Exception as exc:  # the user's code: any error it raises is theirs to fix, in one line
            del sys.modules[name]
            raise LlamabenchError(
                f"--metrics-module {given} failed to import ({type(exc).__name__}: {exc}); fix that file"
            ) from exc
        _LOADED.add(path)
