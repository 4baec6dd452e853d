"""What the benchmark scripts share: where the public data is, and lm-eval request objects."""

from __future__ import annotations

import os
from pathlib import Path


def default_data_dir() -> Path:
    """``$LLAMABENCH_DATA``, else ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("LLAMABENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def instances(kind: str, arguments: list[tuple]) -> list:
    """lm-eval requests of one ``kind`` (``loglikelihood_rolling``, ``generate_until``, ...), one per tuple."""
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=args, idx=i) for i, args in enumerate(arguments)]
