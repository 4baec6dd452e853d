"""Metric registry: every metric class defined in a module of this package, by name.

Importing the package imports each of its modules, so a metric is added by writing its class in a new file
here (see ``metrics/base.py`` for the contract and a worked example).
"""

from __future__ import annotations

import importlib
import pkgutil

from llamabench.errors import LlamabenchError
from llamabench.metrics.base import REGISTRY, BinaryMetric, CorpusMetric, MeanMetric, Metric, Outcome

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

METRICS: dict[str, Metric] = REGISTRY


def get_metric(name: str) -> Metric:
    """The registered metric called ``name``; raises LlamabenchError listing the known names otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise LlamabenchError(f"unknown metric '{name}'; known metrics: {', '.join(sorted(METRICS))}") from None


__all__ = ["METRICS", "BinaryMetric", "CorpusMetric", "MeanMetric", "Metric", "Outcome", "get_metric"]
