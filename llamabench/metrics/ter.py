"""Translation edit rate through sacrebleu: the example of adding a metric (see docs/metrics.md, "Adding a metric")."""

from sacrebleu.metrics import TER

from llamabench.metrics.translation import SacrebleuMetric


class Ter(SacrebleuMetric):
    """Translation edit rate (Snover et al., 2006): the fewest word edits, shifts included, that turn the output
    into a reference, per 100 reference words; lower is better, and it can pass 100."""

    name = "ter"
    sacrebleu_class = TER
    higher_is_better = False
    scale = "edits per 100 reference words (>= 0)"
