"""Evaluate while a ``transformers.Trainer`` trains: every N steps and at the end, logged through the trainer.

The metrics go through ``trainer.log``, so they land in ``trainer.state.log_history`` and in every integration the
user enabled (W&B, TensorBoard, MLflow, ...) beside the training loss, as ``llamabench/<task>/<metric>``.

    trainer = Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
    trainer.add_callback(LlamabenchCallback(trainer, tasks=["ppl", "qa"], every=500, limit=200, data_dir="data"))
    trainer.train()
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import TrainerCallback

from llamabench.errors import LlamabenchError
from llamabench.records.results import RunResult
from llamabench.training.in_memory import evaluate_prepared, prepare_in_memory


class LlamabenchCallback(TrainerCallback):
    """Evaluates ``trainer``'s model on ``tasks`` every ``every`` optimizer steps and when training ends.

    ``flags`` are :func:`~llamabench.training.in_memory.evaluate_model`'s (``limit``, ``batch_size``, ``data_dir``,
    ``output_dir`` to record each run with its step, ``log_to`` to log each to trackers at the trainer's
    ``global_step``, ...). ``runs`` keeps each evaluation's result by step.

    Everything that can be checked without the model is checked here, before training starts: the tasks are
    resolved, parsed and their data loaded, the settings range-checked, the output folder and the cache opened;
    a problem is a one-line :class:`~llamabench.errors.LlamabenchError` now, not at the first evaluation hours
    into training."""

    def __init__(self, trainer, tasks: Sequence[str], *, every: int, **flags):
        if not isinstance(every, int) or every < 1:
            raise LlamabenchError(f"LlamabenchCallback: every={every!r} must be a positive whole number of steps")
        if "step" in flags:
            raise LlamabenchError("LlamabenchCallback: step is the trainer's; leave it out of the settings")
        self.model_id = flags.pop("model_id", None)
        self.evaluation = prepare_in_memory(tasks, flags, caller="LlamabenchCallback")  # tasks read once, here
        self.trainer = trainer
        self.every = every
        self.runs: dict[int, RunResult] = {}

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        # The last step is evaluated here rather than at on_train_end, where the trainer's own MLflow integration,
        # called before this callback, ends the run that --log-to mlflow logs into.
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            should_log = control.should_log
            self._evaluate(state.global_step, model, processing_class)
            control.should_log = should_log  # trainer.log cleared it: this step's loss is logged as it was due

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        try:
            if state.global_step not in self.runs:
                self._evaluate(state.global_step, model, processing_class)
        finally:
            self.evaluation.trackers.finish()

    def _evaluate(self, step: int, model, tokenizer) -> None:
        run = evaluate_prepared(self.evaluation, model, tokenizer, step=step, model_id=self.model_id)
        self.runs[step] = run
        self.trainer.log({f"llamabench/{row.task}/{row.metric}": row.value for row in run.results.itertuples()})
