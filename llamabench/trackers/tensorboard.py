"""``--log-to tensorboard``: figures as scalars at the step, settings and fingerprint as a text summary.

The log folder is ``$TENSORBOARD_LOGGING_DIR`` (the variable transformers' TensorBoard integration reads), else
``<output-dir>/tensorboard`` (``./tensorboard`` for a Python call without ``output_dir``); each tracker run is a
sub-folder named after it, so ``tensorboard --logdir`` on the folder shows one line per watch or model. TensorBoard
has no tables or files: the text summary names the run, whose folder under ``--output-dir`` holds them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from llamabench import escaping
from llamabench.records.store import TENSORBOARD_FOLDER
from llamabench.trackers.base import TrackedRun, Tracker


class TensorboardTracker(Tracker):
    def __init__(self, writer):
        self.writer = writer

    @classmethod
    def start(cls, name: str, output_dir: Path | None) -> TensorboardTracker:
        from torch.utils.tensorboard import SummaryWriter

        root = os.environ.get("TENSORBOARD_LOGGING_DIR") or Path(output_dir or ".") / TENSORBOARD_FOLDER
        stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
        return cls(SummaryWriter(log_dir=str(Path(root) / f"{escaping.safe_name(name)[:80]}-{stamp}")))

    def log_run(self, run: TrackedRun) -> None:
        for key, value in run.metrics.items():
            self.writer.add_scalar(key, value, global_step=run.step)
        lines = [f"run `{run.run_id}` of `{run.model}`", "", "| setting | value |", "|---|---|"]
        lines += [f"| {key} | {value} |" for key, value in run.params.items()]
        self.writer.add_text("llamabench/run", "\n".join(lines), global_step=run.step)
        self.writer.flush()

    def log_values(self, values: Mapping[str, float], step: int | None) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, global_step=step)
        self.writer.flush()

    def finish(self) -> None:
        self.writer.close()


TRACKER = TensorboardTracker
