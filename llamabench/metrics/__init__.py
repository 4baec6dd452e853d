"""Metric registry: every built-in metric by name."""

from __future__ import annotations

from llamabench.errors import LlamabenchError
from llamabench.metrics import choice, perplexity, rouge, squad, translation
from llamabench.metrics.base import Metric, Outcome

METRICS: dict[str, Metric] = {
    metric.name: metric for module in (squad, translation, rouge, perplexity, choice) for metric in module.METRICS
}


def get_metric(name: str) -> Metric:
    """The registered metric called ``name``; raises LlamabenchError listing the known names otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise LlamabenchError(f"unknown metric '{name}'; known metrics: {', '.join(sorted(METRICS))}") from None


__all__ = ["METRICS", "Metric", "Outcome", "get_metric"]
